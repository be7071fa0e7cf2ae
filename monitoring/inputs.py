"""What the monitors read: the watched model, and current data in the model's input schema.

Current data is a CSV/Parquet file or the service's prediction log since a date. Rows are checked
against the model's feature schema; rows without predictions are scored with the model, so drift of
the predicted probability and of the tier mix can always be tested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from churnguard.artifact import ContractError, ModelArtifact
from churnguard.config import UsageError
from churnguard.schema import ID_COLUMN, FeatureSchema
from churnguard.tracking import ResolvedModel, resolve_model

log = logging.getLogger(__name__)

PREDICTION = "prediction"  # the reference sample's name for the calibrated probability
TIER = "alert_tier"
MISSING_CATEGORY = "__missing__"  # how FeatureSchema.coerce spells a missing category for CatBoost
# Names the service's prediction log may use for the same things.
PREDICTION_ALIASES = ("churn_probability", "probability")
TIME_ALIASES = ("scored_at", "timestamp", "logged_at", "created_at", "prediction_time", "observation_date")


class MonitoringInputError(UsageError):
    """Current data or outcomes that cannot be monitored; the message names the file and columns."""


@dataclass
class MonitoredModel:
    artifact: ModelArtifact
    resolved: ResolvedModel
    run_id: str | None  # the MLflow run that produced the model, when known

    @property
    def name(self) -> str:
        return self.resolved.name or self.artifact.contract.model_name

    @property
    def version(self) -> str:
        return self.resolved.version


def load_model(model_uri: str) -> MonitoredModel:
    """Resolve and load the watched model; a model that cannot be had is an input error, not a crash."""
    from mlflow.exceptions import MlflowException

    try:
        resolved = resolve_model(model_uri)
        artifact = ModelArtifact.load(resolved.local_dir)
        return MonitoredModel(artifact, resolved, source_run_id(resolved))
    except (MlflowException, ContractError, OSError) as exc:
        raise MonitoringInputError(f"cannot load model '{model_uri}': {exc}") from exc


def source_run_id(resolved: ResolvedModel) -> str | None:
    """The run behind a registered version or a `runs:/` URI; None for a local folder."""
    if resolved.uri.startswith("runs:/"):
        return resolved.uri[len("runs:/") :].split("/", 1)[0] or None
    if resolved.name is None:
        return None
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(resolved.name, resolved.version).run_id or None


def read_frame(path: Path, categorical: list[str] | None = None) -> pd.DataFrame:
    """CSV or Parquet; in CSV, categorical columns and ids are read as text (keeps '0'/'1' codes)."""
    path = Path(path)
    if not path.is_file():
        raise MonitoringInputError(f"{path}: file not found")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    text_columns = {name: str for name in [*(categorical or []), ID_COLUMN]}
    try:
        return pd.read_csv(path, dtype=text_columns, low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MonitoringInputError(f"{path}: cannot be read as CSV: {exc}") from None


def read_logged_predictions(since: datetime | None) -> pd.DataFrame:
    """Logged inputs and outputs from the service's prediction log (churnguard.prediction_log)."""
    try:
        from churnguard.prediction_log import read_predictions
    except ImportError as exc:
        raise MonitoringInputError(
            "the prediction log is not available in this build (churnguard.prediction_log); "
            "pass --current FILE instead"
        ) from exc
    frame = read_predictions(since)
    log.info("read %s logged predictions%s", f"{len(frame):,}", f" since {since:%Y-%m-%d}" if since else "")
    return frame


def time_column(frame: pd.DataFrame) -> str | None:
    return next((name for name in TIME_ALIASES if name in frame.columns), None)


def to_schema(frame: pd.DataFrame, schema: FeatureSchema, source: str) -> pd.DataFrame:
    """Feature columns typed as the schema says, missing values kept as missing (they are monitored).

    Extra columns pass through untouched; `prediction`/`alert_tier` are taken from their aliases.
    """
    absent = [name for name in schema.names if name not in frame.columns]
    if absent:
        raise MonitoringInputError(
            f"{source}: missing {len(absent)} feature column(s) of the model's schema, e.g. {absent[:8]}"
        )
    out = frame.copy()
    for spec in schema.features:
        column = out[spec.name]
        if spec.categorical:
            text = column.astype(object).astype(str)
            missing = column.isna() | (text == MISSING_CATEGORY)
            out[spec.name] = text.where(~missing, np.nan).astype(object)
        else:
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() & column.notna()
            if bad.any():
                examples = column[bad].astype(str).unique()[:5].tolist()
                raise MonitoringInputError(
                    f"{source}: column '{spec.name}' should be numeric, found text in {int(bad.sum())} rows "
                    f"(e.g. {examples})"
                )
            out[spec.name] = numbers.astype("float64")
    if PREDICTION not in out.columns:
        alias = next((name for name in PREDICTION_ALIASES if name in out.columns), None)
        if alias:
            out[PREDICTION] = pd.to_numeric(out[alias], errors="coerce")
    return out


def ensure_predictions(
    frame: pd.DataFrame, artifact: ModelArtifact, model_version: str = "monitoring"
) -> tuple[pd.DataFrame, int]:
    """Score rows that lack a probability; returns the frame and how many rows were scored.

    Tiers are always recomputed with the watched model's thresholds, so the tier mix compares like with like.
    """
    frame = frame.copy()
    needs = (
        frame[PREDICTION].isna()
        if PREDICTION in frame.columns
        else pd.Series(True, index=frame.index, dtype=bool)
    )
    if needs.any():
        frame.loc[needs, PREDICTION] = score(frame.loc[needs], artifact, model_version)
    frame[PREDICTION] = frame[PREDICTION].astype("float64")
    frame[TIER] = artifact.tiers(frame[PREDICTION].to_numpy()).astype(object)
    return frame, int(needs.sum())


def score(rows: pd.DataFrame, artifact: ModelArtifact, model_version: str = "monitoring") -> np.ndarray:
    """Calibrated probabilities the way the service computes them (churnguard.predict).

    Rows the service would refuse (say, a value far outside the training range) still get a probability
    straight from the artifact: drift checks must see them, not drop them.
    """
    names = artifact.schema.names
    try:
        from churnguard.predict import Predictor
    except ImportError:  # a build without the service's scorer
        return artifact.probability(rows[names])
    inputs = rows[names].copy()
    inputs.insert(0, ID_COLUMN, [f"row-{i}" for i in range(len(rows))])
    predictor = Predictor(artifact, model_version)
    checked = predictor.rules.check_frame(inputs, allow_extra=True)
    probability = np.empty(len(rows), dtype=float)
    if checked.valid.any():
        probability[checked.valid] = predictor.score_checked(checked, explain=False).probability
    refused = ~checked.valid
    if refused.any():
        log.info(
            "%s rows fail the service's input checks; scored directly with the model", int(refused.sum())
        )
        probability[refused] = artifact.probability(rows.loc[refused, names])
    return probability


def cap_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> tuple[pd.DataFrame, bool]:
    """A uniform random sample of at most `max_rows` rows; True when it had to sample."""
    if len(frame) <= max_rows:
        return frame, False
    return frame.sample(n=max_rows, random_state=seed), True
