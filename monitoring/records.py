"""Where monitoring results are kept: MLflow (next to the model they judge) and an Evidently workspace
(so `evidently ui --workspace <state>/evidently` shows drift over time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from churnguard.settings import state_dir
from churnguard.tracking import configure_mlflow, experiment_id
from monitoring.html import model_label

log = logging.getLogger(__name__)


def workspace_dir(folder: str) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else state_dir() / path


def log_to_mlflow(
    kind: str,
    *,
    run_id: str | None,
    experiment: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Mapping[str, Path],
    artifact_path: str,
) -> str:
    """Log a monitoring result under the model's own run when known, else in a tagged monitoring run.

    Metrics are logged with the wall-clock step, so repeated checks build a history on the same run.
    Returns the run id used.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    configure_mlflow()
    step = int(time.time())
    finite = {key: float(value) for key, value in metrics.items() if value is not None and value == value}
    run_kwargs: dict[str, object] = {}
    if run_id:
        try:
            mlflow.MlflowClient().get_run(run_id)
            run_kwargs = {"run_id": run_id}
        except MlflowException:
            log.warning("model run %s not found; logging %s to a monitoring run instead", run_id, kind)
    if not run_kwargs:
        run_kwargs = {
            "experiment_id": experiment_id(experiment),
            "run_name": f"{kind} {model_label(tags.get('model_name', ''), tags.get('model_version', ''))}",
            "tags": {"churnguard.kind": kind, **tags},
        }
    with mlflow.start_run(**run_kwargs) as run:  # type: ignore[arg-type]
        if "run_id" in run_kwargs:
            mlflow.set_tags({f"monitoring.{kind}.{key}": value for key, value in tags.items()})
        mlflow.log_metrics({f"{kind}.{key}": value for key, value in finite.items()}, step=step)
        for path in files.values():
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=artifact_path)
        used = run.info.run_id
    log.info("logged %s to MLflow run %s (artifacts under %s)", kind, used, artifact_path)
    return used


def add_to_workspace(
    folder: str,
    project_name: str,
    description: str,
    snapshot,
    build_dashboard: Callable[[object], None] | None = None,
) -> str:
    """Add an Evidently snapshot to a local workspace project, creating the project on first use."""
    from evidently.ui.workspace import Workspace

    path = workspace_dir(folder)
    path.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(path))
    found = [project for project in workspace.search_project(project_name) if project.name == project_name]
    if found:
        project = found[0]
    else:
        project = workspace.create_project(project_name, description=description)
        if build_dashboard is not None:
            build_dashboard(project)
            project.save()
    ref = workspace.add_run(project.id, snapshot)
    log.info("added the snapshot to Evidently workspace %s, project '%s'", path, project_name)
    return str(ref.id)
