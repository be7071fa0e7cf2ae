"""The MLflow "models from code" definition of a churnguard model: no pickle in the registry.

The lab logs this file with `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"churnguard":
<artifact folder>})`. MLflow runs the file to get the model object (`set_model` below); `load_context`
loads the checked artifact, and `predict` returns the calibrated churn probability. The service does
not go through pyfunc: it downloads the folder and calls `ModelArtifact.load` directly.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from churnguard.artifact import ARTIFACT_DIR, ModelArtifact


class ChurnModel(PythonModel):
    """Calibrated churn probability for each row of a frame holding the schema's feature columns."""

    def __init__(self) -> None:
        self.artifact: ModelArtifact | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.artifact = ModelArtifact.load(Path(context.artifacts[ARTIFACT_DIR]))

    # The DataFrame hint keeps MLflow from inferring a schema from hints; the lab logs an explicit signature.
    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params=None):
        if self.artifact is None:
            self.load_context(context)
        return self.artifact.probability(pd.DataFrame(model_input))


mlflow.models.set_model(ChurnModel())
