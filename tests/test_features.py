"""Point-in-time features and labels: exact window arithmetic, no leakage, population and labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnguard.features import (
    EventTypeSpec,
    _sorted_with_order,
    event_feature_specs,
    event_features,
    label_explicit,
    label_inactivity,
    population,
    tenure_days,
)
from churnguard.schema import FeatureSchema

DAY = pd.Timedelta(days=1)
SECOND = pd.Timedelta(seconds=1)
T = pd.Timestamp("2024-03-01")  # observation date: as of midnight at the start of that day
T2 = pd.Timestamp("2024-04-01")  # 31 days later

EVENT_TYPES = {
    "order": EventTypeSpec(group="transactions", has_value=True, label="orders"),
    "login": EventTypeSpec(group="activity", label="logins"),
    "refund": EventTypeSpec(group="payments", has_value=True, label="refunds"),  # never occurs
}


def make_events(rows: list[tuple[str, pd.Timestamp, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "type", "value"])
    return frame.astype({"timestamp": "datetime64[ns]", "value": "float64"})


def make_population(rows: list[tuple[str, pd.Timestamp]], index: list[int] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "observation_date"], index=index)
    return frame.astype({"observation_date": "datetime64[ns]"})


@pytest.fixture
def hand_events() -> pd.DataFrame:
    return make_events(
        [
            ("A", T - SECOND, "order", 5.0),
            ("A", T - 3 * DAY, "order", np.nan),  # counted, but has no value for sum and mean
            ("A", T - 30 * DAY, "order", 10.0),  # exactly on the 30-day boundary: inside [t-30, t)
            ("A", T - 60 * DAY, "order", 20.0),
            ("A", T - 100 * DAY, "order", 40.0),
            ("A", T - 120 * DAY, "order", 8.0),  # first second of the trend baseline
            ("A", T - 120 * DAY - SECOND, "order", 100.0),  # just before the baseline, inside 180 days
            ("A", T - 200 * DAY, "order", 7.0),  # outside every window
            ("A", T, "order", 1000.0),  # exactly at t: in the future as of t
            ("A", T - 1 * DAY, "login", np.nan),
            ("A", T - 2 * DAY, "login", np.nan),
            ("A", T - 1 * DAY, "pageview", 3.0),  # unknown type: ignored
            ("B", T - 10 * DAY, "login", np.nan),
            ("B", T + 5 * DAY, "login", np.nan),
            ("Z", T - DAY, "order", 1.0),  # customer outside the population
        ]
    )


@pytest.fixture
def hand_features(hand_events: pd.DataFrame) -> pd.DataFrame:
    # Shuffled rows and a non-default index: the result must align with them.
    pop = make_population([("A", T2), ("B", T), ("A", T)], index=[12, 10, 11])
    features, _ = event_features(hand_events, pop, EVENT_TYPES)
    assert list(features.index) == [12, 10, 11]
    return features


def test_windowed_order_features_at_t(hand_features: pd.DataFrame) -> None:
    row = hand_features.loc[11]  # A at T
    expected = {
        "order__count_7d": 2,  # t-1s, t-3d
        "order__sum_7d": 5.0,
        "order__mean_7d": 5.0,  # the NaN value is skipped
        "order__count_30d": 3,  # + t-30d exactly
        "order__sum_30d": 15.0,
        "order__mean_30d": 7.5,
        "order__count_90d": 4,  # + t-60d
        "order__sum_90d": 35.0,
        "order__mean_90d": 35.0 / 3,
        "order__count_180d": 7,  # + t-100d, t-120d, t-120d-1s
        "order__sum_180d": 183.0,
        "order__mean_180d": 30.5,
        "order__max_7d": 5.0,
        "order__max_30d": 10.0,
        "order__max_90d": 20.0,
        "order__max_180d": 100.0,
        # 3 events in [t-30, t) against 3 in [t-120, t-30): (3/30) / (3/90)
        "order__trend_30_90": 3.0,
        "order__mom": 3.0,  # 3 in [t-30, t) against 1 (t-60d is exactly on [t-60, t-30)'s start)
        "order__days_since_last": 1 / 86_400,
        "order__last": 5.0,  # t-1s
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-12), name
    assert np.isnan(row["order__previous"])  # the order before the latest (t-3d) had no value


def test_windowed_order_features_a_month_later(hand_features: pd.DataFrame) -> None:
    row = hand_features.loc[12]  # A at T2 = T + 31 days: the event at T now counts
    assert row["order__count_7d"] == 0
    assert row["order__sum_7d"] == 0.0
    assert np.isnan(row["order__mean_7d"])
    assert row["order__count_30d"] == 0
    assert row["order__count_90d"] == 4  # T, T-1s, T-3d, T-30d
    assert row["order__sum_90d"] == pytest.approx(1015.0)
    assert row["order__mean_90d"] == pytest.approx(1015.0 / 3)
    assert row["order__count_180d"] == 8
    assert row["order__sum_180d"] == pytest.approx(1183.0)
    assert row["order__mean_180d"] == pytest.approx(169.0)
    assert row["order__trend_30_90"] == 0.0  # nothing recent against 5 in the baseline
    assert row["order__mom"] == 0.0  # nothing in [T2-30, T2) against 3 in [T2-60, T2-30)
    assert row["order__max_90d"] == 1000.0 and np.isnan(row["order__max_30d"])
    assert row["order__days_since_last"] == pytest.approx(31.0)
    assert (row["order__last"], row["order__previous"]) == (1000.0, 5.0)  # T, then T-1s


def test_logins_and_zero_denominator_trend(hand_features: pd.DataFrame) -> None:
    a_at_t, a_at_t2, b_at_t = hand_features.loc[11], hand_features.loc[12], hand_features.loc[10]
    assert [a_at_t[f"login__count_{w}d"] for w in (7, 30, 90, 180)] == [2, 2, 2, 2]
    assert np.isnan(a_at_t["login__trend_30_90"])  # no logins in the 90 days before the last 30
    assert a_at_t["login__days_since_last"] == 1.0
    assert [a_at_t2[f"login__count_{w}d"] for w in (7, 30, 90, 180)] == [0, 0, 2, 2]
    assert a_at_t2["login__trend_30_90"] == 0.0
    assert a_at_t2["login__days_since_last"] == 32.0
    # B: one login 10 days before t; the one 5 days after t is in the future.
    assert [b_at_t[f"login__count_{w}d"] for w in (7, 30, 90, 180)] == [0, 1, 1, 1]
    assert b_at_t["login__days_since_last"] == 10.0
    assert np.isnan(b_at_t["login__trend_30_90"])
    # B never ordered: zero counts and sums, NaN mean, trend and recency.
    assert b_at_t["order__count_180d"] == 0 and b_at_t["order__sum_180d"] == 0.0
    assert np.isnan(b_at_t["order__mean_180d"])
    assert np.isnan(b_at_t["order__trend_30_90"]) and np.isnan(b_at_t["order__days_since_last"])
    assert b_at_t[["order__max_180d", "order__last", "order__previous", "order__mom"]].isna().all()
    assert np.isnan(a_at_t["login__mom"])  # no logins in [t-60, t-30) to compare with


def test_unknown_types_ignored_and_absent_types_keep_their_columns(hand_features: pd.DataFrame) -> None:
    assert not any(name.startswith("pageview") for name in hand_features.columns)
    refund = hand_features[[name for name in hand_features.columns if name.startswith("refund__")]]
    assert refund.shape[1] == 4 * 4 + 5  # count, sum, mean, max per window; trend, mom, recency, last two
    assert (refund.filter(like="__count_") == 0).all().all()
    assert (refund.filter(like="__sum_") == 0).all().all()
    assert refund.filter(like="__mean_").isna().all().all()
    assert refund.filter(like="__max_").isna().all().all()
    others = ["trend_30_90", "mom", "days_since_last", "last", "previous"]
    assert refund[[f"refund__{name}" for name in others]].isna().all().all()


def test_schema_is_the_same_with_or_without_events(hand_events: pd.DataFrame) -> None:
    pop = make_population([("A", T), ("B", T)])
    full, specs = event_features(hand_events, pop, EVENT_TYPES)
    empty, empty_specs = event_features(hand_events.iloc[:0], pop, EVENT_TYPES)
    assert list(full.columns) == list(empty.columns) == [spec.name for spec in specs]
    assert specs == empty_specs == event_feature_specs(EVENT_TYPES)
    assert (empty.filter(like="__count_") == 0).all().all()
    assert (full.dtypes == "float64").all()


def test_feature_specs_describe_each_column() -> None:
    specs = {spec.name: spec for spec in event_feature_specs(EVENT_TYPES, windows_days=(7, 30))}
    assert specs["order__mean_30d"].model_dump(exclude_none=True) == {
        "name": "order__mean_30d",
        "dtype": "numeric",
        "group": "transactions",
        "kind": "mean",
        "event_type": "order",
        "window_days": 30,
        "label": "orders",
        "nullable": True,
    }
    assert specs["login__trend_30_90"].kind == "trend" and specs["login__trend_30_90"].window_days == 30
    assert specs["login__days_since_last"].window_days is None
    assert specs["login__mom"].kind == "mom" and specs["login__mom"].window_days == 30
    assert specs["order__max_7d"].kind == "max" and specs["order__last"].kind == "last"
    assert specs["order__previous"].window_days is None
    assert specs["login__count_7d"].group == "activity"
    assert not {"login__sum_7d", "login__max_7d", "login__last"} & set(specs)  # logins carry no value
    FeatureSchema(features=list(specs.values()))  # a valid schema


def random_events(rng: np.random.Generator, n_events: int, customers: list[str]) -> pd.DataFrame:
    seconds = rng.integers(0, 400 * 86_400, n_events)
    # A quarter land exactly on a midnight, so window boundaries are hit; some get a fraction of a second.
    on_midnight = rng.random(n_events) < 0.25
    seconds[on_midnight] = seconds[on_midnight] // 86_400 * 86_400
    nanoseconds = np.where(rng.random(n_events) < 0.1, rng.integers(1, 1_000_000_000, n_events), 0)
    values = rng.gamma(2.0, 30.0, n_events).round(2)
    values[rng.random(n_events) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "customer_id": rng.choice(customers, n_events),
            "timestamp": pd.Timestamp("2023-01-01")
            + pd.to_timedelta(seconds, unit="s")
            + pd.to_timedelta(nanoseconds, unit="ns"),
            "type": rng.choice(["order", "login", "pageview"], n_events),
            "value": values,
        }
    )


OBSERVATION_DATES = list(pd.date_range("2023-03-01", periods=5, freq="61D"))


def random_population(customers: list[str]) -> pd.DataFrame:
    return make_population([(customer, date) for date in OBSERVATION_DATES for customer in customers])


def naive_features(events: pd.DataFrame, customer: str, as_of: pd.Timestamp) -> dict[str, float]:
    """Straight from the definitions, one row at a time: the reference the fast engine must match."""
    expected: dict[str, float] = {}
    for event_type, spec in EVENT_TYPES.items():
        mine = events[(events.customer_id == customer) & (events.type == event_type)]
        past = mine[mine.timestamp < as_of]

        def between(start_days: int, end_days: int, past: pd.DataFrame = past) -> pd.DataFrame:
            return past[
                (past.timestamp >= as_of - start_days * DAY) & (past.timestamp < as_of - end_days * DAY)
            ]

        for window in (7, 30, 90, 180):
            in_window = between(window, 0)
            expected[f"{event_type}__count_{window}d"] = len(in_window)
            if spec.has_value:
                expected[f"{event_type}__sum_{window}d"] = in_window.value.sum()
                expected[f"{event_type}__mean_{window}d"] = in_window.value.mean()
                expected[f"{event_type}__max_{window}d"] = in_window.value.max()
        recent, baseline = len(between(30, 0)), len(between(120, 30))
        expected[f"{event_type}__trend_30_90"] = (recent / 30) / (baseline / 90) if baseline else np.nan
        previous_month = len(between(60, 30))
        expected[f"{event_type}__mom"] = recent / previous_month if previous_month else np.nan
        last = past.timestamp.max()
        expected[f"{event_type}__days_since_last"] = (as_of - last) / DAY if len(past) else np.nan
        if spec.has_value:
            # By day, and within a day in input order (the documented tie rule).
            in_order = past.assign(day=past.timestamp.dt.floor("D")).sort_values("day", kind="stable")
            expected[f"{event_type}__last"] = in_order.value.iloc[-1] if len(past) >= 1 else np.nan
            expected[f"{event_type}__previous"] = in_order.value.iloc[-2] if len(past) >= 2 else np.nan
    return expected


def test_matches_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(7)
    customers = [f"C{number:03d}" for number in range(25)]
    events = random_events(rng, 3_000, customers)
    pop = random_population(customers)
    features, _ = event_features(events, pop, EVENT_TYPES)
    expected = pd.DataFrame(
        [naive_features(events, row.customer_id, row.observation_date) for row in pop.itertuples()],
        index=pop.index,
    )[features.columns]
    assert features.filter(like="__count_").sum().sum() > 1_000  # the data really fills the windows
    recency = [name for name in features.columns if name.endswith("days_since_last")]
    pd.testing.assert_frame_equal(
        features.drop(columns=recency), expected.drop(columns=recency).astype("float64"), rtol=1e-9
    )
    # Recency is kept to the whole second.
    pd.testing.assert_frame_equal(features[recency], expected[recency], rtol=0, atol=1 / 86_400)


def test_no_leakage_from_events_at_or_after_the_observation_date() -> None:
    rng = np.random.default_rng(11)
    customers = [f"C{number:03d}" for number in range(200)]
    events = random_events(rng, 20_000, customers)
    pop = random_population(customers)
    for as_of in OBSERVATION_DATES:
        rows = pop[pop.observation_date == as_of]
        before, _ = event_features(events, rows, EVENT_TYPES)
        n_future = 20_000
        future = random_events(rng, n_future, [*customers, "NEW"])
        future["timestamp"] = as_of + pd.to_timedelta(rng.integers(0, 300 * 86_400, n_future), unit="s")
        future.loc[: n_future // 4, "timestamp"] = as_of  # many exactly at t
        after, _ = event_features(pd.concat([events, future], ignore_index=True), rows, EVENT_TYPES)
        assert (after.index == rows.index).all()
        pd.testing.assert_frame_equal(after, before, check_exact=True)
        # The same future events do move the features one day later: they were really there.
        next_day = rows.assign(observation_date=as_of + DAY)
        moved, _ = event_features(pd.concat([events, future], ignore_index=True), next_day, EVENT_TYPES)
        assert not moved.equals(event_features(events, next_day, EVENT_TYPES)[0])


def test_categorical_columns_give_the_same_features() -> None:
    rng = np.random.default_rng(3)
    customers = [f"C{number:03d}" for number in range(40)]
    events = random_events(rng, 5_000, customers)
    pop = random_population(customers)
    expected, _ = event_features(events, pop, EVENT_TYPES)
    # Categories in another order, with extra and missing ones: codes must be remapped, not trusted.
    as_categories = events.astype(
        {
            "customer_id": pd.CategoricalDtype([*reversed(customers), "unused"]),
            "type": pd.CategoricalDtype(["pageview", "refund", "login", "order"]),
        }
    )
    got, _ = event_features(as_categories, pop, EVENT_TYPES)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_sort_order_is_stable_on_both_paths() -> None:
    keys = np.array([7, 3, 7, 3, 0, 7], dtype=np.int64)
    assert_sorted_stably(keys)
    assert_sorted_stably(np.where(keys == 7, 2**61, keys))  # too large to pack the row number: argsort


def assert_sorted_stably(keys: np.ndarray) -> None:
    sorted_keys, order = _sorted_with_order(keys.copy())
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(sorted_keys, np.sort(keys))


def test_rejects_bad_observation_dates_windows_and_ids(hand_events: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="midnight"):
        event_features(hand_events, make_population([("A", T + SECOND)]), EVENT_TYPES)
    with pytest.raises(ValueError, match="windows_days"):
        event_features(hand_events, make_population([("A", T)]), EVENT_TYPES, windows_days=(7, 7))
    with pytest.raises(ValueError, match="missing customer_id"):
        event_features(hand_events, make_population([("A", T), (None, T)]), EVENT_TYPES)


# ---------------------------------------------------------------------------------------------------------
# Population, labels, tenure

FEB, MAR, APR = pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")


@pytest.fixture
def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D", "E", "F", "G"],
            "signup_date": pd.to_datetime(
                ["2024-01-01", "2024-03-01", None, "2023-06-01", "2023-06-01", "2025-01-01", "2023-01-01"]
            ),
        }
    )


@pytest.fixture
def churn_dates() -> pd.Series:
    return pd.Series(
        [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-15 10:30"), pd.Timestamp("2024-03-31"), pd.NaT],
        dtype="datetime64[ns]",
        index=pd.Index(["D", "E", "G", "A"], name="customer_id"),
    )


def pairs(pop: pd.DataFrame) -> set[tuple[str, str]]:
    return {(row.customer_id, row.observation_date.strftime("%m-%d")) for row in pop.itertuples()}


def test_population_excludes_not_yet_signed_up_and_already_churned(customers, churn_dates) -> None:
    pop = population(customers, [MAR, FEB, APR], churn_dates)
    assert pairs(pop) == {
        ("A", "02-01"), ("A", "03-01"), ("A", "04-01"),  # signed up before, churn NaT
        ("B", "04-01"),  # signed up on Mar 1: not yet a customer as of that midnight
        ("C", "02-01"), ("C", "03-01"), ("C", "04-01"),  # unknown signup: always present
        ("D", "02-01"),  # churned on Mar 1: gone as of Mar 1
        ("E", "02-01"), ("E", "03-01"),  # churned Mar 15
        ("G", "02-01"), ("G", "03-01"),  # churned Mar 31
        # F signs up in 2025: never
    }  # fmt: skip
    assert list(pop.columns) == ["customer_id", "observation_date"]
    assert pop.observation_date.is_monotonic_increasing
    assert pop.observation_date.dtype == "datetime64[ns]"
    # Without churn dates everyone signed up is present.
    assert pairs(population(customers, [APR], None)) == {(customer, "04-01") for customer in "ABCDEG"}


def test_label_explicit_churn_within_horizon(customers, churn_dates) -> None:
    pop = population(customers, [FEB, MAR, APR], churn_dates)
    labels = label_explicit(pop, churn_dates, horizon_days=30)
    assert labels.name == "label" and labels.index.equals(pop.index)
    assert pairs(pop[labels == 1]) == {
        ("D", "02-01"),  # Mar 1 is within (Feb 1, Mar 2]
        ("E", "03-01"),  # Mar 15 (the day counts, not the time)
        ("G", "03-01"),  # Mar 31 = Mar 1 + 30 days: the horizon's last day is included
    }
    assert set(labels.unique()) == {0, 1}


def test_label_inactivity_looks_forward_from_midnight() -> None:
    pop = make_population([("A", MAR), ("B", MAR), ("C", MAR), ("D", MAR), ("E", MAR)], index=[5, 4, 3, 2, 1])
    events = make_events(
        [
            ("A", MAR, "login", np.nan),  # exactly at t: active
            ("B", MAR + 30 * DAY, "login", np.nan),  # exactly at t + horizon: outside [t, t+30)
            ("C", MAR - SECOND, "order", 1.0),  # before t: does not count
            ("D", MAR + 30 * DAY - SECOND, "order", 1.0),  # last second of the horizon
            ("X", MAR + DAY, "login", np.nan),  # other customer
        ]
    )
    labels = label_inactivity(pop, events, horizon_days=30)
    assert labels.to_dict() == {5: 0, 4: 1, 3: 1, 2: 0, 1: 1}


def test_tenure_days(customers) -> None:
    pop = make_population([("A", MAR), ("C", MAR), ("G", FEB)])
    assert tenure_days(pop, customers).tolist()[::2] == [60.0, 396.0]
    assert np.isnan(tenure_days(pop, customers).iloc[1])


def test_running_sums_for_one_history_are_pandas_bits() -> None:
    """The small-history running sums replay pandas' compensated groupby cumsum bit for bit: a
    customer scored alone by id must get the offline table's sums, not ones a last bit away."""
    from churnguard.features import _compensated_running_sums

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 2_000))
        values = rng.choice([0.0, 1e16, -5e15, 97.0, 0.1, 3.3333], n) * rng.random(n) ** rng.integers(0, 3)
        blocks = np.sort(rng.integers(0, 20, n))
        expected = pd.Series(values).groupby(blocks, sort=False).cumsum().to_numpy()
        assert np.array_equal(_compensated_running_sums(values, blocks), expected)
