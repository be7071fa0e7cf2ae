"""The model artifact contract (DESIGN.md): a folder that holds everything needed to score.

    model.cbm          the CatBoost model in its native format (never a pickle)
    contract.json      feature schema, calibration map, tier thresholds and their policy, health
                       mapping, training window, test metrics, library versions, code version and
                       the dataset config hash
    reference.parquet  a sample of training inputs with their predictions, the reference for drift
    model_card.md      a short human summary

The lab writes it into the registered MLflow model; the service and the monitors load it with
`ModelArtifact.load`, which checks the contract and refuses, with a clear message, what it cannot serve.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier
from pydantic import BaseModel, ConfigDict, Field, model_validator

from churnguard.config import UsageError
from churnguard.schema import FeatureSchema
from churnguard.scoring import HEALTH_AT_HIGH, HEALTH_AT_MEDIUM, TierThresholds, health_score

ARTIFACT_VERSION = 1
MODEL_FILE = "model.cbm"
CONTRACT_FILE = "contract.json"
REFERENCE_FILE = "reference.parquet"
CARD_FILE = "model_card.md"
ARTIFACT_DIR = "churnguard"  # the folder's name inside a logged MLflow model


class ContractError(UsageError):
    """A model artifact that cannot be served; the message says what is wrong."""


class Calibration(BaseModel):
    """Maps CatBoost's raw probability to a calibrated one.

    `isotonic`: a monotone step map fitted on held-out data, applied by linear interpolation
    between its knots. `platt`: sigmoid(a * logit(p) + b). `identity`: no change.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["isotonic", "platt", "identity"]
    x: list[float] = []
    y: list[float] = []
    a: float = 1.0
    b: float = 0.0

    @model_validator(mode="after")
    def _well_formed(self) -> Calibration:
        if self.method == "isotonic":
            if len(self.x) < 2 or len(self.x) != len(self.y):
                raise ValueError("isotonic calibration needs matching x and y knots (at least 2)")
            if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
                raise ValueError("isotonic calibration knots must be non-decreasing")
        return self

    def apply(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            calibrated = np.interp(raw, self.x, self.y)
        elif self.method == "platt":
            clipped = np.clip(raw, 1e-12, 1 - 1e-12)
            calibrated = 1.0 / (1.0 + np.exp(-(self.a * np.log(clipped / (1 - clipped)) + self.b)))
        else:
            calibrated = raw
        return np.clip(calibrated, 0.0, 1.0)


class HealthMapping(BaseModel):
    """Documents the health-score map stored with the model (see churnguard.scoring)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["piecewise_linear"] = "piecewise_linear"
    anchors: list[tuple[float, int]] = Field(description="(probability, health) points, decreasing")
    description: str = (
        "health = round(interp(p, [0, medium, high, 1], [100, 60, 30, 0])); "
        "high tier <=> health < 30, medium <=> 30-59, low <=> >= 60"
    )

    @classmethod
    def for_thresholds(cls, thresholds: TierThresholds) -> HealthMapping:
        return cls(
            anchors=[
                (0.0, 100),
                (thresholds.medium, HEALTH_AT_MEDIUM),
                (thresholds.high, HEALTH_AT_HIGH),
                (1.0, 0),
            ]
        )


class ModelContract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact_version: int = ARTIFACT_VERSION
    model_name: str
    dataset: str
    dataset_kind: Literal["snapshot", "events"]
    dataset_hash: str
    horizon_days: int | None = None
    schema_: FeatureSchema = Field(alias="schema")
    calibration: Calibration
    thresholds: TierThresholds
    health: HealthMapping
    training_window: dict[str, str | None] = {}
    metrics: dict[str, float] = {}
    params: dict[str, float | int | str | bool | None] = {}
    versions: dict[str, str] = {}
    code_version: str = "unknown"
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def feature_schema(self) -> FeatureSchema:
        return self.schema_


class ModelArtifact:
    """A loaded, checked model: scores frames in the schema's columns."""

    def __init__(self, contract: ModelContract, model: CatBoostClassifier, reference: pd.DataFrame) -> None:
        self.contract = contract
        self.model = model
        self.reference = reference

    @property
    def schema(self) -> FeatureSchema:
        return self.contract.feature_schema

    def raw_probability(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self.schema.coerce(frame))[:, 1]

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return self.contract.calibration.apply(self.raw_probability(frame))

    def health(self, probability: np.ndarray) -> np.ndarray:
        return health_score(probability, self.contract.thresholds)

    def tiers(self, probability: np.ndarray) -> np.ndarray:
        return self.contract.thresholds.assign(probability)

    # ------------------------------------------------------------------------------------------ files

    def save(self, directory: Path, card: str | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_model(str(directory / MODEL_FILE), format="cbm")
        (directory / CONTRACT_FILE).write_text(self.contract.model_dump_json(by_alias=True, indent=2))
        self.reference.to_parquet(directory / REFERENCE_FILE, index=False)
        if card:
            (directory / CARD_FILE).write_text(card)
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelArtifact:
        """Load and check the contract; raise ContractError naming what is missing or inconsistent."""
        directory = find_artifact_dir(directory)
        missing = [
            name for name in (MODEL_FILE, CONTRACT_FILE, REFERENCE_FILE) if not (directory / name).is_file()
        ]
        if missing:
            raise ContractError(f"{directory}: not a churnguard model artifact, missing {', '.join(missing)}")
        try:
            raw = json.loads((directory / CONTRACT_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ContractError(f"{directory / CONTRACT_FILE}: not valid JSON: {exc}") from None
        version = raw.get("artifact_version") if isinstance(raw, dict) else None
        if version != ARTIFACT_VERSION:
            raise ContractError(
                f"{directory}: artifact version {version!r} is not supported "
                f"(this churnguard serves version {ARTIFACT_VERSION})"
            )
        try:
            contract = ModelContract.model_validate(raw)
        except ValueError as exc:
            raise ContractError(f"{directory / CONTRACT_FILE}: contract does not validate: {exc}") from None
        model = CatBoostClassifier()
        try:
            model.load_model(str(directory / MODEL_FILE), format="cbm")
        except Exception as exc:  # CatBoostError has no stable public import path across versions
            raise ContractError(f"{directory / MODEL_FILE}: CatBoost cannot load it: {exc}") from None
        check_model_matches_schema(model, contract.feature_schema, directory)
        reference = pd.read_parquet(directory / REFERENCE_FILE)
        absent = [name for name in contract.feature_schema.names if name not in reference.columns]
        if absent:
            raise ContractError(f"{directory / REFERENCE_FILE}: reference sample lacks features {absent[:5]}")
        return cls(contract, model, reference)


def find_artifact_dir(directory: Path) -> Path:
    """Accept the artifact folder itself or an MLflow model folder that holds it.

    MLflow copies a pyfunc artifact to `artifacts/<source folder name>`, not `artifacts/<key>`, so the
    MLmodel file's `python_function.artifacts.churnguard.path` is the authority when it is there.
    """
    directory = Path(directory)
    for candidate in (directory, directory / ARTIFACT_DIR, directory / "artifacts" / ARTIFACT_DIR):
        if (candidate / CONTRACT_FILE).is_file():
            return candidate
    mlmodel = directory / "MLmodel"
    if mlmodel.is_file():
        import yaml

        try:
            meta = yaml.safe_load(mlmodel.read_text()) or {}
        except yaml.YAMLError:
            meta = {}
        flavor = (meta.get("flavors") or {}).get("python_function") or {}
        relative = ((flavor.get("artifacts") or {}).get(ARTIFACT_DIR) or {}).get("path")
        if relative and (directory / relative / CONTRACT_FILE).is_file():
            return directory / relative
    return directory


def check_model_matches_schema(model: CatBoostClassifier, schema: FeatureSchema, where: Path) -> None:
    names = list(model.feature_names_ or [])
    if names != schema.names:
        extra = sorted(set(names) - set(schema.names))[:5]
        lacking = sorted(set(schema.names) - set(names))[:5]
        raise ContractError(
            f"{where}: the CatBoost model's features do not match the schema "
            f"(model only: {extra}, schema only: {lacking}, or a different order)"
        )
    categorical = {names[i] for i in model.get_cat_feature_indices()}
    if categorical != set(schema.categorical_names):
        raise ContractError(
            f"{where}: categorical features differ: "
            f"model {sorted(categorical)}, schema {sorted(schema.categorical_names)}"
        )
