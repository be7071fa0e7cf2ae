"""The feature schema: the one source of truth for columns that training, serving and monitoring read.

Each feature carries its dtype, whether it is categorical, its allowed range or categories
(learned from training data), its signal group and, for windowed event features, what it measures,
so that reasons can be phrased for people ("orders down 60% against the previous 90 days").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

# Feature groups follow CRM practice (DESIGN.md); they name the health breakdown and the reasons.
SignalGroup = Literal[
    "activity", "transactions", "payments", "service", "satisfaction", "engagement", "relationship", "profile"
]
SIGNAL_GROUPS: tuple[str, ...] = SignalGroup.__args__  # type: ignore[attr-defined]

# What a feature measures; `static` is a customer attribute, `contract` comes from contract terms
# (churnguard.contract_features), the rest are computed from events.
# `days_since` and `age_years` are a customer's date column counted from the row's moment.
FeatureKind = Literal[
    "static",
    "tenure",
    "count",
    "sum",
    "mean",
    "max",
    "trend",
    "mom",
    "days_since_last",
    "last",
    "previous",
    "days_since",
    "age_years",
    "contract",
]

ID_COLUMN = "customer_id"
OBSERVATION_COLUMN = "observation_date"
LABEL_COLUMN = "label"


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Literal["numeric", "categorical"]
    group: SignalGroup
    kind: FeatureKind = "static"
    event_type: str | None = None  # for event features: the event type it aggregates
    window_days: int | None = None  # for count/sum/mean: the trailing window
    label: str | None = None  # human name of the event type, e.g. "orders"
    source_column: str | None = None  # for days_since/age_years: the date column it counts from
    # Learned from the training data by `FeatureSchema.fit`; the service checks inputs against them.
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = True

    @property
    def categorical(self) -> bool:
        return self.dtype == "categorical"


class FeatureSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[FeatureSpec] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.features]

    @property
    def categorical_names(self) -> list[str]:
        return [spec.name for spec in self.features if spec.categorical]

    def __getitem__(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def by_group(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for spec in self.features:
            groups.setdefault(spec.group, []).append(spec.name)
        return groups

    def fit(self, frame: pd.DataFrame) -> FeatureSchema:
        """Return a copy with ranges, categories and nullability learned from `frame` (training data)."""
        fitted = []
        for spec in self.features:
            column = frame[spec.name]
            update: dict[str, object] = {"nullable": bool(column.isna().any())}
            if spec.categorical:
                update["categories"] = sorted(str(value) for value in column.dropna().unique())
            else:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
                finite = values[np.isfinite(values)]
                if finite.size:
                    update["min"], update["max"] = float(finite.min()), float(finite.max())
            fitted.append(spec.model_copy(update=update))
        return FeatureSchema(features=fitted)

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Frame with exactly the schema's columns in order: categoricals as str (missing kept as "nan"-free
        None), numerics as float64. CatBoost needs categorical columns as strings without NaN."""
        out = {}
        for spec in self.features:
            column = frame[spec.name]
            if spec.categorical:
                out[spec.name] = column.astype("object").where(column.notna(), "__missing__").astype(str)
            else:
                out[spec.name] = pd.to_numeric(column, errors="coerce").astype("float64")
        return pd.DataFrame(out, index=frame.index)
