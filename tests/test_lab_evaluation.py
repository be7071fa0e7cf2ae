"""Lab calibration and metrics: calibration must reduce ECE; metrics must mean what they say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from catboost import Pool

from churnguard.datasets import load_dataset_config
from churnguard.feature_table import build_feature_table
from training.calibration import fit_calibration, fit_platt, out_of_fold
from training.config import SearchConfig, SplitConfig
from training.evaluation import (
    alert_lead_times,
    classification_metrics,
    expected_calibration_error,
    lead_time_metrics,
    lift_at,
    paired_auc_difference,
    tier_metrics,
)
from training.fit import fit_fixed
from training.splits import make_split


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_out_of_fold_calibration_reduces_ece_on_test(method: str) -> None:
    """Class weighting inflates CatBoost's probabilities; calibration on out-of-fold predictions fixes
    that on test rows it never saw."""
    table = build_feature_table(load_dataset_config("telco"))
    split = make_split(table, SplitConfig())
    features = table.schema.coerce(table.frame)
    label = table.frame["label"].to_numpy()
    categorical = table.schema.categorical_names
    params = {"depth": 4, "learning_rate": 0.1, "auto_class_weights": "Balanced"}
    search = SearchConfig()
    final_features, final_label = features[split.final], label[split.final]

    def fit_and_predict(fit_rows: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        data = Pool(final_features.iloc[fit_rows], final_label[fit_rows], cat_features=categorical)
        return fit_fixed(params, search, 0, 80, data).predict_proba(final_features.iloc[held_out])[:, 1]

    oof = out_of_fold(final_label, None, 3, 0, fit_and_predict)
    assert not np.isnan(oof).any()
    calibration = fit_calibration(oof, final_label, method)
    model = fit_fixed(params, search, 0, 80, Pool(final_features, final_label, cat_features=categorical))
    raw = model.predict_proba(features[split.test])[:, 1]
    raw_ece = expected_calibration_error(raw, label[split.test])
    calibrated_ece = expected_calibration_error(calibration.apply(raw), label[split.test])
    assert raw_ece > 0.08  # balanced weights push the mean probability towards 0.5
    assert calibrated_ece < 0.04
    assert calibrated_ece < raw_ece / 2


def test_platt_recovers_a_known_sigmoid() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 40_000)
    logit = np.log(raw / (1 - raw))
    label = (rng.random(raw.size) < 1 / (1 + np.exp(-(2.0 * logit - 1.0)))).astype(int)
    calibration = fit_platt(raw, label)
    assert calibration.a == pytest.approx(2.0, abs=0.08)
    assert calibration.b == pytest.approx(-1.0, abs=0.08)


def test_ece_and_metrics_of_a_calibrated_and_a_biased_forecast() -> None:
    rng = np.random.default_rng(1)
    probability = rng.uniform(0, 1, 50_000)
    label = (rng.random(probability.size) < probability).astype(int)
    assert expected_calibration_error(probability, label) < 0.01
    assert expected_calibration_error(np.clip(probability + 0.1, 0, 1), label) == pytest.approx(
        0.09, abs=0.01
    )
    metrics = classification_metrics(probability, label, ece_bins=10)
    assert metrics["roc_auc"] == pytest.approx(0.833, abs=0.01)  # AUC of p ~ U(0,1), y ~ Bernoulli(p)
    assert metrics["brier"] == pytest.approx(1 / 6, abs=0.005)
    assert metrics["lift_top_decile"] == pytest.approx(0.95 / 0.5, abs=0.03)


def test_lift_and_tier_metrics_on_a_small_example() -> None:
    probability = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1, 0.1, 0.05, 0.01])
    label = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert lift_at(probability, label, 0.1) == pytest.approx(1 / 0.4)
    tiers = np.array(["high", "high", "medium", "medium", "medium", "low", "low", "low", "low", "low"])
    metrics = tier_metrics(tiers, label)
    assert metrics["precision_high"] == 0.5 and metrics["recall_high"] == 0.25
    assert metrics["precision_medium"] == pytest.approx(2 / 3) and metrics["recall_medium"] == 0.5
    assert metrics["recall_alert"] == 0.75 and metrics["share_alert"] == 0.5


def test_alert_lead_time_counts_from_the_first_high_or_medium_alert() -> None:
    first, second = pd.Timestamp("2025-08-29"), pd.Timestamp("2025-09-28")
    keys = pd.DataFrame(
        {
            "customer_id": ["A", "A", "B", "B", "C", "C", "D"],
            "observation_date": [first, second, first, second, first, second, first],
        }
    )
    tiers = np.array(["medium", "high", "low", "high", "low", "low", "high"])
    label = np.array([1, 1, 0, 1, 0, 1, 0])  # A, B and C churn; D is a false alarm
    churn_dates = pd.Series(pd.to_datetime(["2025-10-20", "2025-10-08", "2025-11-01"]), index=["A", "B", "C"])
    lead = alert_lead_times(keys, tiers, label, churn_dates).set_index("customer_id")
    assert lead.loc["A", "lead_days"] == 52  # a medium alert on the first date already
    assert lead.loc["B", "lead_days"] == 10
    assert np.isnan(lead.loc["C", "lead_days"])  # never alerted
    metrics = lead_time_metrics(lead.reset_index(), days=30)
    assert metrics["alert_coverage"] == pytest.approx(2 / 3)
    assert metrics["lead_time_median_days"] == 31.0 and metrics["lead_time_share_30d"] == 0.5
    assert metrics["alert_coverage_30d"] == pytest.approx(1 / 3)  # of all three churners, A alone


def test_paired_auc_difference_resamples_whole_customers_and_brackets_the_difference() -> None:
    rng = np.random.default_rng(3)
    label_of = (rng.random(400) < 0.4).astype(int)
    signal_of = label_of + rng.normal(0, 1.0, 400)
    worse_of = signal_of + rng.normal(0, 1.0, 400)
    # Every customer at two dates with the same scores: their two rows are one draw, not two.
    customers = np.repeat(np.arange(400), 2)
    label, better, worse = (np.repeat(values, 2) for values in (label_of, signal_of, worse_of))
    found = paired_auc_difference(label, better, worse, customers, resamples=300, seed=1)
    assert found.difference > 0 and found.low < found.difference < found.high and found.resamples == 300
    assert found.low > 0  # this much worse a ranking is outside the noise of 400 customers
    same = paired_auc_difference(label, better, better, customers, resamples=50)
    assert same.difference == same.low == same.high == 0.0  # paired: the same ranking never differs
    assert found.format().startswith(f"{found.difference:+.4f} (95% CI ")
    # Drawn as 800 independent rows, the interval would be about sqrt(2) too narrow.
    by_row = paired_auc_difference(label, better, worse, np.arange(len(label)), resamples=300, seed=1)
    assert by_row.difference == pytest.approx(found.difference)
    assert by_row.sd < 0.85 * found.sd


def test_paired_auc_difference_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="one class"):
        paired_auc_difference(np.ones(6), np.arange(6.0), np.arange(6.0), np.arange(6), resamples=5)
