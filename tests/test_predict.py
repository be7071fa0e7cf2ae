"""The predictor on a small real CatBoost model: probabilities, input rules, reasons, group scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from catboost import Pool
from model_fixtures import telco_artifact_dir, telco_rows, telco_table

from churnguard.explain import MISSING_CATEGORY, LeafShapTables, describe
from churnguard.inputs import InputError, InputRules
from churnguard.predict import Predictor
from churnguard.schema import FeatureSchema, FeatureSpec


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "7")


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return telco_rows(600, seed=3)


def record(rows: pd.DataFrame, position: int = 0) -> dict:
    values = rows.iloc[position].to_dict()
    return {
        name: (None if isinstance(value, float) and math.isnan(value) else value)
        for name, value in values.items()
    }


# ------------------------------------------------------------------------------------ probabilities


def test_batch_probabilities_equal_the_artifacts_own(predictor: Predictor, rows: pd.DataFrame) -> None:
    expected = predictor.artifact.probability(rows)
    for explain in (False, True):
        batch = predictor.score_frame(rows, explain=explain)
        np.testing.assert_allclose(batch.probability, expected, rtol=0, atol=1e-12)
        assert batch.customer_ids == rows["customer_id"].tolist()
        np.testing.assert_array_equal(batch.health, predictor.artifact.health(expected))
        np.testing.assert_array_equal(batch.tier, predictor.artifact.tiers(expected))


def test_single_record_scores_like_the_batch(predictor: Predictor, rows: pd.DataFrame) -> None:
    batch = predictor.score_frame(rows.head(20))
    for position in range(20):
        single = predictor.score_record(record(rows, position))
        result, expected = single.results()[0], batch.results()[position]
        assert result["churn_probability"] == pytest.approx(expected["churn_probability"], abs=1e-12)
        assert result["health_score"] == expected["health_score"]
        assert result["alert_tier"] == expected["alert_tier"]
        assert [r["feature"] for r in result["reasons"]] == [r["feature"] for r in expected["reasons"]]
        assert result["group_scores"] == expected["group_scores"]
        assert result["model_version"] == "7"


def test_customer_id_does_not_change_the_score(predictor: Predictor, rows: pd.DataFrame) -> None:
    base = record(rows, 4)
    renamed = {**base, "customer_id": "someone-else"}
    first, second = predictor.score_record(base), predictor.score_record(renamed)
    assert first.probability[0] == second.probability[0]
    assert second.customer_ids == ["someone-else"]


def test_health_and_tier_follow_the_documented_mapping(predictor: Predictor, rows: pd.DataFrame) -> None:
    batch = predictor.score_frame(rows, explain=False)
    thresholds = predictor.contract.thresholds
    high = batch.probability >= thresholds.high
    assert (batch.tier[high] == "high").all() and (batch.health[high] < 30).all()
    low = batch.probability < thresholds.medium
    assert (batch.tier[low] == "low").all() and (batch.health[low] >= 60).all()
    order = np.argsort(batch.probability)
    assert (np.diff(batch.health[order]) <= 0).all()  # health never rises with the probability


# ------------------------------------------------------------------------------------------ SHAP


def test_leaf_tables_equal_catboost_shap_values(predictor: Predictor, rows: pd.DataFrame) -> None:
    model = predictor.artifact.model
    tables = LeafShapTables.from_model(model)
    pool = Pool(predictor.schema.coerce(rows), cat_features=predictor.cat_indices)
    expected = model.get_feature_importance(data=pool, type="ShapValues")
    leaves = model.calc_leaf_indexes(pool)
    for count in (1, 7, len(rows)):  # the small-batch gather and the per-slot loop
        np.testing.assert_allclose(
            tables.contributions(leaves[:count]), expected[:count, :-1], rtol=0, atol=1e-9
        )
    assert tables.expected_value == pytest.approx(expected[0, -1], abs=1e-9)
    assert predictor.explain_method == "leaf_tables"


def test_leaf_tables_match_catboost_on_combination_ctrs() -> None:
    # Longer training makes CatBoost build CTRs over feature combinations (with float and one-hot
    # parts); CatBoost credits such a split to the categorical features of the combination only.
    from catboost import CatBoostClassifier

    from churnguard.explain import _model_json

    frame, schema = telco_table().frame.sample(1500, random_state=1), telco_table().schema
    model = CatBoostClassifier(
        iterations=200, depth=6, learning_rate=0.1, verbose=False, thread_count=2, random_seed=0
    )
    model.fit(Pool(schema.coerce(frame), frame["label"], cat_features=schema.categorical_names))
    combinations = [
        ctr
        for ctr in _model_json(model)["features_info"]["ctrs"]
        if sum(e["combination_element"] == "cat_feature_value" for e in ctr["elements"]) > 1
    ]
    assert combinations, "the model should hold combination CTRs for this test to mean anything"
    tables = LeafShapTables.from_model(model)
    pool = Pool(schema.coerce(telco_rows(300, seed=1)), cat_features=schema.categorical_names)
    expected = model.get_feature_importance(data=pool, type="ShapValues")
    np.testing.assert_allclose(
        tables.contributions(model.calc_leaf_indexes(pool)), expected[:, :-1], atol=1e-9
    )


def test_reasons_are_the_largest_contributions(predictor: Predictor, rows: pd.DataFrame) -> None:
    batch = predictor.score_frame(rows.head(50))
    pool = Pool(predictor.schema.coerce(rows.head(50)), cat_features=predictor.cat_indices)
    shap = predictor.artifact.model.get_feature_importance(data=pool, type="ShapValues")[:, :-1]
    names = predictor.schema.names
    for row, reasons in enumerate(batch.reasons):
        assert len(reasons) == 3
        expected = [names[j] for j in np.argsort(-np.abs(shap[row]), kind="stable")[:3]]
        assert {r["feature"] for r in reasons} == set(expected)
        impacts = [abs(r["impact"]) for r in reasons]
        assert impacts == sorted(impacts, reverse=True)
        for reason in reasons:
            spec = predictor.schema[reason["feature"]]
            assert reason["group"] == spec.group
            assert reason["impact"] == pytest.approx(shap[row, names.index(spec.name)], abs=1e-4)
            direction = "raises_risk" if reason["impact"] > 0 else "lowers_risk"
            assert reason["code"] == f"{direction}:{spec.name}"
            assert reason["message"]


def test_group_scores_follow_their_definition(predictor: Predictor, rows: pd.DataFrame) -> None:
    batch = predictor.score_frame(rows.head(30))
    pool = Pool(predictor.schema.coerce(rows.head(30)), cat_features=predictor.cat_indices)
    shap = predictor.artifact.model.get_feature_importance(data=pool, type="ShapValues")
    groups = predictor.schema.by_group()
    assert batch.group_names == list(groups)
    for column, members in enumerate(groups.values()):
        index = [predictor.schema.names.index(name) for name in members]
        raw = shap[:, -1] + shap[:, index].sum(axis=1)
        np.testing.assert_array_equal(batch.group_scores[:, column], predictor.health_from_raw(raw))
    # The customers' own health sits where all groups together put them.
    np.testing.assert_array_equal(batch.health, predictor.health_from_raw(shap.sum(axis=1)))


def test_explain_false_skips_reasons_and_group_scores(predictor: Predictor, rows: pd.DataFrame) -> None:
    result = predictor.score_record(record(rows), explain=False).results()[0]
    assert result["reasons"] is None and result["group_scores"] is None
    assert 0 <= result["churn_probability"] <= 1


# -------------------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (
            FeatureSpec(
                name="order__trend_30_90",
                dtype="numeric",
                group="transactions",
                kind="trend",
                event_type="order",
                window_days=30,
                label="orders",
            ),
            0.4,
            "orders down 60% against the previous 90 days",
        ),
        (
            FeatureSpec(
                name="order__trend_30_90",
                dtype="numeric",
                group="transactions",
                kind="trend",
                event_type="order",
                window_days=30,
                label="orders",
            ),
            1.25,
            "orders up 25% against the previous 90 days",
        ),
        (
            FeatureSpec(
                name="order__trend_30_90",
                dtype="numeric",
                group="transactions",
                kind="trend",
                event_type="order",
                window_days=30,
                label="orders",
            ),
            None,
            "no orders in the previous 90 days to compare with",
        ),
        (
            FeatureSpec(
                name="login__days_since_last",
                dtype="numeric",
                group="activity",
                kind="days_since_last",
                event_type="login",
                label="logins",
            ),
            34.2,
            "no logins for 34 days",
        ),
        (
            FeatureSpec(
                name="login__days_since_last",
                dtype="numeric",
                group="activity",
                kind="days_since_last",
                event_type="login",
                label="logins",
            ),
            None,
            "no logins on record",
        ),
        (
            FeatureSpec(
                name="ticket__count_30d",
                dtype="numeric",
                group="service",
                kind="count",
                event_type="ticket",
                window_days=30,
                label="support tickets",
            ),
            5.0,
            "5 support tickets in the last 30 days",
        ),
        (
            FeatureSpec(
                name="login__count_7d",
                dtype="numeric",
                group="activity",
                kind="count",
                event_type="login",
                window_days=7,
                label="logins",
            ),
            0.0,
            "no logins in the last 7 days",
        ),
        (
            FeatureSpec(
                name="payment__sum_90d",
                dtype="numeric",
                group="payments",
                kind="sum",
                event_type="payment",
                window_days=90,
                label="payments",
            ),
            1234.5,
            "payments totalling 1,234.5 in the last 90 days",
        ),
        (
            FeatureSpec(
                name="csat__mean_180d",
                dtype="numeric",
                group="satisfaction",
                kind="mean",
                event_type="csat",
                window_days=180,
                label="CSAT responses",
            ),
            3.25,
            "CSAT responses averaging 3.25 over the last 180 days",
        ),
        (
            FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"),
            45.0,
            "customer for 45 days",
        ),
        (
            FeatureSpec(name="Contract", dtype="categorical", group="relationship"),
            "Month-to-month",
            "Contract is Month-to-month",
        ),
        (
            FeatureSpec(name="Contract", dtype="categorical", group="relationship"),
            MISSING_CATEGORY,
            "Contract is missing",
        ),
        (
            FeatureSpec(name="MonthlyCharges", dtype="numeric", group="transactions"),
            70.0,
            "MonthlyCharges is 70",
        ),
    ],
)
def test_messages_are_phrased_from_the_feature_spec(spec: FeatureSpec, value: object, message: str) -> None:
    assert describe(spec, value) == message


def test_static_numbers_are_placed_among_customers(predictor: Predictor) -> None:
    message = describe(predictor.schema["tenure"], 1.0, predictor.reasons.ranks)
    assert message.startswith("tenure is 1 (lower than ") and message.endswith("% of customers)")


# ------------------------------------------------------------------------------------------ input rules


def errors_of(predictor: Predictor, customer: dict) -> dict[str, str]:
    with pytest.raises(InputError) as caught:
        predictor.score_record(customer)
    return {error.field: error.message for error in caught.value.errors}


def test_missing_unknown_and_mistyped_fields_are_named(predictor: Predictor, rows: pd.DataFrame) -> None:
    customer = record(rows)
    del customer["gender"]
    customer.update({"favourite_colour": "blue", "tenure": "12", "MonthlyCharges": True, "Contract": 3.5})
    errors = errors_of(predictor, customer)
    assert errors == {
        "gender": "missing field",
        "favourite_colour": "unknown field",
        "tenure": "expected a number, got text",
        "MonthlyCharges": "expected a number, got a boolean",
        "Contract": "expected text, got float",
    }


def test_ranges_nulls_and_infinities(predictor: Predictor, rows: pd.DataFrame) -> None:
    tenure = predictor.rules.ranges["tenure"]
    # Training range [0, 72] widened by `range_tolerance` spans (3 by default), never below 0.
    assert predictor.rules.tolerance == 3.0
    widened = tenure.train_max * (1 + predictor.rules.tolerance)
    assert tenure.low == 0 and tenure.high == pytest.approx(widened)
    customer = {**record(rows), "tenure": tenure.high + 1, "MonthlyCharges": math.inf, "Partner": None}
    errors = errors_of(predictor, customer)
    assert errors["tenure"].startswith(f"{tenure.high + 1:g} is outside the accepted range [0, ")
    assert errors["MonthlyCharges"] == "must be finite"
    assert errors["Partner"] == "must not be null (it was never missing in training)"
    assert errors_of(predictor, {**record(rows), "tenure": -1})["tenure"].startswith("-1 is outside")
    assert errors_of(predictor, {**record(rows), "customer_id": ""})["customer_id"].startswith("must be 1 to")


def test_unknown_category_and_out_of_training_range_are_served_and_flagged(
    predictor: Predictor, rows: pd.DataFrame
) -> None:
    tenure = predictor.rules.ranges["tenure"]
    customer = {**record(rows), "Contract": "Ten years", "tenure": tenure.train_max + 1, "SeniorCitizen": 1}
    result = predictor.score_record(customer).results()[0]
    assert {"code": "unknown_category", "field": "Contract"} in result["flags"]
    assert {"code": "outside_training_range", "field": "tenure"} in result["flags"]
    assert len(result["flags"]) == 2  # the integer code 1 is the known category "1"
    assert 0 <= result["churn_probability"] <= 1


def test_overlong_categories_are_refused_not_echoed(predictor: Predictor, rows: pd.DataFrame) -> None:
    huge = "x" * 10_000
    assert errors_of(predictor, {**record(rows), "Contract": huge}) == {
        "Contract": "must be at most 256 characters"
    }
    frame = rows.head(4).copy()
    frame.loc[2, "Contract"] = huge
    checked = predictor.rules.check_frame(frame, first_row=1)
    assert [(e.row, e.field, e.message) for e in checked.errors] == [
        (3, "Contract", "must be at most 256 characters")
    ]
    assert checked.valid.tolist() == [True, True, False, True]


def test_timestamps_in_numeric_columns_are_the_wrong_type(predictor: Predictor, rows: pd.DataFrame) -> None:
    frame = rows.head(3).copy()
    frame["tenure"] = pd.to_datetime(["2025-01-01"] * 3)  # e.g. a Parquet column of the wrong type
    checked = predictor.rules.check_frame(frame, first_row=1)
    assert [(e.row, e.field) for e in checked.errors] == [(1, "tenure"), (2, "tenure"), (3, "tenure")]
    assert all(e.message.startswith("expected a number, got '2025-01-01") for e in checked.errors)
    mixed = rows.head(2).astype(object)
    mixed.loc[1, "tenure"] = pd.Timestamp("2025-01-01")  # one timestamp among numbers
    assert [(e.row, e.field) for e in predictor.rules.check_frame(mixed).errors] == [(1, "tenure")]


def test_frame_checks_name_every_bad_row(predictor: Predictor, rows: pd.DataFrame) -> None:
    text = rows.head(8).astype(str)  # like a CSV read as text
    text.loc[2, "tenure"] = "twelve"
    text.loc[5, "MonthlyCharges"] = "-40"
    text.loc[6, "TotalCharges"] = ""  # blank: missing, allowed because training had missing totals
    text.loc[7, "customer_id"] = ""
    checked = predictor.rules.check_frame(text, first_row=1)
    found = {(error.row, error.field) for error in checked.errors}
    assert found == {(3, "tenure"), (6, "MonthlyCharges"), (8, "customer_id")}
    assert checked.valid.tolist() == [True, True, False, True, True, False, True, False]
    batch = predictor.score_checked(checked, explain=False)
    assert len(batch) == 5
    with pytest.raises(InputError) as caught:
        predictor.score_frame(text.head(3))
    assert [(e.row, e.field) for e in caught.value.errors] == [(2, "tenure")]


def test_frame_missing_and_extra_columns(predictor: Predictor, rows: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="gender: missing column"):
        predictor.score_frame(rows.drop(columns=["gender"]))
    with pytest.raises(InputError, match="label: unknown column"):
        predictor.score_frame(rows.assign(label=1))
    assert len(predictor.score_frame(rows.assign(label=1), allow_extra=True)) == len(rows)


def test_input_records_are_what_was_scored(predictor: Predictor, rows: pd.DataFrame) -> None:
    customer = {**record(rows), "TotalCharges": None}
    batch = predictor.score_record(customer)
    logged = batch.input_records()[0]
    assert logged["TotalCharges"] is None
    assert logged["Contract"] == customer["Contract"]
    assert set(logged) == set(predictor.schema.names)


def test_frame_values_of_the_wrong_kind_are_named_not_raised(
    predictor: Predictor, rows: pd.DataFrame
) -> None:
    frame = rows.head(4).astype(object)
    frame.at[1, "tenure"] = [1, 2]  # e.g. a list column in an uploaded Parquet file
    frame.at[2, "Contract"] = {"a": 1}
    frame.at[3, "MonthlyCharges"] = True
    checked = predictor.rules.check_frame(frame)
    assert [(e.row, e.field, e.message) for e in checked.errors] == [
        (1, "tenure", "expected a number, got [1, 2]"),
        (2, "Contract", "expected text"),
        (3, "MonthlyCharges", "expected a number, got True"),
    ]
    assert checked.valid.tolist() == [True, False, False, False]


def test_tenure_above_its_training_range_is_neither_flagged_nor_refused() -> None:
    """Every customer who stays outgrows the tenure training saw: half of CDNOW's test rows were
    flagged `outside_training_range` on `tenure_days`, which said nothing. Below the range still is."""
    schema = FeatureSchema(
        features=[
            FeatureSpec(
                name="tenure_days", dtype="numeric", group="relationship", kind="tenure", min=30, max=400
            ),
            FeatureSpec(
                name="order__count_30d", dtype="numeric", group="transactions", kind="count", min=0, max=9
            ),
        ]
    )
    rules = InputRules(schema)
    _, _, flags, errors = rules.check_record(
        {"customer_id": "A", "tenure_days": 5_000.0, "order__count_30d": 12.0}
    )
    assert errors == [] and flags == [{"code": "outside_training_range", "field": "order__count_30d"}]
    _, _, flags, errors = rules.check_record(
        {"customer_id": "B", "tenure_days": 10.0, "order__count_30d": 1.0}
    )
    assert errors == [] and flags == [{"code": "outside_training_range", "field": "tenure_days"}]
    frame = pd.DataFrame(
        {"customer_id": ["A", "B"], "tenure_days": [5_000.0, 10.0], "order__count_30d": [1.0, 1.0]}
    )
    checked = rules.check_frame(frame)
    assert checked.errors == [] and checked.flags == [
        [],
        [{"code": "outside_training_range", "field": "tenure_days"}],
    ]
