"""The Spark engine against the pandas engine on simulator data: the same feature table (rows, columns,
dtypes, values to the bit), the same data report, and the same offline scores. One local[2] session for
the module; a real JVM, real Parquet, the real pandas code in Spark's Python workers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from model_fixtures import build_table_artifact

from churnguard import cli
from churnguard.datasets import EventsDataset, load_dataset_config, load_events
from churnguard.feature_table import FeatureTable, events_table
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN
from churnguard.score_file import score_file
from churnguard.settings import PROJECT_ROOT
from churnguard.simulate import SimulationConfig, simulate, write
from churnguard.spark_engine import spark_feature_table, spark_session
from churnguard.spark_score import score_file_on_spark

pytestmark = pytest.mark.slow

CUSTOMERS = 300
NOW = pd.Timestamp("2026-06-01")  # the loaders' "now": fixed, so both engines drop the same future events
KEY = [OBSERVATION_COLUMN, ID_COLUMN]


@pytest.fixture(scope="module")
def spark():
    session = spark_session(
        "local[2]",
        {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.driver.memory": "1g",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[Path]:
    """A simulated CRM in `<state>/sim`, where configs/datasets/crm.yaml reads it."""
    state = tmp_path_factory.mktemp("spark-state")
    before = os.environ.get("CHURNGUARD_STATE_DIR")
    os.environ["CHURNGUARD_STATE_DIR"] = str(state)
    write(simulate(SimulationConfig(customers=CUSTOMERS, days=365, seed=5)), state / "sim")
    yield state
    if before is None:
        os.environ.pop("CHURNGUARD_STATE_DIR", None)
    else:
        os.environ["CHURNGUARD_STATE_DIR"] = before


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def pandas_table(config: EventsDataset, tmp_path: Path) -> FeatureTable:
    """The pandas engine's table as a file gives it back (the form both engines hand to users)."""
    table = events_table(config, load_events(config, now=NOW))
    FeatureTable.write(table, tmp_path / "pandas.parquet")
    read = FeatureTable.read(tmp_path / "pandas.parquet")
    read.report = table.report
    return read


def test_spark_builds_the_pandas_engines_table_exactly(spark, world: Path, tmp_path: Path, capsys) -> None:
    config = load_dataset_config("crm")
    assert isinstance(config, EventsDataset)
    expected = pandas_table(config, tmp_path)
    out = tmp_path / "crm.spark"
    # 60 customers a bucket: 5 buckets, so customers of one bucket never see another's events.
    argv = [
        "features",
        "--dataset",
        "crm",
        "--engine",
        "spark",
        "--out",
        str(out),
        "--customers-per-bucket",
        "60",
    ]
    code = cli.main(argv)
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = FeatureTable.read(out)

    assert table.schema == expected.schema
    assert (table.dataset, table.kind, table.horizon_days) == ("crm", "events", config.horizon_days)
    assert list(table.frame.columns) == list(expected.frame.columns)
    assert table.frame.dtypes.to_dict() == expected.frame.dtypes.to_dict()
    assert len(table.frame) == len(expected.frame) > 1000
    # The same code on the same events in the same order: equal to the last bit, NaNs in the same places.
    pd.testing.assert_frame_equal(sorted_frame(table.frame), sorted_frame(expected.frame), check_exact=True)
    label_rate = expected.frame["label"].mean()
    assert f"wrote {len(expected.frame):,} rows x {len(expected.schema.features)} features" in printed
    assert "5 buckets" in printed and f"label rate {label_rate:.1%}" in printed
    assert set(expected.report.format().splitlines()) <= set(printed.splitlines())
    assert spark.sparkContext._jsc is not None  # the command left the session it did not start running


