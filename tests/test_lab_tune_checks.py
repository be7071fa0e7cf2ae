"""`tune` refuses to pretend (issue 16): no completed trial exits 2 with the reason, labels of one class
stop it before any trial, a model worse than a coin on its test rows is flagged in the log, the run
tags, the model version and its card, and the data report is in the log and in the parent run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from churnguard.cli import main
from training.config import load_training_config
from training.splits import snapshot_split
from training.tune import DATA_REPORT_FILE, QUALITY_TAG, run_tune

ROWS = 400


def coin_snapshot(folder: Path, positive: str = "yes") -> Path:
    """A snapshot whose signal flips on exactly the rows the configured split holds out for test:
    the model learns `usage_drop` well and ranks the test rows backwards."""
    rng = np.random.default_rng(3)
    label = (rng.random(ROWS) < 0.3).astype(int)
    frame = pd.DataFrame({"customer_id": [f"C{i:04d}" for i in range(ROWS)], "label": label})
    split = load_training_config().split
    test = snapshot_split(frame, split.snapshot, split.seed).test
    signal = np.where(test, 1 - label, label)
    frame["usage_drop"] = signal * 2.0 + rng.normal(0, 0.6, ROWS)
    frame["seats"] = rng.integers(1, 50, ROWS)
    frame["churned"] = np.where(label == 1, "yes", "no")
    frame.drop(columns="label").to_csv(folder / "coin.csv", index=False)
    path = folder / "coin.yaml"
    path.write_text(
        "kind: snapshot\nname: coin\nsource: {path: coin.csv}\nid_column: customer_id\n"
        f"label: {{column: churned, positive: '{positive}'}}\n"
    )
    return path


@pytest.mark.slow
def test_a_model_worse_than_a_coin_is_registered_with_loud_warnings(
    lab_store: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = run_tune(
        str(coin_snapshot(tmp_path)), trials=2, timeout=None, storage=None, study="coin", seed=1
    )
    assert result.finalized and result.test_metrics["test_roc_auc"] < 0.5
    (warning,) = result.warnings
    assert "below 0.5" in warning and f"WARNING: {warning}" in result.summary()
    assert any(r.levelname == "WARNING" and "below 0.5" in r.getMessage() for r in caplog.records)

    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[QUALITY_TAG] == warning
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.tags[QUALITY_TAG] == warning
    assert version.description.startswith("# churn-coin\n\n## WARNING\n- **test ROC-AUC")
    card = Path(client.download_artifacts(result.parent_run_id, "model_card.md", str(tmp_path))).read_text()
    assert "## WARNING" in card

    # The data report: in the parent run and in the log.
    report = Path(
        client.download_artifacts(result.parent_run_id, DATA_REPORT_FILE, str(tmp_path))
    ).read_text()
    churners = int((pd.read_csv(tmp_path / "coin.csv")["churned"] == "yes").sum())
    assert f"labels: {ROWS} rows, {churners} churners" in report
    assert any(f"data: labels: {ROWS} rows" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_every_trial_failing_exits_2_with_the_first_failure(
    lab_store: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Deeper trees than CatBoost allows: every trial fails inside CatBoost, as it did on one class.
    monkeypatch.setenv("CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__LOW", "17")
    monkeypatch.setenv("CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HIGH", "17")
    path = coin_snapshot(tmp_path)
    assert main(["tune", "--dataset", str(path), "--trials", "2", "--study", "failing"]) == 2
    error = capsys.readouterr().err
    assert "study 'failing': no completed trial, so no model was fitted or registered" in error
    assert "2 trials finished: 2 failed, 0 pruned; the first failure: CatBoost:" in error
    assert not MlflowClient().search_registered_models()  # nothing registered


def test_no_trial_before_the_timeout_exits_2(lab_store: dict[str, str], tmp_path: Path, capsys) -> None:
    path = coin_snapshot(tmp_path)
    assert main(["tune", "--dataset", str(path), "--timeout", "0.000001", "--study", "late"]) == 2
    assert "no trial ran" in capsys.readouterr().err


def test_labels_of_one_class_stop_tune_before_any_trial(
    lab_store: dict[str, str], tmp_path: Path, capsys
) -> None:
    path = coin_snapshot(tmp_path, positive="Yes")  # the file says "yes": every label would be 0
    assert main(["tune", "--dataset", str(path), "--trials", "2"]) == 2
    error = capsys.readouterr().err
    assert "column 'churned': a single class, every label is 0: no churner" in error
    assert "`label.positive` is 'Yes' and the column holds 'no' (" in error
