"""MLflow bookkeeping for the lab: the study's parent run, a nested run per trial, figures, provenance."""

from __future__ import annotations

import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from churnguard.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

LIBRARIES = (
    "catboost",
    "optuna",
    "optuna-integration",
    "mlflow",
    "scikit-learn",
    "pandas",
    "numpy",
    "pyarrow",
)
KIND_TAG = "churnguard.kind"  # study | trial | promotion: lets the notebook and the gate filter runs
STUDY_TAG = "churnguard.study"


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """HEAD of the checkout, or "unknown" outside a git repository (e.g. in the container image)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def param_value(value: Any) -> str:
    return "None" if value is None else str(value)


def create_parent_run(
    client: MlflowClient,
    experiment_id: str,
    study_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> str:
    run = client.create_run(
        experiment_id, run_name=study_name, tags={KIND_TAG: "study", STUDY_TAG: study_name, **tags}
    )
    client.log_batch(run.info.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
    return run.info.run_id


def start_trial_run(
    client: MlflowClient, experiment_id: str, parent_run_id: str, study_name: str, number: int
) -> str:
    run = client.create_run(
        experiment_id,
        run_name=f"trial-{number:03d}",
        tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            KIND_TAG: "trial",
            STUDY_TAG: study_name,
            "trial_number": str(number),
        },
    )
    return run.info.run_id


def finish_trial_run(
    client: MlflowClient,
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    state: str,
) -> None:
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[Param(k, param_value(v)) for k, v in params.items()],
        tags=[RunTag("state", state), RunTag("pruned", str(state == "PRUNED").lower())],
    )
    client.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")


def log_figure(client: MlflowClient, run_id: str, figure: Figure, name: str) -> None:
    client.log_figure(run_id, figure, f"plots/{name}.png")


def rename_run(client: MlflowClient, run_id: str, name: str) -> None:
    client.set_tag(run_id, MLFLOW_RUN_NAME, name)


def active_run(run_id: str) -> mlflow.ActiveRun:
    """Resume a run as the active one (the pyfunc model logging needs an active run)."""
    return mlflow.start_run(run_id=run_id)
