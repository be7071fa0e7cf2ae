"""Known changes to a CRM's data, applied to a window of events or customers.

Drift monitors are judged against them (`benchmarks/drift_detection.py`) and the demo uses them to
show a drift report that has something to find. Each change is something that happens to real
customer bases:

- `login_cut`: a product change makes one segment log in less (each login survives with `1 - cut`);
- `payment_delay`: a price rise makes some payments later (extra days late on a share of payments);
- `new_region`: a territory split books part of one region's accounts under a region the model never saw.

Event changes only touch events inside [start, end); a customer change is the CRM's state from `start`
on, so it belongs to the customers table used for data observed after `start`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

Frames = tuple[pd.DataFrame, pd.DataFrame]  # (customers, events)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    # Feature-name prefixes a monitor should name when it catches the change.
    expected_features: tuple[str, ...]
    change: Callable[[pd.DataFrame, pd.DataFrame, pd.Timestamp, pd.Timestamp, np.random.Generator], Frames]

    def apply(
        self, customers: pd.DataFrame, events: pd.DataFrame, start: object, end: object, seed: int
    ) -> Frames:
        """Changed copies of `customers` and `events`; the inputs are left as they were."""
        rng = np.random.default_rng(seed)
        return self.change(customers.copy(), events.copy(), pd.Timestamp(start), pd.Timestamp(end), rng)


def _in_window(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    timestamp = events["timestamp"]
    return ((timestamp >= start) & (timestamp < end)).to_numpy()


def cut_logins(segment: str = "SMB", cut: float = 0.4) -> Callable[..., Frames]:
    def change(customers, events, start, end, rng) -> Frames:
        members = set(customers.loc[customers["segment"] == segment, "customer_id"].astype(str))
        hit = (
            _in_window(events, start, end)
            & (events["type"] == "login").to_numpy()
            & events["customer_id"].astype(str).isin(members).to_numpy()
        )
        dropped = hit & (rng.random(len(events)) < cut)
        return customers, events.loc[~dropped].reset_index(drop=True)

    return change


def delay_payments(share: float = 0.3, extra_days: float = 7.0) -> Callable[..., Frames]:
    def change(customers, events, start, end, rng) -> Frames:
        payments = np.flatnonzero(_in_window(events, start, end) & (events["type"] == "payment").to_numpy())
        later = payments[rng.random(payments.size) < share]
        extra = np.ceil(rng.exponential(extra_days, later.size))
        values = events["value"].to_numpy(dtype=float, copy=True)
        values[later] = np.nan_to_num(values[later]) + extra
        events["value"] = values
        return customers, events

    return change


def split_region(
    new_region: str = "ANZ", from_region: str = "APAC", share: float = 0.4
) -> Callable[..., Frames]:
    def change(customers, events, start, end, rng) -> Frames:
        region = customers["region"].astype(object).to_numpy(copy=True)
        moved = (region == from_region) & (rng.random(len(customers)) < share)
        region[moved] = new_region
        customers["region"] = region
        return customers, events

    return change


SCENARIOS: dict[str, Scenario] = {
    "login_cut": Scenario(
        "login_cut",
        "product change: SMB customers log in 40% less",
        ("login__",),
        cut_logins("SMB", 0.4),
    ),
    "payment_delay": Scenario(
        "payment_delay",
        "price rise: 30% of payments arrive on average 7 days later",
        ("payment__",),
        delay_payments(0.3, 7.0),
    ),
    "new_region": Scenario(
        "new_region",
        "territory split: 40% of APAC accounts move to the new region ANZ",
        ("region",),
        split_region("ANZ", "APAC", 0.4),
    ),
}


def apply_scenario(
    name: str, customers: pd.DataFrame, events: pd.DataFrame, start: object, end: object, seed: int = 0
) -> Frames:
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario '{name}'; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name].apply(customers, events, start, end, seed)
