"""The scoring policy: alert tiers and the 0-100 health score, from calibrated churn probabilities.

Tier thresholds are chosen on validation data by one of three policies (configs/scoring.yaml):
- `capacity`: the team can call the top X% (high) and the next Y% (medium);
- `precision`: the lowest thresholds whose tiers still reach a precision target;
- `expected_value`: contact when value x probability x save rate - contact cost pays off.

Health score mapping (documented contract): a piecewise-linear, decreasing map of the calibrated
probability through the anchors (0 -> 100), (medium threshold -> 60), (high threshold -> 30),
(1 -> 0), rounded to an integer. So "high" tier <=> health below 30, "medium" <=> 30-59, and the
score reads the same way on every model whatever its base rate.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from churnguard.alerting import AlertPolicy
from churnguard.config import StrictModel, load_named
from churnguard.feedback import FeedbackConfig
from churnguard.rules import EscalationConfig, RuleConfig, check_rule_names
from churnguard.tiers import TIERS as TIERS  # re-exported: callers import tiers from the policy
from churnguard.tiers import Tier as Tier
from churnguard.tiers import TierShares, tier_positions
from churnguard.value import ValueConfig, WorklistConfig

HEALTH_AT_MEDIUM = 60
HEALTH_AT_HIGH = 30


# ---------------------------------------------------------------------------------------------- config


class CapacityPolicy(TierShares):
    high: float = Field(0.05, gt=0, lt=1, description="share of customers in the high tier")
    medium: float = Field(0.15, gt=0, lt=1, description="share in the medium tier, after the high tier")


class PrecisionPolicy(StrictModel):
    high: float = Field(0.7, gt=0, le=1, description="minimum precision of the high tier")
    medium: float = Field(0.4, gt=0, le=1, description="minimum precision of high+medium together")


class ExpectedValuePolicy(StrictModel):
    save_rate: float = Field(0.3, gt=0, le=1, description="share of contacted churners that are saved")
    contact_cost: float = Field(50.0, ge=0, description="cost of one retention contact")
    value_feature: str | None = Field(None, description="feature holding customer value, e.g. contract_value")
    default_value: float = Field(1000.0, gt=0, description="customer value when there is no value feature")
    high_multiple: float = Field(
        3.0, ge=1, description="high tier: expected net value >= this x contact cost"
    )


class TierConfig(StrictModel):
    policy: Literal["capacity", "precision", "expected_value"] = "capacity"
    capacity: CapacityPolicy = CapacityPolicy()
    precision: PrecisionPolicy = PrecisionPolicy()
    expected_value: ExpectedValuePolicy = ExpectedValuePolicy()


class ReasonConfig(StrictModel):
    top: int = Field(3, ge=1, le=20, description="drivers named per customer")


class ScoringConfig(StrictModel):
    tiers: TierConfig = TierConfig()
    reasons: ReasonConfig = ReasonConfig()
    # Early-warning rules by stable code (see churnguard.rules); a new rule needs only YAML.
    rules: dict[str, RuleConfig] = {}
    escalation: EscalationConfig = EscalationConfig()
    value: ValueConfig = ValueConfig()
    worklist: WorklistConfig = WorklistConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    # When the daily pass raises an alert (routing and channels: configs/alerts.yaml).
    alerts: AlertPolicy = AlertPolicy()

    @model_validator(mode="after")
    def _rule_codes(self) -> ScoringConfig:
        check_rule_names(self.rules)
        return self


def load_scoring_config() -> ScoringConfig:
    return load_named(ScoringConfig, "scoring")


# ---------------------------------------------------------------------------------------------- tiers


class TierThresholds(StrictModel):
    """Probability thresholds: p >= high -> high tier; medium <= p < high -> medium; else low."""

    policy: str
    high: float = Field(ge=0, le=1)
    medium: float = Field(ge=0, le=1)
    params: dict[str, float | str | None] = {}

    @model_validator(mode="after")
    def _ordered(self) -> TierThresholds:
        if self.medium > self.high:
            raise ValueError(f"medium threshold {self.medium} is above the high threshold {self.high}")
        return self

    def assign(self, probability: np.ndarray) -> np.ndarray:
        return _TIER_NAMES[self.positions(probability)]

    def positions(self, probability: np.ndarray) -> np.ndarray:
        """Each probability's tier as its position in TIERS (0 high, 1 medium, 2 low; NaN is low)."""
        return tier_positions(probability, self.high, self.medium)


