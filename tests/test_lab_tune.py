"""`run_tune` end to end on Telco with a small real study: cross-validated trials tracked as nested
MLflow runs, a registered challenger (the average of the fold models) whose artifact loads, validates
and explains, and the same metrics for the same seed."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from catboost import Pool
from mlflow import MlflowClient

from churnguard.artifact import ModelArtifact, ModelContract
from churnguard.datasets import config_hash, load_dataset_config
from churnguard.tracking import CHALLENGER, resolve_model
from training.tune import TuneResult, run_tune

pytestmark = pytest.mark.slow

TRIALS = 4


@pytest.fixture(scope="module")
def tuned(lab_module_store: dict[str, str]) -> TuneResult:
    return run_tune("telco", trials=TRIALS, timeout=None, storage=None, study="telco-lab-test", seed=11)


def test_tune_tracks_every_trial_as_a_nested_run(tuned: TuneResult) -> None:
    assert tuned.trials_run == TRIALS and tuned.trials_finished == TRIALS
    assert tuned.best_value is not None and 0.8 < tuned.best_value < 0.95
    assert set(tuned.best_params) == {
        "depth",
        "learning_rate",
        "l2_leaf_reg",
        "iterations",
        "border_count",
        "random_strength",
        "bagging_temperature",
        "auto_class_weights",
    }
    client = MlflowClient()
    parent = client.get_run(tuned.parent_run_id)
    trials = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'",
    )
    assert len(trials) == TRIALS
    assert {"metrics.validation_auc", "metrics.fit_seconds", "metrics.pruned", "params.depth"} <= set(trials)
    assert (trials["metrics.fit_seconds"] > 0).all()
    completed = trials[trials["metrics.pruned"] == 0]
    assert completed["metrics.validation_auc"].max() == pytest.approx(tuned.best_value)
    # Cross-validated (conftest: 3 folds): a completed trial scores the mean of its folds; a pruned one
    # stopped after a fold before the last.
    folds = [f"metrics.validation_auc_fold{k}" for k in (1, 2, 3)]
    assert (completed["metrics.folds_fitted"] == 3).all()
    np.testing.assert_allclose(completed[folds].mean(axis=1), completed["metrics.validation_auc"], rtol=1e-9)
    pruned = trials[trials["metrics.pruned"] == 1]
    assert pruned["metrics.folds_fitted"].between(1, 2).all()

    assert parent.data.params["best_depth"] == str(tuned.best_params["depth"])
    # `best_iterations` is the best trial's early-stopped count, not the search's iteration ceiling.
    best_trial = completed.loc[completed["metrics.validation_auc"].idxmax()]
    assert parent.data.params["iterations_ceiling"] == str(tuned.best_params["iterations"])
    assert parent.data.params["best_iterations"] == str(int(best_trial["metrics.best_iterations"]))
    assert parent.data.metrics["best_iterations"] == best_trial["metrics.best_iterations"]
    assert 1 <= parent.data.metrics["best_iterations"] <= tuned.best_params["iterations"]
    assert parent.data.params["objective"] == "cross_validation" and parent.data.params["folds"] == "3"
    assert parent.data.tags["dataset_hash"] == config_hash(load_dataset_config("telco"))
    assert len(parent.data.tags["git_commit"]) in (7, 40) or parent.data.tags["git_commit"] == "unknown"
    assert parent.data.tags["version.catboost"].startswith("1.")
    artifacts = {a.path for a in client.list_artifacts(tuned.parent_run_id, "plots")}
    for plot in ("optimisation_history", "roc", "precision_recall", "calibration", "lift_gains",
                 "shap_summary", "feature_importance", "tier_confusion"):  # fmt: skip
        assert f"plots/{plot}.png" in artifacts
    assert {a.path for a in client.list_artifacts(tuned.parent_run_id, "dataset")} >= {"dataset/telco.yaml"}
    assert parent.data.metrics["test_roc_auc"] == pytest.approx(tuned.test_metrics["test_roc_auc"])


def test_tune_registers_a_challenger_whose_artifact_loads_and_validates(tuned: TuneResult) -> None:
    assert tuned.finalized and tuned.model_name == "churn-telco" and tuned.model_version == "1"
    client = MlflowClient()
    version = client.get_model_version_by_alias("churn-telco", CHALLENGER)
    assert str(version.version) == "1"
    assert version.tags["dataset"] == "telco" and float(version.tags["test_roc_auc"]) > 0.8

    resolved = resolve_model("models:/churn-telco@challenger")
    artifact = ModelArtifact.load(resolved.local_dir)
    contract = ModelContract.model_validate(artifact.contract.model_dump(by_alias=True))
    assert contract.dataset_hash == config_hash(load_dataset_config("telco"))
    assert contract.calibration.method == "platt"
    assert 0 < contract.thresholds.medium <= contract.thresholds.high < 1
    assert contract.health.anchors[1][1] == 60 and contract.health.anchors[2][1] == 30
    assert contract.schema_["Contract"].categories == ["Month-to-month", "One year", "Two year"]
    assert contract.schema_["tenure"].min == 0 and contract.schema_["tenure"].max == 72
    assert contract.training_window["split"] == "stratified"
    metrics = contract.metrics
    assert 0.80 < metrics["test_roc_auc"] < 0.9
    assert metrics["test_ece"] < 0.06 and 0.1 < metrics["test_brier"] < 0.2
    assert metrics["test_lift_top_decile"] > 2.0
    assert {"test_precision_high", "test_recall_high", "test_precision_medium", "test_pr_auc"} <= set(metrics)
    assert contract.params["iterations"] >= 1 and contract.params["random_seed"] == 11
    # One native CatBoost model: the average of the 3 fold models, so 3 x iterations trees.
    assert contract.params["final_model"] == "fold_average" and contract.params["folds"] == 3
    assert artifact.model.tree_count_ == 3 * contract.params["iterations"]
    assert 0.8 < metrics["test_roc_auc_out_of_fold"] < 0.9

    reference = artifact.reference
    assert 0 < len(reference) <= 500
    assert {"prediction", "alert_tier", *artifact.schema.names} <= set(reference.columns)
    np.testing.assert_allclose(reference["prediction"], artifact.probability(reference), rtol=1e-9)
    assert set(reference["alert_tier"]) <= {"high", "medium", "low"}
    model_folder = Path(resolved.local_dir)
    assert (model_folder / "artifacts" / "churnguard" / "model_card.md").is_file()
    assert (model_folder / "pyfunc_model.py").is_file()  # models from code: the model is source, not a pickle
    assert not [path for path in model_folder.rglob("*") if path.suffix in {".pkl", ".pickle"}]

    pyfunc = mlflow.pyfunc.load_model("models:/churn-telco/1")
    sample = artifact.schema.coerce(reference.head(20))
    np.testing.assert_allclose(pyfunc.predict(sample), artifact.probability(sample), rtol=1e-9)

    # SHAP on the averaged model: contributions add up to its raw score, as the reasons assume.
    pool = Pool(sample, cat_features=artifact.schema.categorical_names)
    shap = artifact.model.get_feature_importance(data=pool, type="ShapValues")
    raw = artifact.model.predict(pool, prediction_type="RawFormulaVal")
    np.testing.assert_allclose(shap.sum(axis=1), raw, atol=1e-8)


def test_same_seed_and_data_give_the_same_metrics(tuned: TuneResult) -> None:
    again = run_tune("telco", trials=TRIALS, timeout=None, storage=None, study="telco-lab-again", seed=11)
    assert again.best_params == tuned.best_params
    assert again.best_value == tuned.best_value
    assert again.test_metrics == tuned.test_metrics
    assert again.model_version == "2"  # a new challenger version, same numbers