def test_rows_the_loader_drops_are_counted_the_same_on_spark(spark, world: Path, tmp_path: Path) -> None:
    """Bad rows of a file: the same drops, counts and example rows in both engines' reports."""
    events = pd.read_parquet(world / "sim" / "events.parquet")
    customers = pd.read_parquet(world / "sim" / "customers.parquet")
    first = customers.iloc[0]
    bad = pd.DataFrame(
        {
            "customer_id": ["  ", "NOBODY", "NOBODY", first["customer_id"], first["customer_id"]],
            "timestamp": pd.to_datetime(
                ["2025-03-01", "2025-03-02", "2025-03-03", "2027-01-01", "1999-01-01"]
            ),
            "type": ["login", "login", "order", "login", "login"],
            "value": [np.nan, np.nan, 10.0, np.nan, np.nan],
        }
    )
    # Bad rows at known places in the file (data rows 11-15), and a type the config does not know.
    mixed = pd.concat([events.iloc[:10], bad, events.iloc[10:]], ignore_index=True)
    mixed.loc[mixed.index[-3:], "type"] = "fax"
    mixed.to_parquet(tmp_path / "events.parquet", index=False)
    document = yaml.safe_load((PROJECT_ROOT / "configs" / "datasets" / "crm.yaml").read_text())
    document["name"] = "crm-bad-rows"
    document["events"][0]["path"] = str(tmp_path / "events.parquet")
    document["customers"]["path"] = str(world / "sim" / "customers.parquet")
    # A customers date counted from each observation date (a date after it reads as missing).
    document["customers"]["date_columns"] = {"signup_date": {"derive": "age_years"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(document))
    config = load_dataset_config(tmp_path / "bad.yaml")
    assert isinstance(config, EventsDataset)

    expected = pandas_table(config, tmp_path)
    built = spark_feature_table(config, tmp_path / "spark", spark, customers_per_bucket=100, now=NOW)
    issues = [(i.level, i.column, i.message, i.rows, i.examples) for i in built.report.issues]
    assert issues == [(i.level, i.column, i.message, i.rows, i.examples) for i in expected.report.issues]
    counts = {i.message.split(";")[0].split(" (")[0]: i.rows for i in built.report.issues}
    assert (
        counts.pop("event types not in `event_types` are not used for features") >= 3
    )  # the simulator's too
    assert counts == {
        "events without a customer id": 1,
        "events in the future": 1,
        "events of customers not in " + str(world / "sim" / "customers.parquet"): 2,
        "events before the customer's signup date": 1,
    }
    assert built.report.rows_dropped == expected.report.rows_dropped
    table = FeatureTable.read(tmp_path / "spark")
    assert table.frame["age_years_signup_date"].notna().any()
    pd.testing.assert_frame_equal(sorted_frame(table.frame), sorted_frame(expected.frame), check_exact=True)


def test_spark_scores_a_file_like_churnguard_score(spark, world: Path, tmp_path: Path) -> None:
    config = load_dataset_config("crm")
    table = events_table(config, load_events(config, now=NOW))
    model = build_table_artifact(
        tmp_path / "model", table, config, iterations=60, depth=4, model_name="churn-crm"
    )
    rows = table.frame[[ID_COLUMN, *table.schema.names]].sample(n=1500, random_state=3).reset_index(drop=True)
    rows.loc[7, "contract_value"] = -5.0  # fails the input rules: reported by row, not scored
    rows.loc[400, "tenure_days"] = np.nan
    rows.to_parquet(tmp_path / "input.parquet", index=False, row_group_size=400)

    local = score_file(str(model), tmp_path / "input.parquet", tmp_path / "local.parquet", 500, explain=True)
    on_spark = score_file_on_spark(str(model), tmp_path / "input.parquet", tmp_path / "spark", spark, True)
    expected = pd.read_parquet(tmp_path / "local.parquet")
    got = pd.read_parquet(tmp_path / "spark").sort_values("row_number").reset_index(drop=True)

    assert (on_spark.rows_read, on_spark.rows_scored, on_spark.rows_rejected) == (
        local.rows_read,
        local.rows_scored,
        local.rows_rejected,
    )
    assert local.rows_rejected >= 1 and on_spark.tiers == local.tiers
    assert list(got.columns) == list(expected.columns)
    assert got["row_number"].tolist() == expected["row_number"].tolist()
    for column in ["customer_id", "health_score", "alert_tier", "model_tier", "reasons", "flags"]:
        assert got[column].tolist() == expected[column].tolist(), column
    np.testing.assert_array_equal(got["churn_probability"], expected["churn_probability"])
    assert json.loads(got["reasons"][0]) and "message" in json.loads(got["reasons"][0])[0]

    local_errors = pd.read_csv(local.errors_path)
    assert on_spark.errors_path is not None
    parts = [p for p in sorted(on_spark.errors_path.glob("part-*.csv")) if p.stat().st_size]
    spark_errors = pd.concat([pd.read_csv(part) for part in parts], ignore_index=True)
    assert spark_errors.sort_values("row_number").values.tolist() == local_errors.values.tolist()


def test_inactivity_churn_without_a_customers_file(spark, world: Path, tmp_path: Path) -> None:
    """Customers from their first event (found by Spark), labels from inactivity over every event type
    (the simulator's 'churn' events too, which make no feature): the pandas engine's table again."""
    document = yaml.safe_load((PROJECT_ROOT / "configs" / "datasets" / "crm.yaml").read_text())
    document["name"] = "crm-inactivity"
    document["events"][0]["path"] = str(world / "sim" / "events.parquet")
    del document["customers"]
    document["churn"] = {"kind": "inactivity", "inactivity_days": 60}
    (tmp_path / "inactivity.yaml").write_text(yaml.safe_dump(document))
    config = load_dataset_config(tmp_path / "inactivity.yaml")
    assert isinstance(config, EventsDataset)
    assert not set(pd.read_parquet(world / "sim" / "events.parquet")["type"]) <= set(config.event_types)

    expected = pandas_table(config, tmp_path)
    spark_feature_table(config, tmp_path / "spark", spark, customers_per_bucket=100, now=NOW)
    table = FeatureTable.read(tmp_path / "spark")
    assert table.schema == expected.schema and expected.frame["label"].sum() > 0
    pd.testing.assert_frame_equal(sorted_frame(table.frame), sorted_frame(expected.frame), check_exact=True)
