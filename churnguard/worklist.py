"""The retention worklist: whom to call first, for one account owner or for all of them.

It lists every customer scored in the last `lookback_days` (configs/scoring.yaml, `worklist:`), each
re-scored now from their latest logged inputs with the served model, so tiers, rules, value and
reasons are current and in the requested language. Order: priority (the alert tier x value tier
matrix, 1 first), then alert tier, value score and churn probability, highest first. Reasons listed
are the rule hits and the drivers that raise the risk. Logged rows the model cannot score (say,
logged for an older model with other features) are not dropped silently: they come back under
`skipped` with the field that stops them.

Each customer also shows their open alert, if any (`alert`: id, state, tier, when it is due), so the
list says who is already being handled: `open_alerts` looks them up (the service passes the alert
store's; churnguard/ does not import alerts/). Without it, or when it answers None (the store is
down), `alert` is null and `alerts_known` false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnguard.config import UsageError
from churnguard.history import ScoreHistory
from churnguard.predict import Predictor
from churnguard.rules import Language
from churnguard.schema import ID_COLUMN
from churnguard.tiers import TIER_RANK
from churnguard.value import WorklistConfig

# The open alert of each listed customer, by id: the alert store's rows (see alerts/store.py).
OpenAlerts = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]] | None]
ALERT_FIELDS = ("alert_id", "state", "tier", "due_at", "raised_day")


class WorklistError(UsageError):
    """A worklist request that cannot be answered; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class WorklistRequest:
    owner: str | None = None  # None: every owner
    limit: int = 100
    language: Language = "en"


def latest_inputs(logged: pd.DataFrame) -> pd.DataFrame:
    """Each customer's most recent logged row (the log reads oldest first)."""
    if logged.empty:
        return logged
    frame = logged.copy()
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    return frame.drop_duplicates(ID_COLUMN, keep="last").reset_index(drop=True)


def build_worklist(
    predictor: Predictor,
    logged: pd.DataFrame,
    config: WorklistConfig,
    request: WorklistRequest,
    history: ScoreHistory | None = None,
    open_alerts: OpenAlerts | None = None,
) -> dict[str, object]:
    """The worklist as a JSON-ready dict (see the module docstring); `logged` as PredictionLog.read."""
    owner_feature = config.owner_feature
    has_owner = owner_feature in predictor.schema.names
    if request.owner is not None and not has_owner:
        raise WorklistError(
            "owner",
            f"the served model has no '{owner_feature}' feature (worklist.owner_feature), so customers "
            "cannot be listed by owner; leave `owner` out to list all customers",
        )
    latest = latest_inputs(logged)
    if request.owner is not None and len(latest):
        latest = latest[latest[owner_feature].astype(str).to_numpy() == request.owner].reset_index(drop=True)
    header = {
        "owner": request.owner,
        "model_version": predictor.model_version,
        "lang": request.language,
        "alerts_known": open_alerts is not None,
    }
    if latest.empty:
        return {**header, "count": 0, "customers": [], "skipped": []}

    names = predictor.schema.names
    frame = latest.reindex(columns=[ID_COLUMN, *names])  # features an older model did not log: missing
    checked = predictor.rules.check_frame(frame, allow_extra=True)
    skipped = _skipped(checked.errors, checked.customer_ids, checked.row_numbers)
    valid = checked.only_valid()
    if not len(valid):
        return {**header, "count": 0, "customers": [], "skipped": skipped}
    batch = predictor.score_checked(valid, explain=True, history=history)
    results = batch.results(language=request.language)
    logged_at = latest["logged_at"].to_numpy()[np.flatnonzero(checked.valid)]
    owners = (
        latest[owner_feature].to_numpy(dtype=object)[np.flatnonzero(checked.valid)]
        if has_owner
        else [None] * len(results)
    )
    entries = []
    for result, scored_at, owner in zip(results, logged_at, owners, strict=True):
        reasons = [
            reason
            for reason in result["reasons"] or []
            if reason["code"].startswith("rule:") or reason["code"].startswith("raises_risk:")
        ]
        entries.append(
            {
                "customer_id": result["customer_id"],
                "owner": owner,
                "priority": result["priority"],
                "alert_tier": result["alert_tier"],
                "model_tier": result["model_tier"],
                "escalated_by": result["escalated_by"],
                "value_tier": result["value_tier"],
                "value_score": result["value_score"],
                "churn_probability": result["churn_probability"],
                "health_score": result["health_score"],
                "last_scored_at": pd.Timestamp(scored_at).isoformat(),
                "reasons": reasons[: config.top_reasons],
            }
        )
    entries.sort(key=_urgency)
    listed = entries[: request.limit]
    alerts = open_alerts([entry["customer_id"] for entry in listed]) if open_alerts is not None else None
    header["alerts_known"] = alerts is not None  # None: the alert store could not say
    for entry in listed:
        alert = (alerts or {}).get(entry["customer_id"])
        entry["alert"] = None if alert is None else {key: alert[key] for key in ALERT_FIELDS if key in alert}
    return {**header, "count": len(entries), "customers": listed, "skipped": skipped}


def _urgency(entry: dict) -> tuple:
    value = entry["value_score"]
    return (
        entry["priority"],
        -TIER_RANK[entry["alert_tier"]],
        -(value if value is not None else -1.0),
        -entry["churn_probability"],
        entry["customer_id"],
    )


def _skipped(errors: list, customer_ids: list[str], row_numbers: np.ndarray) -> list[dict]:
    """One entry per logged customer that could not be re-scored, with its first problem."""
    ids = dict(zip(row_numbers.tolist(), customer_ids, strict=True))
    seen: dict[int, dict] = {}
    for error in errors:
        if error.row not in seen:
            seen[error.row] = {
                "customer_id": ids.get(error.row, ""),
                "field": error.field,
                "message": error.message,
            }
    return list(seen.values())
