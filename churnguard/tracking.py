"""MLflow wiring shared by the lab, the service and the monitors: where the store is, and how a
model URI becomes a checked `ModelArtifact`.

Default store: SQLite plus a local artifact folder, both in the git-ignored state folder. Any
`MLFLOW_TRACKING_URI` works instead. With a database store the artifact location is set explicitly,
because MLflow otherwise writes artifacts to `./mlruns` under whatever folder the process runs in.
With a tracking server (`http(s)://`) the server decides (`mlflow server --artifacts-destination`):
a folder on this machine would be out of reach of the machines that serve the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from churnguard.settings import state_dir

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Where new experiments put artifacts (`CHURNGUARD_ARTIFACT_ROOT`, e.g. s3://bucket/churnguard);
    None for a tracking server, whose own artifact store (proxied as mlflow-artifacts:/) is used."""
    given = os.environ.get("CHURNGUARD_ARTIFACT_ROOT")
    if given:
        return given
    if tracking_uri().startswith(("http://", "https://")):
        return None
    return (state_dir() / "mlartifacts").as_uri()


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
    from mlflow.exceptions import MlflowException

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    root = artifact_root()
    try:
        return mlflow.create_experiment(
            name, artifact_location=f"{root.rstrip('/')}/{name}" if root is not None else None
        )
    except MlflowException:
        # Another worker of a distributed study created it between our lookup and our create.
        raced = mlflow.get_experiment_by_name(name)
        if raced is None:
            raise
        return raced.experiment_id


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


# ---------------------------------------------------------------- the registry unreachable: the last model


class RegistryUnavailable(RuntimeError):
    """The model could not be fetched and no usable cached copy was allowed or found."""


def registry_errors() -> tuple[type[BaseException], ...]:
    """What a registry that is down, locked or unreachable raises: MLflow's own errors, the network's,
    and SQLAlchemy's (a SQLite or PostgreSQL store fails with those before MLflow wraps them)."""
    from mlflow.exceptions import MlflowException

    errors: list[type[BaseException]] = [MlflowException, OSError]  # requests' errors are OSErrors
    try:
        from sqlalchemy.exc import SQLAlchemyError

        errors.append(SQLAlchemyError)
    except ImportError:  # pragma: no cover - sqlalchemy comes with mlflow
        pass
    return tuple(errors)


def _definitive(exc: BaseException) -> bool:
    """The registry answered, and the answer is no (no such model, version or alias): not a fault
    that a cached copy should paper over."""
    if isinstance(exc, ValueError):  # a malformed URI
        return True
    code = getattr(exc, "error_code", None)
    return code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"}


def _pointer_path(uri: str) -> Path:
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return state_dir() / "model-cache" / "last-served" / f"{digest}.json"


def remember_model(resolved: ResolvedModel) -> None:
    """Record that `resolved.uri` was last served from `resolved.local_dir` (for `serve_cached`)."""
    if resolved.version == "local":
        return
    pointer = _pointer_path(resolved.uri)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "uri": resolved.uri,
        "local_dir": str(resolved.local_dir),
        "name": resolved.name,
        "version": resolved.version,
        "tracking_uri": tracking_uri(),
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    partial = pointer.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(pointer)  # atomic: a reader never sees half a pointer


def cached_model(uri: str) -> tuple[ResolvedModel, str] | None:
    """The model last served for `uri` on this host, and when it was fetched; None when there is none
    or its folder is gone."""
    pointer = _pointer_path(uri)
    try:
        record = json.loads(pointer.read_text())
        local_dir = Path(record["local_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("uri") != uri or not local_dir.is_dir():
        return None
    resolved = ResolvedModel(uri, local_dir, record.get("name"), str(record["version"]))
    return resolved, str(record["fetched_at"])


def resolve_model_for_serving(uri: str, serve_cached: bool = False) -> ResolvedModel:
    """`resolve_model`, remembered for next time; when the registry is unreachable, the last model
    served for this URI if `serve_cached`, else RegistryUnavailable saying why."""
    try:
        resolved = resolve_model(uri)
    except (*registry_errors(), ValueError) as exc:
        reason = f"cannot fetch model {uri} from the registry at {tracking_uri()}: {_first_line(exc)}"
        if not serve_cached or _definitive(exc):
            hint = "" if serve_cached else " (model.on_registry_error: serve_cached serves the last model)"
            raise RegistryUnavailable(reason + hint) from exc
        cached = cached_model(uri)
        if cached is None:
            raise RegistryUnavailable(f"{reason}; and no cached copy of {uri} on this host") from exc
        resolved, fetched_at = cached
        log.warning(
            "%s; serving the cached version %s fetched at %s (model.on_registry_error: serve_cached)",
            reason,
            resolved.version,
            fetched_at,
        )
        return resolved
    remember_model(resolved)
    return resolved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
