"""Contracts as a dataset source: point-in-time features from contract terms, read from YAML only.

The files are written in tmp_path; every expected value is worked out by hand from the rows below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnguard.config import ConfigError
from churnguard.contract_features import (
    CONTRACT_TYPES,
    ContractPlan,
    contract_feature_specs,
    contract_features,
)
from churnguard.datasets import DataError, load_dataset_config, load_events
from churnguard.feature_table import FeaturePlan, build_feature_table, customer_features

YAML = """
kind: events
name: tiny_contracts
events:
  - path: events.csv
customers:
  path: customers.csv
  signup_column: signup
  static_columns: [plan]
contracts:
  path: contracts.csv
  start_column: start
  renewal_column: renews
  mrr_column: mrr
  seats_column: seats
  auto_renew_column: auto_renew
  auto_renew_off_column: auto_renew_off
event_types:
  login: {group: activity, label: logins}
observation: {start: 2024-04-01, end: 2024-06-30, every_days: 30}
horizon_days: 30
windows_days: [30, 120]
churn: {kind: explicit, column: churned_on}
checks: {min_positives: 1}
"""

CUSTOMERS = """customer_id,signup,plan,churned_on
A,2023-01-01,annual,
B,2024-01-01,monthly,2024-06-15
"""

EVENTS = """customer_id,timestamp,type,value
A,2024-03-10 10:00:00,login,
B,2024-03-12 10:00:00,login,
A,2024-08-01 10:00:00,login,
"""

# A: annual terms; the 2024 renewal cut MRR 1000 -> 800 (a downgrade), auto-renew switched off on 5 May.
# B: monthly terms (manual renewal, auto-renew off from the start), seats 10 -> 12 -> 12.
CONTRACTS = """customer_id,start,renews,end,mrr,seats,auto_renew,auto_renew_off
A,2023-01-01,2024-01-01,2024-01-01,1000,10,true,
A,2024-01-01,2025-01-01,2024-06-20,800,8,true,2024-05-05
B,2024-01-01,2024-04-01,2024-04-01,300,10,false,
B,2024-04-01,2024-05-01,2024-05-01,360,12,false,
B,2024-05-01,2024-06-01,2024-06-01,360,12,false,
"""


def write_dataset(folder: Path, contracts: str = CONTRACTS, yaml: str = YAML) -> Path:
    (folder / "events.csv").write_text(EVENTS)
    (folder / "customers.csv").write_text(CUSTOMERS)
    (folder / "contracts.csv").write_text(contracts)
    path = folder / "tiny.yaml"
    path.write_text(yaml)
    return path


def table_rows(path: Path) -> pd.DataFrame:
    table = build_feature_table(load_dataset_config(path))
    return table.frame.set_index(["customer_id", "observation_date"])


def test_features_from_yaml_only_worked_out_by_hand(tmp_path: Path) -> None:
    rows = table_rows(write_dataset(tmp_path))
    a_may = rows.loc[("A", pd.Timestamp("2024-05-01"))]
    assert a_may["contract__days_to_renewal"] == 245  # 2025-01-01 - 2024-05-01
    assert a_may["contract__days_since_renewal"] == 121  # 2024-05-01 - 2024-01-01
    assert a_may["contract__mrr"] == 800
    assert a_may["contract__mrr_change_30d"] == 0.0  # the cut was on 1 January, before the 30 days
    assert a_may["contract__mrr_change_120d"] == 0.0  # as of 2 January: already 800
    assert a_may["contract__downgrades_120d"] == 0
    assert a_may["contract__auto_renew_off"] == 0  # switched off on 5 May, after this date
    assert np.isnan(a_may["contract__days_since_auto_renew_off"])

    a_may31 = rows.loc[("A", pd.Timestamp("2024-05-31"))]
    assert a_may31["contract__auto_renew_off"] == 1
    assert a_may31["contract__days_since_auto_renew_off"] == 26  # 5 May to 31 May

    a_april = rows.loc[("A", pd.Timestamp("2024-04-01"))]
    assert a_april["contract__mrr_change_120d"] == pytest.approx(-0.2)  # 3 December: 1000, now 800
    assert a_april["contract__seats_change_120d"] == pytest.approx(-0.2)
    assert a_april["contract__downgrades_120d"] == 1
    assert a_april["contract__downgrades_30d"] == 0

    b_may = rows.loc[("B", pd.Timestamp("2024-05-01"))]
    # The term starting on 1 May is not known at midnight on 1 May: the April term is current.
    assert b_may["contract__days_to_renewal"] == 0
    assert b_may["contract__days_since_renewal"] == 30
    assert b_may["contract__seats"] == 12
    assert b_may["contract__seats_change_30d"] == pytest.approx(0.2)
    assert b_may["contract__auto_renew_off"] == 1  # a manual-renewal term
    assert b_may["contract__downgrades_120d"] == 0  # an upgrade is not a downgrade
    assert not rows.index.isin([("B", pd.Timestamp("2024-06-30"))]).any()  # churned on 15 June


def test_a_renewal_past_due_without_a_new_term_is_at_renewal(tmp_path: Path) -> None:
    """B's last term was due on 1 June and no term followed (B churned on 15 June): scored by id on
    20 June, the renewal is due (0 days), never negative, which no active training customer is."""
    config = load_dataset_config(write_dataset(tmp_path))
    data = load_events(config)
    population = pd.DataFrame({"customer_id": ["B"], "observation_date": [pd.Timestamp("2024-06-20")]})
    row = contract_features(FeaturePlan.from_config(config).contracts, data.contracts, population, [30]).iloc[
        0
    ]
    assert row["contract__days_to_renewal"] == 0 and row["contract__days_since_renewal"] == 50


def test_a_contract_change_after_the_observation_date_changes_no_feature(tmp_path: Path) -> None:
    """Later terms, a later downgrade, a later switch-off and a different actual end: same features
    at every observation date before them."""
    before = table_rows(write_dataset(_mkdir(tmp_path / "before")))
    changed = CONTRACTS.replace(
        "A,2024-01-01,2025-01-01,2024-06-20,800,8,true,2024-05-05",
        "A,2024-01-01,2025-01-01,2024-05-02,800,8,true,2024-06-20",  # switched off later, ended earlier
    ).replace(
        "B,2024-05-01,2024-06-01,2024-06-01,360,12,false,", "B,2024-05-01,2024-06-01,2024-06-01,90,3,true,"
    )
    changed += "A,2024-06-10,2025-06-10,2025-06-10,100,1,false,\n"  # a later downgrade to one seat
    after = table_rows(write_dataset(_mkdir(tmp_path / "after"), contracts=changed))
    columns = [name for name in before.columns if name.startswith("contract__")]
    assert len(columns) == 12
    # Every change above is dated on or after 1 May: rows before and at that midnight are untouched.
    untouched = before.index.get_level_values("observation_date") <= pd.Timestamp("2024-05-01")
    pd.testing.assert_frame_equal(before.loc[untouched, columns], after.loc[untouched, columns])
    # ...and the later rows do see them (the test can tell a change from none).
    assert not before.loc[~untouched, columns].equals(after.loc[~untouched, columns])


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_contract_events_mixed_into_the_events_give_the_same_features(tmp_path: Path) -> None:
    """The live loop reads contract events from the event store among the others: same features."""
    config = load_dataset_config(write_dataset(tmp_path))
    data = load_events(config)
    plan = FeaturePlan.from_config(config)
    table = build_feature_table(config)
    population = table.frame[["customer_id", "observation_date"]]
    mixed = pd.concat([data.events, data.contracts], ignore_index=True)
    live, schema = customer_features(plan, mixed, data.customers, population)
    assert schema.names == table.schema.names
    pd.testing.assert_frame_equal(live.reset_index(drop=True), table.features.reset_index(drop=True))
    assert FeaturePlan.from_schema(table.schema) == FeaturePlan(
        plan.event_types, plan.windows_days, plan.static_columns, {"plan": "profile"},
        static_dtypes={"plan": "categorical"}, contracts=plan.contracts,
    )  # fmt: skip


def test_bad_contract_rows_are_named_and_counted(tmp_path: Path) -> None:
    bad = CONTRACTS + "Z,2024-01-01,2025-01-01,,500,5,true,\n" + "A,,2025-01-01,,500,5,true,\n"
    config = load_dataset_config(write_dataset(tmp_path, contracts=bad))
    data = load_events(config)
    text = data.report.format()
    assert "contracts.csv, column 'customer_id': contracts of customers not in the customers" in text
    assert "contracts.csv, column 'start': contracts without a start date" in text
    assert data.report.rows_dropped[str(tmp_path / "contracts.csv")] == 2

    missing = CONTRACTS.replace("renews", "renewal")
    with pytest.raises(DataError, match=r"contracts.csv.*renews.*missing column.*did you mean 'renewal'"):
        load_events(load_dataset_config(write_dataset(tmp_path, contracts=missing)))

    with pytest.raises(DataError, match=r"contracts.csv.*auto_renew.*expected true/false"):
        load_events(
            load_dataset_config(write_dataset(tmp_path, contracts=CONTRACTS.replace("true", "maybe")))
        )


def test_config_names_a_measure_and_keeps_the_reserved_types(tmp_path: Path) -> None:
    no_measure = YAML.replace("  mrr_column: mrr\n  seats_column: seats\n", "")
    with pytest.raises(ConfigError, match="mrr_column"):
        load_dataset_config(write_dataset(tmp_path, yaml=no_measure))
    reserved = YAML.replace("  login: {group: activity", f"  {CONTRACT_TYPES[1]}: {{group: activity")
    with pytest.raises(ConfigError, match="reserved for contracts"):
        load_dataset_config(write_dataset(tmp_path, yaml=reserved))


def test_specs_follow_the_measures_named() -> None:
    seats_only = [spec.name for spec in contract_feature_specs(ContractPlan(("seats",), False), [30])]
    assert seats_only == [
        "contract__days_to_renewal",
        "contract__days_since_renewal",
        "contract__seats",
        "contract__seats_change_30d",
        "contract__downgrades_30d",
    ]


def test_a_customer_without_contract_events_gets_missing_contract_features() -> None:
    """Scoring by id reads one customer's history, which may hold no contract event at all."""
    plan = ContractPlan(("mrr",), True)
    population = pd.DataFrame(
        {"customer_id": ["Z"], "observation_date": [pd.Timestamp("2024-05-01 13:45:10")]}
    )
    events = pd.DataFrame(
        {
            "customer_id": ["Z"],
            "timestamp": [pd.Timestamp("2024-04-01")],
            "type": ["login"],
            "value": [np.nan],
        }
    )
    for history in (events, events.iloc[:0]):
        row = contract_features(plan, history, population, [30]).iloc[0]
        assert np.isnan(row["contract__days_to_renewal"]) and np.isnan(row["contract__mrr"])
        assert np.isnan(row["contract__auto_renew_off"]) and row["contract__downgrades_30d"] == 0
