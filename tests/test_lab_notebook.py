"""notebooks/compare_runs.ipynb runs headless against a small real store made here."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from churnguard.settings import PROJECT_ROOT
from training.promote import run_promote
from training.tune import run_tune

pytestmark = pytest.mark.slow


def outputs_of(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        texts.extend(str(value) for value in output.get("data", {}).values())
    return "\n".join(texts)


def test_compare_runs_notebook_executes(lab_store: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_tune("telco", trials=3, timeout=None, storage=None, study="nb-first", seed=2)
    run_tune("telco", trials=2, timeout=None, storage=None, study="nb-second", seed=4)
    run_promote(model_name="churn-telco", dataset="telco")
    monkeypatch.setenv("CHURNGUARD_NOTEBOOK_DATASET", "telco")  # the kernel inherits the environment

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(PROJECT_ROOT)}}
    ).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert lab_store["MLFLOW_TRACKING_URI"] in outputs_of(code[0])
    assert "nb-first" in outputs_of(code[1]) and "nb-second" in outputs_of(code[1])
    assert "5 trials in 2 studies" in outputs_of(code[2])
    assert any("image/png" in output.get("data", {}) for output in code[3]["outputs"])
    assert "learning_rate" in outputs_of(code[4]) and "validation_auc" in outputs_of(code[4])
    side_by_side = outputs_of(code[5])
    assert "test_roc_auc" in side_by_side and "nb-first" in side_by_side
    # pandas shows six decimals without trailing zeros (0.033660 as 0.03366)
    assert f"{first.test_metrics['test_ece']:.6f}".rstrip("0") in side_by_side
    assert "promoted" in outputs_of(code[6])
