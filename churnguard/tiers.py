"""Alert tiers, ranked: the one definition the scoring policy, the rules and the value matrix share."""

from __future__ import annotations

from typing import Literal

Tier = Literal["high", "medium", "low"]
TIERS: tuple[Tier, ...] = ("high", "medium", "low")
# Higher rank = more urgent; escalation takes the maximum rank.
TIER_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
