"""Alert tiers, ranked: the one definition the scoring policy, the rules and the value matrix share."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import model_validator

from churnguard.config import StrictModel

Tier = Literal["high", "medium", "low"]
TIERS: tuple[Tier, ...] = ("high", "medium", "low")
# Higher rank = more urgent; escalation takes the maximum rank.
TIER_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


def tier_positions(score: np.ndarray, high: float, medium: float) -> np.ndarray:
    """Each score's tier as its position in TIERS: 0 (high) at or above `high`, 1 (medium) at or above
    `medium`, else 2 (low; NaN too)."""
    score = np.asarray(score, dtype=float)
    return 2 - (score >= medium) - (score >= high)  # comparisons with NaN are False: low


def tier_ranks(tiers: np.ndarray) -> np.ndarray:
    """`TIER_RANK` of every tier in an array, compared column-wise (no lookup per customer)."""
    tiers = np.asarray(tiers)
    ranks = np.zeros(len(tiers), dtype=np.int64)  # low
    ranks[tiers == "medium"] = TIER_RANK["medium"]
    ranks[tiers == "high"] = TIER_RANK["high"]
    return ranks


class TierShares(StrictModel):
    """Shares of customers in the high tier and, after it, the medium tier; subclasses give the fields
    (with their defaults) and inherit the check that something is left for the low tier."""

    high: float
    medium: float

    @model_validator(mode="after")
    def _leaves_a_low_tier(self) -> TierShares:
        if self.high + self.medium >= 1:
            raise ValueError("high + medium must leave room for a low tier (sum < 1)")
        return self
