"""MLflow wiring shared by the lab, the service and the monitors: where the store is, and how a
model URI becomes a checked `ModelArtifact`.

Default store: SQLite plus a local artifact folder, both in the git-ignored state folder. Any
`MLFLOW_TRACKING_URI` works instead. The artifact location is always set explicitly, because MLflow
with a SQLite store otherwise writes artifacts to `./mlruns` under whatever folder the process runs in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from churnguard.settings import state_dir

CHAMPION = "champion"
CHALLENGER = "challenger"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def artifact_root() -> str:
    """Where new experiments put artifacts (`CHURNGUARD_ARTIFACT_ROOT`, e.g. s3://bucket/churnguard)."""
    return os.environ.get("CHURNGUARD_ARTIFACT_ROOT") or (state_dir() / "mlartifacts").as_uri()


def configure_mlflow() -> str:
    """Point MLflow at the store; returns the tracking URI. Call once per process before using MLflow."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return uri


def experiment_id(name: str) -> str:
    """Get or create an experiment whose artifacts go to `artifact_root()/<name>`."""
    import mlflow

    configure_mlflow()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"{artifact_root().rstrip('/')}/{name}")


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # what was asked for
    local_dir: Path  # the downloaded artifact folder
    name: str | None  # registered model name, if it came from the registry
    version: str  # registry version, or "local" for a path


def resolve_model(uri: str, cache_dir: Path | None = None) -> ResolvedModel:
    """Download `models:/name@alias`, `models:/name/3`, `runs:/...` or take a local folder as is.

    Only files are fetched; nothing from the registry is executed or unpickled.
    """
    local = Path(uri)
    if "://" not in uri and ":/" not in uri[:10]:
        return ResolvedModel(uri, local.resolve(), None, "local")
    import mlflow
    from mlflow import MlflowClient

    configure_mlflow()
    name, version = None, "unknown"
    if uri.startswith("models:/"):
        ref = uri[len("models:/") :]
        client = MlflowClient()
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = str(client.get_model_version_by_alias(name, alias).version)
        else:
            name, version = ref.rsplit("/", 1)
        uri_to_fetch = f"models:/{name}/{version}"  # pin: the alias may move while we download
    else:
        uri_to_fetch = uri
    target = (cache_dir or state_dir() / "model-cache") / (f"{name}-v{version}" if name else "run")
    target.mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(artifact_uri=uri_to_fetch, dst_path=str(target))
    return ResolvedModel(uri, Path(path), name, version)
