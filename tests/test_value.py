"""Customer value: weighted percentiles with a known answer, components the model lacks, value tiers
and the value x risk priority matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.config import ConfigError, load_file
from churnguard.predict import Predictor
from churnguard.schema import FeatureSchema, FeatureSpec
from churnguard.scoring import ScoringConfig, load_scoring_config
from churnguard.settings import config_dir
from churnguard.value import ValueConfig, ValueModel

SCHEMA = FeatureSchema(
    features=[
        FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"),
        FeatureSpec(name="contract_value", dtype="numeric", group="relationship"),
        FeatureSpec(name="plan", dtype="categorical", group="relationship"),
    ]
)
# Reference customers 1..100 on both components: percentile i/100, value score i/100.
REFERENCE = pd.DataFrame(
    {"tenure_days": np.arange(1.0, 101.0), "contract_value": np.arange(1.0, 101.0), "plan": "basic"}
)


def assess(contract: list[float], tenure: list[float], alert: list[str]):
    model = ValueModel(load_scoring_config().value, SCHEMA, REFERENCE)
    columns = {"contract_value": np.array(contract), "tenure_days": np.array(tenure)}
    return model, model.assess(lambda name: columns[name], np.array(alert))


def test_value_is_the_weighted_mean_of_component_percentiles() -> None:
    model, value = assess([50, 50, np.nan, 100, 10], [100, np.nan, np.nan, 100, 10], ["low"] * 5)
    # contract 40%, tenure 20%; margin and growth are absent, so the weights rescale to 0.6.
    assert value.score[0] == pytest.approx((0.4 * 0.50 + 0.2 * 1.00) / 0.6, abs=1e-4)
    assert value.score[1] == pytest.approx(0.50)  # tenure unknown for this customer: contract alone
    assert np.isnan(value.score[2])
    assert value.score[3] == pytest.approx(1.0) and value.score[4] == pytest.approx(0.1)
    assert model.unused == {
        "margin": "the model has none of margin, profit",
        "growth": "the model has none of order__trend_30_90",
    }


def test_without_contract_value_or_margin_the_value_model_is_inactive_and_says_why() -> None:
    """CDNOW's model has tenure and order growth only: every test customer outgrows the reference's
    tenure, so tenure alone once made them all "high value"."""
    schema = FeatureSchema(
        features=[
            FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"),
            FeatureSpec(name="order__trend_30_90", dtype="numeric", group="transactions", kind="trend"),
        ]
    )
    reference = pd.DataFrame({"tenure_days": np.arange(1.0, 101.0), "order__trend_30_90": 1.0})
    model = ValueModel(load_scoring_config().value, schema, reference)
    columns = {"tenure_days": np.array([500.0, 900.0]), "order__trend_30_90": np.array([1.0, 2.0])}
    value = model.assess(lambda name: columns[name], np.array(["high", "low"]))
    assert value.tier.tolist() == [None, None] and np.isnan(value.score).all()
    assert value.priority.tolist() == [2, 8]  # placed as `missing_value_tier` (medium) says
    described = model.describe()
    assert described["active"] is False and described["components"] == {}
    assert "no contract or margin component" in described["inactive_reason"]
    assert ValueModel(load_scoring_config().value, SCHEMA, REFERENCE).describe()["active"] is True


def test_value_tiers_cut_the_reference_customers_by_share() -> None:
    model, value = assess([50, 100, 10, np.nan], [100, 100, 10, np.nan], ["low"] * 4)
    # top 20% of reference scores (i/100) -> high, next 30% -> medium
    assert model.high_cut == pytest.approx(np.quantile(np.arange(1, 101) / 100, 0.8))
    assert model.medium_cut == pytest.approx(np.quantile(np.arange(1, 101) / 100, 0.5))
    assert value.tier.tolist() == ["medium", "high", "low", None]


def test_priority_comes_from_the_value_by_risk_matrix() -> None:
    alert = ["high", "high", "high", "medium", "medium", "low", "low", "high"]
    contract = [100, 60, 10, 100, 10, 100, 10, np.nan]
    _, value = assess(contract, contract, alert)
    assert value.tier.tolist() == ["high", "medium", "low", "high", "low", "high", "low", None]
    # default matrix; a customer without value sits in the `missing_value_tier` (medium) column
    assert value.priority.tolist() == [1, 2, 4, 3, 7, 6, 9, 2]


def test_the_served_model_returns_value_tier_and_priority() -> None:
    predictor = Predictor.load(telco_artifact_dir(), "local")
    batch = predictor.score_frame(telco_rows(300, seed=5))
    results = batch.results()
    matrix = load_scoring_config().value.priority
    assert {r["value_tier"] for r in results} == {"high", "medium", "low"}
    for result in results:
        assert result["priority"] == matrix[result["alert_tier"]][result["value_tier"]]
        assert 0 <= result["value_score"] <= 1
    described = predictor.metadata()["value"]
    assert described["components"] == {
        "contract": {"feature": "MonthlyCharges", "weight": 0.4},
        "tenure": {"feature": "tenure", "weight": 0.2},
    }
    frame = batch.to_frame()
    assert frame["priority"].tolist() == [r["priority"] for r in results]
    assert frame["value_tier"].tolist() == [r["value_tier"] for r in results]


def test_weights_are_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load((config_dir() / "scoring.yaml").read_text())
    data["value"]["components"] = {"tenure": {"features": ["tenure_days"], "weight": 1.0}}
    data["value"]["requires_any"] = []  # tenure alone, on purpose
    path = tmp_path / "scoring.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = load_file(ScoringConfig, path, environ={})
    model = ValueModel(config.value, SCHEMA, REFERENCE)
    score = model.scores(lambda name: np.array([30.0, 90.0]))
    np.testing.assert_allclose(score, [0.3, 0.9])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"priority": {"high": {"high": 1, "medium": 2}}},
            "priority.high: needs a priority for every value tier",
        ),
        ({"tiers": {"high": 0.6, "medium": 0.5}}, "high + medium must leave room"),
        (
            {"components": {"contract": {"features": ["contract_value"], "weight": 0}}},
            "at least one component",
        ),
        (
            {"components": {"tenure": {"features": ["tenure_days"], "weight": 1}}},
            "requires_any: none of contract, margin is a component",
        ),
    ],
)
def test_bad_value_config_fails_on_load(tmp_path: Path, change: dict, expected: str) -> None:
    data = yaml.safe_load((config_dir() / "scoring.yaml").read_text())
    data["value"].update(change)
    path = tmp_path / "scoring.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as error:
        load_file(ScoringConfig, path, environ={})
    assert str(path) in str(error.value) and "key 'value" in str(error.value)
    assert expected in str(error.value)
    assert ValueConfig().priority["low"]["low"] == 9
