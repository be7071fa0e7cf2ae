"""Alert tiers, ranked: the one definition the scoring policy, the rules and the value matrix share."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from churnguard.config import StrictModel

Tier = Literal["high", "medium", "low"]
TIERS: tuple[Tier, ...] = ("high", "medium", "low")
# Higher rank = more urgent; escalation takes the maximum rank.
TIER_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


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
