"""Lab fitting: the fold-average final model is one native CatBoost model equal to the mean of its fold
models, explainable with SHAP; fold indices are the ones the search and the final model share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from catboost import CatBoostClassifier, Pool

from churnguard.datasets import load_dataset_config
from churnguard.feature_table import FeatureTable, build_feature_table
from training.config import SearchConfig, SplitConfig, TrainingConfig
from training.fit import CannotAverage, average_models, fit_fixed
from training.splits import fold_indices, make_split


@pytest.fixture(scope="module")
def telco() -> FeatureTable:
    return build_feature_table(load_dataset_config("telco"))


def fold_models(telco: FeatureTable, one_hot_max_size: int) -> tuple[list[CatBoostClassifier], Pool]:
    split = make_split(telco, SplitConfig())
    features = telco.schema.coerce(telco.frame[split.final])
    label = telco.frame.loc[split.final, "label"].to_numpy()
    categorical = telco.schema.categorical_names
    search = SearchConfig(one_hot_max_size=one_hot_max_size)
    params = {"depth": 3, "learning_rate": 0.1}
    models = [
        fit_fixed(params, search, 0, 30, Pool(features.iloc[rows], label[rows], cat_features=categorical))
        for rows, _ in fold_indices(label, None, 3, seed=0)
    ]
    return models, Pool(features.head(300), cat_features=categorical)


def test_fold_average_is_one_model_equal_to_the_mean_of_its_folds(
    telco: FeatureTable, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    models, rows = fold_models(telco, one_hot_max_size=10)
    categorical = telco.schema.categorical_names
    average = average_models(models, rows)

    assert isinstance(average, CatBoostClassifier) and average.tree_count_ == 3 * 30
    mean_raw = np.mean([m.predict(rows, prediction_type="RawFormulaVal") for m in models], axis=0)
    raw = average.predict(rows, prediction_type="RawFormulaVal")
    np.testing.assert_allclose(raw, mean_raw, atol=1e-10)
    np.testing.assert_allclose(average.predict_proba(rows)[:, 1], 1 / (1 + np.exp(-mean_raw)), atol=1e-10)

    # The artifact stores it as one .cbm file; SHAP values still add up to the raw score.
    average.save_model(str(tmp_path / "model.cbm"), format="cbm")
    capfd.readouterr()
    loaded = CatBoostClassifier()
    loaded.load_model(str(tmp_path / "model.cbm"), format="cbm")
    # Loading it says nothing (an empty `params` entry once printed "invalid params" on every load),
    # and the fold models' parameters are kept.
    assert "invalid params" not in "".join(capfd.readouterr())
    assert "model0:params" in set(loaded.get_metadata().keys())
    assert loaded.feature_names_ == telco.schema.names
    assert {loaded.feature_names_[i] for i in loaded.get_cat_feature_indices()} == set(categorical)
    shap = loaded.get_feature_importance(data=rows, type="ShapValues")
    np.testing.assert_allclose(shap.sum(axis=1), raw, atol=1e-8)


def test_fold_models_with_ctr_statistics_are_not_averaged_approximately(telco: FeatureTable) -> None:
    """With one-hot only for binary categoricals, Telco's others get CTR tables per fold model, which
    CatBoost merges only approximately: the final model then falls back to a refit."""
    models, rows = fold_models(telco, one_hot_max_size=2)
    with pytest.raises(CannotAverage, match="cannot average"):
        average_models(models, rows)


def test_folds_are_stratified_disjoint_and_fixed_by_the_seed() -> None:
    label = np.r_[np.ones(300, int), np.zeros(700, int)]
    folds = fold_indices(label, None, 5, seed=7)
    held_out = np.concatenate([rows for _, rows in folds])
    assert np.array_equal(np.sort(held_out), np.arange(1000))  # every row predicted exactly once
    assert all(abs(label[rows].mean() - 0.3) < 0.01 for _, rows in folds)
    again = fold_indices(label, None, 5, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    groups = np.repeat(np.arange(250), 4)  # events rows: four observation dates per customer
    for fit_rows, rows in fold_indices(label, groups, 5, seed=7):
        assert not set(groups[fit_rows]) & set(groups[rows])


def test_cross_validation_is_for_snapshot_data_only() -> None:
    config = TrainingConfig()
    assert config.search.objective == "cross_validation" and config.final.model == "fold_average"
    assert config.search.cross_validated("snapshot") and not config.search.cross_validated("events")
    assert not SearchConfig(objective="holdout").cross_validated("snapshot")


def test_catboost_defaults_as_a_point_of_the_search_space() -> None:
    from training.config import Choices, FloatRange, IntRange, SearchSpace
    from training.fit import CATBOOST_DEFAULTS, default_point

    point = default_point(SearchSpace())
    assert point == {**CATBOOST_DEFAULTS, "iterations": SearchSpace().iterations.high}
    # Clipped into a narrower space; a choice list without the default takes its first choice.
    narrow = SearchSpace(
        depth=IntRange(low=2, high=4),
        learning_rate=FloatRange(low=0.08, high=0.2),
        iterations=IntRange(low=40, high=120),
        border_count=Choices(choices=[32, 64]),
    )
    point = default_point(narrow)
    assert (point["depth"], point["learning_rate"], point["iterations"], point["border_count"]) == (
        4,
        0.08,
        120,
        32,
    )
    assert isinstance(point["depth"], int) and isinstance(point["l2_leaf_reg"], float)