_TIER_NAMES = np.array(TIERS)


def _top_share_threshold(probability: np.ndarray, share: float) -> float:
    """Smallest probability among the top `share` of customers."""
    ranked = np.sort(probability)[::-1]
    count = max(1, round(share * len(ranked)))
    return float(ranked[count - 1])


def _lowest_threshold_with_precision(probability: np.ndarray, label: np.ndarray, target: float) -> float:
    """Lowest threshold t such that precision of {p >= t} reaches `target` (1.0 if none does)."""
    order = np.argsort(-probability, kind="stable")
    sorted_p, sorted_y = probability[order], label[order]
    precision = np.cumsum(sorted_y) / np.arange(1, len(sorted_y) + 1)
    # Only cut between distinct probabilities: a threshold keeps all ties.
    last_of_tie = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    ok = np.flatnonzero((precision >= target) & last_of_tie)
    return float(sorted_p[ok[-1]]) if ok.size else 1.0


def choose_thresholds(
    config: TierConfig,
    probability: np.ndarray,
    label: np.ndarray,
    value: np.ndarray | None = None,
) -> TierThresholds:
    """Choose tier thresholds on validation data (calibrated probabilities and true labels)."""
    probability = np.asarray(probability, dtype=float)
    label = np.asarray(label, dtype=float)
    if config.policy == "capacity":
        cap = config.capacity
        high = _top_share_threshold(probability, cap.high)
        medium = _top_share_threshold(probability, cap.high + cap.medium)
        params = {"high_share": cap.high, "medium_share": cap.medium}
    elif config.policy == "precision":
        target = config.precision
        high = _lowest_threshold_with_precision(probability, label, target.high)
        medium = min(high, _lowest_threshold_with_precision(probability, label, target.medium))
        params = {"high_precision": target.high, "medium_precision": target.medium}
    else:
        ev = config.expected_value
        value = (
            np.full(len(probability), ev.default_value) if value is None else np.asarray(value, dtype=float)
        )
        value = np.where(np.isfinite(value) & (value > 0), value, ev.default_value)
        # Expected net value of contacting each customer; a probability threshold at the median value.
        typical_value = float(np.median(value))
        medium = min(1.0, ev.contact_cost / (typical_value * ev.save_rate))
        high = min(1.0, (1 + ev.high_multiple) * ev.contact_cost / (typical_value * ev.save_rate))
        params = {
            "save_rate": ev.save_rate,
            "contact_cost": ev.contact_cost,
            "typical_value": typical_value,
            "value_feature": ev.value_feature,
        }
    return TierThresholds(policy=config.policy, high=high, medium=min(medium, high), params=params)


# ---------------------------------------------------------------------------------------------- health


_HEALTH_ANCHORS = np.array([100.0, HEALTH_AT_MEDIUM, HEALTH_AT_HIGH, 0.0])
# Per tier position (high, medium, low), the health range that reads as that tier.
_TIER_HEALTH_LOW = np.array([0, HEALTH_AT_HIGH, HEALTH_AT_MEDIUM])
_TIER_HEALTH_HIGH = np.array([HEALTH_AT_HIGH - 1, HEALTH_AT_MEDIUM - 1, 100])


@functools.lru_cache(maxsize=64)
def _probability_anchors(medium: float, high: float) -> np.ndarray:
    # Degenerate thresholds (equal anchors) would make np.interp ambiguous; nudge them apart.
    return np.maximum.accumulate(np.array([0.0, medium, high, 1.0]) + np.arange(4) * 1e-9)


def health_score(probability: np.ndarray, thresholds: TierThresholds) -> np.ndarray:
    """0-100, higher is healthier; see the module docstring for the mapping."""
    anchors = _probability_anchors(thresholds.medium, thresholds.high)
    score = np.floor(np.interp(np.asarray(probability, dtype=float), anchors, _HEALTH_ANCHORS) + 0.5)
    # Keep health strictly consistent with tiers after rounding (29.6 must not round to a "medium" 30).
    tier = thresholds.positions(probability)
    return np.clip(score, _TIER_HEALTH_LOW[tier], _TIER_HEALTH_HIGH[tier]).astype(int)
