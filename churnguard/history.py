"""The customer's score history, for rules such as "health down 20 points over 90 days".

The history is the prediction log: every scored customer is logged with its health score. A
history rule compares the health now with the reference health of its window: the oldest score
logged for the customer in the last `window_days` days (none: the rule cannot fire).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd


class ScoreHistory(Protocol):
    def reference_health(self, customer_ids: Sequence[str], window_days: int) -> np.ndarray:
        """Per customer, the oldest health score logged in the last `window_days` days; NaN if none."""
        ...


def oldest_health(history: pd.DataFrame, customer_ids: Sequence[str]) -> np.ndarray:
    """`history` (customer_id, logged_at, health_score) -> each customer's oldest score, NaN if none."""
    if history.empty:
        return np.full(len(customer_ids), np.nan)
    oldest: dict[str, tuple[object, float]] = {}
    # Plain Python: a request usually asks about one customer, where pandas' fixed costs dominate.
    for customer, logged_at, health in zip(
        history["customer_id"].astype(str).tolist(),
        history["logged_at"].tolist(),
        history["health_score"].tolist(),
        strict=True,
    ):
        seen = oldest.get(customer)
        if seen is None or logged_at < seen[0]:
            oldest[customer] = (logged_at, float(health))
    return np.array([oldest[c][1] if c in oldest else np.nan for c in map(str, customer_ids)], dtype=float)


class FrameHistory:
    """History from a frame (customer_id, logged_at, health_score), as of a fixed moment: for tests,
    notebooks and offline scoring of past dates."""

    def __init__(self, frame: pd.DataFrame, as_of: datetime) -> None:
        frame = frame[["customer_id", "logged_at", "health_score"]].copy()
        frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
        self.frame = frame
        self.as_of = pd.Timestamp(as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))

    def reference_health(self, customer_ids: Sequence[str], window_days: int) -> np.ndarray:
        since = self.as_of - pd.Timedelta(days=window_days)
        window = self.frame[(self.frame["logged_at"] >= since) & (self.frame["logged_at"] < self.as_of)]
        return oldest_health(window, customer_ids)


class LoggedHistory:
    """History read from the service's prediction log, as of now (see PredictionLog.oldest_health)."""

    def __init__(self, prediction_log: object) -> None:
        self.prediction_log = prediction_log

    def reference_health(self, customer_ids: Sequence[str], window_days: int) -> np.ndarray:
        since = datetime.now(UTC) - timedelta(days=window_days)
        # The log finds each customer's oldest score itself: no per-row history crosses into Python.
        return self.prediction_log.oldest_health(customer_ids, since)  # type: ignore[attr-defined]
