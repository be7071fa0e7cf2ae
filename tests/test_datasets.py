"""Loaders and validation on real files: every problem names file, column and rows; no silent drops."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from churnguard.datasets import DataError, load_dataset_config, load_events, load_snapshot
from churnguard.feature_table import FeatureTable, build_feature_table
from churnguard.validation import validate_dataset

EVENTS_YAML = """
kind: events
name: tiny
events:
  - path: events.csv
    columns: {customer_id: cid, timestamp: ts, type: kind, value: amount}
customers:
  path: customers.csv
  id_column: id
  signup_column: signup
  static_columns: [plan]
event_types:
  login: {group: activity, label: logins}
  order: {group: transactions, has_value: true, label: orders}
observation: {start: 2024-03-01, end: 2024-03-31, every_days: 30}
horizon_days: 30
churn: {kind: explicit, column: churned_on}
checks: {min_positives: 1}  # deliberately tiny: one churner
"""

CUSTOMERS_CSV = """id,signup,plan,churned_on
A,2024-01-01,pro,
B,2024-01-15,basic,2024-03-20
C,2024-02-10,basic,
"""

EVENTS_CSV = """cid,ts,kind,amount
A,2024-01-05 10:00:00,login,
A,2024-02-20 09:00:00,order,120.5
B,2024-02-01 08:00:00,login,
B,2024-03-10 08:00:00,order,30
C,2024-02-11 12:00:00,login,
C,2024-05-20 12:00:00,login,
"""


def write_dataset(
    folder: Path, events: str = EVENTS_CSV, customers: str = CUSTOMERS_CSV, yaml: str = EVENTS_YAML
):
    (folder / "events.csv").write_text(events)
    (folder / "customers.csv").write_text(customers)
    path = folder / "tiny.yaml"
    path.write_text(yaml)
    return path


# ---------------------------------------------------------------------------------------------- snapshot


def test_telco_loads_every_row_and_fixes_total_charges() -> None:
    data = load_snapshot(load_dataset_config("telco"))
    frame = data.frame
    assert len(frame) == 7043  # no row dropped
    assert frame["customer_id"].is_unique
    assert frame["label"].sum() == 1869  # 26.54% churners
    assert frame["TotalCharges"].dtype == "float64"
    assert frame["TotalCharges"].isna().sum() == 11
    assert (frame.loc[frame["TotalCharges"].isna(), "tenure"] == 0).all()
    blank = [issue for issue in data.report.issues if issue.column == "TotalCharges"]
    assert blank and blank[0].rows == 11 and blank[0].level == "warning"
    assert frame["SeniorCitizen"].map(type).eq(str).all()


def test_telco_feature_table_tags_groups() -> None:
    table = build_feature_table(load_dataset_config("telco"))
    assert table.kind == "snapshot"
    assert len(table.frame) == 7043
    assert table.schema["tenure"].group == "relationship"
    assert table.schema["Contract"].dtype == "categorical"
    assert table.schema["MonthlyCharges"].dtype == "numeric"
    assert "customerID" not in table.schema.names and "Churn" not in table.schema.names


def test_snapshot_text_in_numeric_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("id,x,y\n1,5,Yes\n2,abc,No\n3,,No\n")
    (tmp_path / "snap.yaml").write_text(
        "kind: snapshot\nname: snap\nsource: {path: data.csv}\nid_column: id\n"
        "label: {column: y, positive: 'Yes', negative: 'No'}\ntypes: {x: numeric}\n"
        "checks: {min_positives: 1}\n"
    )
    report = validate_dataset(tmp_path / "snap.yaml")
    (issue,) = report.errors
    assert issue.column == "x" and issue.rows == 1 and "expected numbers" in issue.message
    assert issue.examples == ["row 2: 'abc'"]


def test_snapshot_duplicate_ids_and_bad_labels(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("id,x,y\n1,5,Yes\n1,6,No\n3,7,Maybe\n")
    (tmp_path / "snap.yaml").write_text(
        "kind: snapshot\nname: snap\nsource: {path: data.csv}\nid_column: id\n"
        "label: {column: y, positive: 'Yes', negative: 'No'}\n"
    )
    with pytest.raises(DataError) as error:
        load_snapshot(load_dataset_config(tmp_path / "snap.yaml"))
    message = str(error.value)
    assert "column 'id': duplicate customer ids (2 rows); e.g. ['1']" in message
    assert "column 'y'" in message and "row 3" in message


# ---------------------------------------------------------------------------------------------- events


def test_events_load_and_normalise(tmp_path: Path) -> None:
    config = load_dataset_config(write_dataset(tmp_path))
    data = load_events(config, now=pd.Timestamp("2024-12-31"))
    assert list(data.events.columns) == ["customer_id", "timestamp", "type", "value"]
    assert len(data.events) == 6
    assert data.events["timestamp"].dtype == "datetime64[ns]"
    assert data.churn_dates["B"] == pd.Timestamp("2024-03-20")
    assert pd.isna(data.churn_dates["A"])
    assert data.static_columns == ["plan"]
    assert not data.report.issues


def test_events_feature_table_roundtrip(tmp_path: Path) -> None:
    config = load_dataset_config(write_dataset(tmp_path))
    table = build_feature_table(config)
    # B churned 2024-03-20: in the population on 03-01 (label 1) and gone by 03-31.
    rows = table.frame.set_index(["customer_id", "observation_date"])
    assert rows.loc[("B", pd.Timestamp("2024-03-01")), "label"] == 1
    assert ("B", pd.Timestamp("2024-03-31")) not in rows.index
    assert rows.loc[("A", pd.Timestamp("2024-03-01")), "order__count_30d"] == 1
    assert rows.loc[("A", pd.Timestamp("2024-03-01")), "order__sum_30d"] == pytest.approx(120.5)
    assert table.schema["order__count_30d"].group == "transactions"
    assert table.schema["plan"].group == "profile"
    path = table.write(tmp_path / "features.parquet")
    again = FeatureTable.read(path)
    assert again.schema == table.schema
    pd.testing.assert_frame_equal(again.frame, table.frame)


def test_cdnow_is_read_with_leading_zero_ids() -> None:
    data = load_events(load_dataset_config("cdnow"))
    assert len(data.events) == 2 * 69_659
    assert data.events["customer_id"].nunique() == 23_570
    assert data.events["customer_id"].iloc[0] == "00001"
    assert data.churn_dates is None
    assert data.data_end == pd.Timestamp("1998-06-30")


# ---------------------------------------------------------------------------------------------- validation


def issues_by_message(report) -> dict[str, object]:
    return {issue.message: issue for issue in report.issues}


def test_validate_reports_missing_columns(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("cid,ts,kind,amount", "client,ts,kind,amount")
    report = validate_dataset(write_dataset(tmp_path, events=events))
    (issue,) = report.errors
    assert issue.file.endswith("events.csv") and issue.column == "cid"
    assert "missing column" in issue.message and "client" in issue.message


def test_validate_reports_unparseable_timestamps(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("2024-02-20 09:00:00", "yesterday").replace(
        "2024-02-01 08:00:00", "32/13/2024"
    )
    report = validate_dataset(write_dataset(tmp_path, events=events))
    (issue,) = report.errors
    assert issue.column == "ts" and issue.rows == 2
    assert issue.examples == ["row 2: 'yesterday'", "row 3: '32/13/2024'"]


def test_validate_reports_wrong_types(tmp_path: Path) -> None:
    events = EVENTS_CSV.replace("120.5", "lots")
    report = validate_dataset(write_dataset(tmp_path, events=events))
    (issue,) = report.errors
    assert (
        issue.column == "amount"
        and "expected numbers" in issue.message
        and issue.examples == ["row 2: 'lots'"]
    )


def test_validate_reports_duplicate_customer_ids(tmp_path: Path) -> None:
    customers = CUSTOMERS_CSV + "C,2024-02-12,pro,\n"
    report = validate_dataset(write_dataset(tmp_path, customers=customers))
    (issue,) = report.errors
    assert issue.file.endswith("customers.csv") and issue.column == "id" and issue.examples == ["C"]


def test_validate_reports_events_before_signup_and_in_the_future(tmp_path: Path) -> None:
    events = EVENTS_CSV + "C,2024-01-02 00:00:00,login,\nA,2030-01-01 00:00:00,login,\n"
    report = validate_dataset(write_dataset(tmp_path, events=events))
    messages = {issue.message: issue for issue in report.errors}
    before = next(issue for message, issue in messages.items() if "before the customer's signup" in message)
    future = next(issue for message, issue in messages.items() if "in the future" in message)
    assert before.rows == 1 and before.examples == [7]
    assert future.rows == 1 and future.examples == [8]


def test_lenient_load_drops_bad_rows_but_counts_them(tmp_path: Path) -> None:
    events = EVENTS_CSV + "C,2024-01-02 00:00:00,login,\nZ,2024-03-02 00:00:00,login,\nA,not a date,login,\n"
    data = load_events(load_dataset_config(write_dataset(tmp_path, events=events)))
    assert len(data.events) == 6  # the three bad rows are gone ...
    dropped = sum(data.report.rows_dropped.values())
    assert dropped == 3  # ... and counted
    assert all(issue.level == "warning" for issue in data.report.issues)


def test_validate_reports_empty_files(tmp_path: Path) -> None:
    report = validate_dataset(write_dataset(tmp_path, events="cid,ts,kind,amount\n"))
    assert any("empty" in issue.message and issue.file.endswith("events.csv") for issue in report.errors)
    (tmp_path / "events.csv").write_text("")
    report = validate_dataset(tmp_path / "tiny.yaml")
    assert any("cannot be read" in issue.message or "empty" in issue.message for issue in report.errors)


def test_validate_clean_dataset_has_no_errors(tmp_path: Path) -> None:
    report = validate_dataset(write_dataset(tmp_path))
    assert not report.errors
    assert "no problems found" in report.format()


def test_observation_dates_past_the_data_are_reported_not_labelled(tmp_path: Path) -> None:
    yaml = EVENTS_YAML.replace("end: 2024-03-31", "end: 2024-04-30")
    config = load_dataset_config(write_dataset(tmp_path, yaml=yaml))
    table = build_feature_table(config)
    assert sorted(table.frame["observation_date"].unique()) == [
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-03-31"),
    ]
    (issue,) = [issue for issue in table.report.issues if issue.column == "observation"]
    assert issue.examples == ["2024-04-30"] and issue.file.endswith("tiny.yaml")
