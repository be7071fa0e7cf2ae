"""Logging the final model to MLflow without pickle ("models from code") and registering it.

The registered version holds `artifacts/churnguard/` (the checked artifact folder: model.cbm,
contract.json, reference.parquet, model_card.md) and `pyfunc_model.py`, which MLflow executes to build
the pyfunc. `churnguard.tracking.resolve_model` + `ModelArtifact.load` read the folder without running
any of it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.models import infer_signature

from churnguard.artifact import ARTIFACT_DIR, ModelArtifact
from churnguard.settings import PROJECT_ROOT
from churnguard.tracking import CHALLENGER

log = logging.getLogger(__name__)

PYFUNC_MODEL_FILE = PROJECT_ROOT / "churnguard" / "pyfunc_model.py"
# Pinned explicitly: MLflow's own inference of requirements loads the model in a subprocess (slow).
# churnguard itself is not on an index; the pyfunc needs it installed (the service image has it).
SERVING_PACKAGES = ("mlflow", "catboost", "pandas", "numpy", "pyarrow", "pydantic", "pyyaml")


def pip_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in SERVING_PACKAGES]


def log_and_register(
    artifact: ModelArtifact,
    card: str,
    model_name: str,
    tags: dict[str, str],
) -> str:
    """Log the artifact as the active run's model `model`, register it, alias it `challenger` and tag it.

    Returns the registered version. Must run inside an active MLflow run.
    """
    sample = artifact.schema.coerce(artifact.reference.head(5))
    signature = infer_signature(sample, artifact.probability(sample))
    with tempfile.TemporaryDirectory(prefix="churnguard-model-") as scratch:
        # MLflow copies an artifact folder to artifacts/<folder name>, so the folder is named for the key.
        folder = artifact.save(Path(scratch) / ARTIFACT_DIR, card=card)
        with warnings.catch_warnings():
            # The explicit signature replaces the type hints MLflow suggests for `predict`.
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_MODEL_FILE),
                artifacts={ARTIFACT_DIR: str(folder)},
                pip_requirements=pip_requirements(),
                signature=signature,
                input_example=sample,
                registered_model_name=model_name,
            )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=card)
    log.info("registered %s version %s as '%s'", model_name, version, CHALLENGER)
    return version
