"""The known data changes (churnguard.scenarios) do what they say, only inside their window."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from churnguard.scenarios import SCENARIOS, apply_scenario
from churnguard.simulate import SimulationConfig, simulate

START, END = pd.Timestamp("2025-03-01"), pd.Timestamp("2025-04-01")


@pytest.fixture(scope="module")
def crm() -> tuple[pd.DataFrame, pd.DataFrame]:
    sim = simulate(SimulationConfig(customers=1500, days=120, seed=3, start=date(2025, 1, 1)))
    customers = sim.customers.astype({"customer_id": object, "segment": object, "region": object})
    events = sim.events.astype({"customer_id": object, "type": object})
    return customers, events


def _window(events: pd.DataFrame) -> pd.Series:
    return (events["timestamp"] >= START) & (events["timestamp"] < END)


def test_login_cut_removes_logins_of_one_segment_in_the_window(crm) -> None:
    customers, events = crm
    _, changed = apply_scenario("login_cut", customers, events, START, END, seed=1)
    smb = set(customers.loc[customers["segment"] == "SMB", "customer_id"])

    def logins(frame: pd.DataFrame, inside: bool, members: bool) -> int:
        mask = (frame["type"] == "login") & (_window(frame) == inside)
        return int((mask & (frame["customer_id"].isin(smb) == members)).sum())

    kept = logins(changed, True, True) / logins(events, True, True)
    assert kept == pytest.approx(0.6, abs=0.02)
    assert logins(changed, True, False) == logins(events, True, False)  # other segments untouched
    assert logins(changed, False, True) == logins(events, False, True)  # outside the window untouched
    assert len(events) > len(changed)  # the input frame was not modified


def test_payment_delay_makes_payments_later_in_the_window(crm) -> None:
    customers, events = crm
    _, changed = apply_scenario("payment_delay", customers, events, START, END, seed=2)
    payments = (events["type"] == "payment").to_numpy()
    inside = payments & _window(events).to_numpy()
    extra = changed["value"].to_numpy()[inside] - events["value"].fillna(0).to_numpy()[inside]
    assert np.mean(extra > 0) == pytest.approx(0.3, abs=0.05)
    assert np.mean(extra[extra > 0]) == pytest.approx(7.5, abs=1.5)  # ceil of exponential(7)
    outside = payments & ~_window(events).to_numpy()
    np.testing.assert_array_equal(changed["value"].to_numpy()[outside], events["value"].to_numpy()[outside])


def test_new_region_moves_part_of_one_region(crm) -> None:
    customers, events = crm
    changed, same_events = apply_scenario("new_region", customers, events, START, END, seed=3)
    assert same_events is not events and same_events.equals(events)
    moved = changed["region"] == "ANZ"
    assert "ANZ" not in set(customers["region"])
    assert set(customers.loc[moved, "region"]) == {"APAC"}
    share = moved.sum() / (customers["region"] == "APAC").sum()
    assert share == pytest.approx(0.4, abs=0.08)
    assert (changed.loc[~moved, "region"] == customers.loc[~moved, "region"]).all()


def test_unknown_scenario_lists_the_known_ones(crm) -> None:
    with pytest.raises(KeyError, match="login_cut, payment_delay, new_region"):
        apply_scenario("meteor", *crm, START, END)
    assert {s.expected_features for s in SCENARIOS.values()} == {("login__",), ("payment__",), ("region",)}
