"""Shared fixtures. Lab fixtures (`lab_*`): a real MLflow store and a real, small Optuna search."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# A search small enough for tests on two shared cores, still a real TPE study with pruning and
# early stopping, a real out-of-fold calibration and a real registered model.
LAB_FAST_SEARCH = {
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__LOW": "40",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__HIGH": "120",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HIGH": "5",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__LEARNING_RATE__LOW": "0.05",
    "CHURNGUARD_TRAINING__SEARCH__STARTUP_TRIALS": "2",
    "CHURNGUARD_TRAINING__SEARCH__EARLY_STOPPING_ROUNDS": "20",
    "CHURNGUARD_TRAINING__SEARCH__PRUNING__STARTUP_TRIALS": "1",
    "CHURNGUARD_TRAINING__SEARCH__PRUNING__WARMUP_ITERATIONS": "20",
    "CHURNGUARD_TRAINING__SEARCH__FOLDS": "3",
    "CHURNGUARD_TRAINING__EVALUATION__SHAP_ROWS": "200",
    "CHURNGUARD_TRAINING__EVALUATION__REFERENCE_ROWS": "500",
}


@pytest.fixture(scope="session")
def lab_empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables created once: creating them takes seconds, copying does not."""
    import mlflow

    path = tmp_path_factory.mktemp("lab-mlflow-template") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def lab_environment(patch: pytest.MonkeyPatch, state: Path, template: Path) -> dict[str, str]:
    """Point churnguard and MLflow at a fresh store in `state`, with the fast search."""
    state.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, state / "mlflow.db")
    environment = {
        "CHURNGUARD_STATE_DIR": str(state),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "MLFLOW_REGISTRY_URI": f"sqlite:///{state / 'mlflow.db'}",
        "CHURNGUARD_ARTIFACT_ROOT": (state / "mlartifacts").as_uri(),
        **LAB_FAST_SEARCH,
    }
    for name, value in environment.items():
        patch.setenv(name, value)
    from churnguard.tracking import configure_mlflow

    configure_mlflow()  # an earlier test may have pointed this process's MLflow at its own store
    return environment


@pytest.fixture
def lab_store(tmp_path: Path, lab_empty_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh MLflow store and state folder for one test; returns the environment it set."""
    return lab_environment(monkeypatch, tmp_path / "state", lab_empty_mlflow_db)


@pytest.fixture(scope="module")
def lab_module_store(
    tmp_path_factory: pytest.TempPathFactory, lab_empty_mlflow_db: Path
) -> Iterator[dict[str, str]]:
    """One store shared by a module's tests (they build on each other's registered models)."""
    with pytest.MonkeyPatch.context() as patch:
        yield lab_environment(patch, tmp_path_factory.mktemp("lab-state"), lab_empty_mlflow_db)
