"""Customer value tiers and the value x risk priority matrix.

Customer value combines components (contract value, profit or margin, tenure, growth) with weights
from configs/scoring.yaml. Each component reads the first of its candidate features that the model
has; it is scored as the customer's percentile among the model's reference customers, so contract
value in dollars and tenure in days weigh in on one scale. A component the model lacks drops out
and the remaining weights are rescaled ("where present"); so does a missing value for one customer.

value_score = sum(weight x percentile) / sum(weights of the components known), 0..1.
Value tiers cut the reference customers' value scores by share: the top `high` share is "high", the
next `medium` share "medium". A customer with no known component has no value tier (null) and is
placed in the matrix as `missing_value_tier` says.

Without any of the `requires_any` components (what a customer is worth: contract value or margin) the
value model is inactive, like a rule without its features: tenure and growth alone would call the
longest customers "high value" (on CDNOW every test customer, whose tenure outgrows the reference).
Every customer then has no value tier, and GET /model says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from churnguard.config import StrictModel
from churnguard.schema import FeatureSchema
from churnguard.tiers import TIER_RANK, TIERS, Tier, TierShares, tier_positions, tier_ranks


class ValueComponent(StrictModel):
    features: list[str] = Field(min_length=1, description="candidates; the first the model has is used")
    weight: float = Field(ge=0)


class ValueTierShares(TierShares):
    high: float = Field(0.2, gt=0, lt=1, description="share of reference customers in the high value tier")
    medium: float = Field(0.3, gt=0, lt=1, description="share in the medium value tier, after the high")


def _default_components() -> dict[str, ValueComponent]:
    return {
        "contract": ValueComponent(features=["contract_value", "MonthlyCharges"], weight=0.4),
        "margin": ValueComponent(features=["margin", "profit"], weight=0.3),
        "tenure": ValueComponent(features=["tenure_days", "tenure"], weight=0.2),
        "growth": ValueComponent(features=["order__trend_30_90"], weight=0.1),
    }


def _default_priority() -> dict[Tier, dict[Tier, int]]:
    return {
        "high": {"high": 1, "medium": 2, "low": 4},
        "medium": {"high": 3, "medium": 5, "low": 7},
        "low": {"high": 6, "medium": 8, "low": 9},
    }


class ValueConfig(StrictModel):
    components: dict[str, ValueComponent] = Field(default_factory=_default_components)
    tiers: ValueTierShares = ValueTierShares()
    # priority[alert_tier][value_tier]: 1 is called first.
    priority: dict[Tier, dict[Tier, int]] = Field(default_factory=_default_priority)
    missing_value_tier: Tier = "medium"
    # The value model is active only with one of these components (a measure of what a customer is worth).
    requires_any: list[str] = Field(default_factory=lambda: ["contract", "margin"])

    @model_validator(mode="after")
    def _complete(self) -> ValueConfig:
        for alert in TIERS:
            row = self.priority.get(alert)
            missing = [value for value in TIERS if row is None or value not in row]
            if missing:
                raise ValueError(
                    f"priority.{alert}: needs a priority for every value tier; missing {', '.join(missing)}"
                )
            bad = [value for value in TIERS if row[value] < 1]  # type: ignore[index]
            if bad:
                raise ValueError(f"priority.{alert}.{bad[0]}: expected a whole number >= 1 (1 = first)")
        if not any(component.weight > 0 for component in self.components.values()):
            raise ValueError("components: at least one component needs a weight above 0")
        if self.requires_any and not set(self.requires_any) & set(self.components):
            raise ValueError(
                f"requires_any: none of {', '.join(self.requires_any)} is a component "
                f"(components: {', '.join(self.components)}); list one, or [] to rank value without them"
            )
        return self


class WorklistConfig(StrictModel):
    owner_feature: str = Field("account_owner", description="the feature naming the account owner")
    lookback_days: int = Field(30, gt=0, description="customers scored in these last days are listed")
    limit: int = Field(100, ge=1, le=10_000, description="default number of customers returned")
    top_reasons: int = Field(3, ge=1, le=20, description="reasons listed per customer")


_TIER_NAMES = np.array(TIERS, dtype=object)
_POSITION_OF_RANK = np.array([TIERS.index(t) for t in sorted(TIER_RANK, key=TIER_RANK.__getitem__)])


@dataclass(frozen=True)
class _Component:
    name: str
    feature: str
    weight: float
    reference: np.ndarray  # sorted finite reference values


@dataclass
class ValueAssessment:
    score: np.ndarray  # 0..1, NaN when no component is known
    tier: np.ndarray  # object: "high" / "medium" / "low" / None
    priority: np.ndarray  # int


class ValueModel:
    """Value scores and tiers for one model's customers, fitted on its reference sample."""

    def __init__(self, config: ValueConfig, schema: FeatureSchema, reference: pd.DataFrame) -> None:
        self.config = config
        specs = {spec.name: spec for spec in schema.features}
        self.components: list[_Component] = []
        self.unused: dict[str, str] = {}
        for name, component in config.components.items():
            feature = next((f for f in component.features if f in specs and not specs[f].categorical), None)
            if component.weight == 0:
                self.unused[name] = "weight 0"
            elif feature is None:
                self.unused[name] = f"the model has none of {', '.join(component.features)}"
            elif feature not in reference.columns:
                self.unused[name] = f"the reference sample lacks {feature}"
            else:
                values = pd.to_numeric(reference[feature], errors="coerce").to_numpy(dtype=float)
                values = np.sort(values[np.isfinite(values)])
                if values.size:
                    self.components.append(_Component(name, feature, component.weight, values))
                else:
                    self.unused[name] = f"{feature} has no values in the reference sample"
        self.inactive_reason: str | None = None
        present = {component.name for component in self.components}
        if config.requires_any and not present & set(config.requires_any):
            self.inactive_reason = (
                f"the model has no {' or '.join(config.requires_any)} component (what a customer is worth); "
                f"{', '.join(sorted(present)) or 'nothing'} alone would not rank value"
            )
            self.components = []
        self.high_cut, self.medium_cut = self._cuts(reference)
        # priority[alert position][value position], positions in TIERS.
        matrix = config.priority
        self._priority = np.array([[matrix[a][v] for v in TIERS] for a in TIERS], dtype=np.int64)

    def _cuts(self, reference: pd.DataFrame) -> tuple[float, float]:
        if not self.components:
            return np.inf, np.inf
        scores = self.scores(lambda name: pd.to_numeric(reference[name], errors="coerce").to_numpy(float))
        scores = np.sort(scores[np.isfinite(scores)])
        if not scores.size:
            return np.inf, np.inf
        shares = self.config.tiers
        return (
            float(np.quantile(scores, 1 - shares.high)),
            float(np.quantile(scores, 1 - shares.high - shares.medium)),
        )

    def scores(self, column: Callable[[str], np.ndarray]) -> np.ndarray:
        """Weighted mean of the component percentiles (NaN where none is known); needs components."""
        total = weights = 0.0
        for component in self.components:
            values = np.asarray(column(component.feature), dtype=float)
            # An unknown value weighs nothing (searchsorted puts NaN past the end: a finite percentile).
            weight = np.isfinite(values) * component.weight
            percentile = component.reference.searchsorted(values, side="right") / component.reference.size
            total = total + weight * percentile
            weights = weights + weight
        scores = np.full(np.shape(weights), np.nan)
        return np.divide(total, weights, out=scores, where=weights > 0)

    def assess(self, column: Callable[[str], np.ndarray], alert_tier: np.ndarray) -> ValueAssessment:
        rows = len(alert_tier)
        score = self.scores(column) if self.components else np.full(rows, np.nan)
        known = np.isfinite(score)
        # Positions in TIERS (0 = high), column-wise: the matrix is read with two index arrays.
        value_at = tier_positions(score, self.high_cut, self.medium_cut)
        tier = _TIER_NAMES[value_at]
        if not known.all():
            tier[~known] = None
            value_at[~known] = TIERS.index(self.config.missing_value_tier)
        alert_at = _POSITION_OF_RANK[tier_ranks(alert_tier)]
        return ValueAssessment(score.round(4), tier, self._priority[alert_at, value_at])

    def describe(self) -> dict[str, object]:
        """What GET /model says about customer value."""
        return {
            "active": self.inactive_reason is None,
            "inactive_reason": self.inactive_reason,
            "components": {c.name: {"feature": c.feature, "weight": c.weight} for c in self.components},
            "unused_components": dict(self.unused),
            "tier_cuts": {
                "high": self.high_cut if np.isfinite(self.high_cut) else None,
                "medium": self.medium_cut if np.isfinite(self.medium_cut) else None,
            },
            "priority": {alert: dict(row) for alert, row in self.config.priority.items()},
            "missing_value_tier": self.config.missing_value_tier,
        }
