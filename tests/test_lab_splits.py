"""Lab splits: stratified snapshot splits, out-of-time events splits, customers on one side of test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnguard.datasets import load_dataset_config
from churnguard.feature_table import FeatureTable, build_feature_table
from churnguard.schema import FeatureSchema, FeatureSpec
from training.config import EventsSplit, SnapshotSplit, SplitConfig
from training.splits import events_split, held_out_keys, latest_rows_of, make_split, snapshot_split


@pytest.fixture(scope="module")
def telco() -> FeatureTable:
    return build_feature_table(load_dataset_config("telco"))


def events_frame(customers: int = 400, dates: int = 6, seed: int = 0) -> pd.DataFrame:
    """Every customer at every observation date (30 days apart), with a random label."""
    rng = np.random.default_rng(seed)
    observation = pd.date_range("2025-01-01", periods=dates, freq="30D")
    frame = pd.DataFrame(
        {
            "customer_id": np.tile([f"C{i:04d}" for i in range(customers)], dates),
            "observation_date": np.repeat(observation.to_numpy(), customers),
        }
    )
    frame["label"] = (rng.random(len(frame)) < 0.1).astype("int8")
    frame["logins_30d"] = rng.poisson(5, len(frame)).astype(float)
    return frame


def test_snapshot_split_is_stratified_disjoint_and_complete(telco: FeatureTable) -> None:
    split = make_split(telco, SplitConfig())
    frame = telco.frame
    parts = [split.train, split.validation, split.test]
    assert np.array_equal(np.sum(parts, axis=0), np.ones(len(frame)))  # each row in exactly one part
    overall = frame["label"].mean()
    for part, share in zip(parts, (0.6, 0.2, 0.2), strict=True):
        assert abs(part.mean() - share) < 0.002
        assert abs(frame.loc[part, "label"].mean() - overall) < 0.001  # exact per-class quotas
    assert np.array_equal(split.final, split.train | split.validation)
    assert split.window["split"] == "stratified" and split.window["split_seed"] == "42"


def test_snapshot_split_follows_customers_not_row_order(telco: FeatureTable) -> None:
    config = SnapshotSplit()
    frame = telco.frame
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    original = set(frame.loc[snapshot_split(frame, config, 42).test, "customer_id"])
    reordered = set(shuffled.loc[snapshot_split(shuffled, config, 42).test, "customer_id"])
    other_seed = set(frame.loc[snapshot_split(frame, config, 43).test, "customer_id"])
    assert original == reordered
    assert len(original & other_seed) < 0.35 * len(original)  # a new seed draws a new test set


def test_events_split_is_out_of_time_and_keeps_test_customers_out_of_training() -> None:
    frame = events_frame()
    split = events_split(frame, EventsSplit(test_dates=2, validation_dates=1), seed=42)
    dates = np.sort(frame["observation_date"].unique())
    train_dates = set(frame.loc[split.train, "observation_date"])
    validation_dates = set(frame.loc[split.validation, "observation_date"])
    test_dates = set(frame.loc[split.test, "observation_date"])
    assert train_dates == set(dates[:3]) and validation_dates == {dates[3]} and test_dates == set(dates[4:])
    assert max(train_dates) < min(validation_dates) < min(test_dates)

    test_customers = set(frame.loc[split.test, "customer_id"])
    seen_in_fitting = set(frame.loc[split.train | split.validation | split.final, "customer_id"])
    assert test_customers and not test_customers & seen_in_fitting
    assert 0.22 < len(test_customers) / 400 < 0.38  # the configured 30%, by hash
    # Validation customers are new to the search's training rows, so early stopping rewards generalising.
    assert not set(frame.loc[split.validation, "customer_id"]) & set(frame.loc[split.train, "customer_id"])
    # The final refit uses every non-test customer up to the last validation date.
    assert set(frame.loc[split.final, "observation_date"]) == set(dates[:4])
    assert split.window["test_start"] == str(pd.Timestamp(dates[4]).date())


def test_events_split_needs_enough_dates() -> None:
    with pytest.raises(ValueError, match="at least 4 labelled observation dates"):
        events_split(events_frame(dates=3), EventsSplit(test_dates=2, validation_dates=1), seed=1)


def test_promotion_rows_are_the_test_customers_at_the_latest_dates() -> None:
    frame = events_frame()
    split = events_split(frame, EventsSplit(), seed=42)
    keys = held_out_keys(frame, split)
    assert list(keys.columns) == ["customer_id", "observation_date"] and len(keys) == split.test.sum()
    # New data arrives: one more labelled date. The gate moves to the latest dates, same customers.
    newer = pd.concat([frame, events_frame(dates=7).query("observation_date == observation_date.max()")])
    rows = newer[latest_rows_of(newer, keys, dates=2)]
    assert set(rows["customer_id"]) == set(keys["customer_id"])
    assert set(rows["observation_date"]) == set(np.sort(newer["observation_date"].unique())[-2:])


def test_make_split_dispatches_on_table_kind() -> None:
    frame = events_frame(customers=50)
    schema = FeatureSchema(features=[FeatureSpec(name="logins_30d", dtype="numeric", group="activity")])
    table = FeatureTable("synthetic", "events", frame, schema, horizon_days=30)
    assert make_split(table, SplitConfig(seed=5)).kind == "events"
