"""When the daily pass raises an alert: the triggers and their limits (configs/scoring.yaml, `alerts:`).

They belong to the scoring policy, beside the tiers and rules they read. Who hears about an alert,
how and by when (routing, channels, SLA) is configs/alerts.yaml; an owner or team there may still set
a `daily_cap` of its own.
"""

from __future__ import annotations

from pydantic import Field

from churnguard.config import StrictModel

# Keys that moved from configs/alerts.yaml to configs/scoring.yaml `alerts:`.
POLICY_KEYS = ("enter_high", "rise_by_tier", "critical_rule", "cooldown_days", "daily_cap")


class AlertPolicy(StrictModel):
    enter_high: bool = Field(True, description="raise when the customer enters the high tier")
    rise_by_tier: bool = Field(True, description="raise when the tier rises against the last scored tier")
    critical_rule: bool = Field(True, description="raise when a rule of severity critical fires")
    cooldown_days: float = Field(14.0, ge=0, description="after a resolution, no new alert for this long")
    daily_cap: int = Field(20, ge=0, description="alerts per owner per day; the rest go in one digest")
