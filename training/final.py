"""The final model: K fold models over train+validation with the best trial's parameters and iteration
count; their out-of-fold predictions fit the calibration and the tier thresholds; the served model is
their average, one native CatBoost model (or, with `final.model: refit`, one refit on all the rows).
It is evaluated once on test, and the model artifact is built (DESIGN.md: the artifact is
self-describing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from catboost import Pool
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from churnguard.artifact import Calibration, HealthMapping, ModelArtifact, ModelContract
from churnguard.datasets import DatasetConfig, config_hash
from churnguard.schema import ID_COLUMN, LABEL_COLUMN
from churnguard.scoring import ScoringConfig, TierThresholds, choose_thresholds
from training import plots
from training.calibration import fit_calibration, out_of_fold
from training.config import TrainingConfig
from training.data import LabData
from training.evaluation import (
    alert_lead_times,
    classification_metrics,
    expected_calibration_error,
    finite,
    lead_time_metrics,
    tier_metrics,
)
from training.fit import CannotAverage, Params, average_models, fit_fixed
from training.runs import git_commit, library_versions
from training.splits import Split, held_out_keys

log = logging.getLogger(__name__)

FINAL_MODEL_WHY = {
    "fold_average": (
        "the average of the {folds} fold models (log-odds averaged into one CatBoost model with "
        "`sum_models`, weights 1/{folds}), each fitted on {share} of train+validation with {iterations} "
        "iterations; the rows each one did not see give the out-of-fold predictions that calibrate them"
    ),
    "refit": (
        "one model refitted on all train+validation rows with {iterations} iterations; {folds} fold models "
        "with the same settings give the out-of-fold predictions that calibrate it"
    ),
}

CALIBRATION_WHY = {
    "platt": (
        "Platt scaling (sigmoid of the logit) fitted on out-of-fold predictions over train+validation: "
        "CatBoost's log-loss training is close to calibrated except for the logit shift class weighting "
        "adds, which two parameters fix with little variance; it keeps the ranking strictly (in nested "
        "cross-validation on Telco, isotonic lost ROC-AUC and log loss for no real gain in ECE)."
    ),
    "isotonic": (
        "Isotonic regression fitted on out-of-fold predictions over train+validation: a monotone step "
        "map, flexible where the raw scores bend, at the cost of ties between close scores."
    ),
}


@dataclass
class FinalModel:
    artifact: ModelArtifact
    metrics: dict[str, float]  # test metrics, prefixed `test_`
    test_keys: pd.DataFrame
    card: str
    figures: dict[str, Figure] = field(default_factory=dict)


def _value(frame: pd.DataFrame, scoring: ScoringConfig) -> np.ndarray | None:
    feature = scoring.tiers.expected_value.value_feature
    if scoring.tiers.policy == "expected_value" and feature and feature in frame.columns:
        return pd.to_numeric(frame[feature], errors="coerce").to_numpy(dtype=float)
    return None


def fit_final(
    data: LabData,
    split: Split,
    params: Params,
    best_iterations: int,
    dataset_config: DatasetConfig,
    config: TrainingConfig,
    scoring: ScoringConfig,
    seed: int,
    model_name: str,
    step: Callable[[str], None] = lambda message: None,
    objective: str | None = None,
) -> FinalModel:
    table = data.table
    schema = table.schema
    search = config.search
    frame = table.frame
    final_rows = frame[split.final].reset_index(drop=True)
    test_rows = frame[split.test].reset_index(drop=True)
    final_features = schema.coerce(final_rows)
    final_label = final_rows[LABEL_COLUMN].to_numpy()
    categorical = schema.categorical_names
    iterations = max(1, round(best_iterations * config.final.iteration_scale))

    # K fold models with the final settings: each predicts the rows it did not see. Those out-of-fold
    # predictions fit the calibration and the thresholds; the served model is the folds' average.
    fold_models = []

    def fit_and_predict(fit_rows: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        fold_data = Pool(final_features.iloc[fit_rows], final_label[fit_rows], cat_features=categorical)
        fold_models.append(fit_fixed(params, search, seed, iterations, fold_data))
        return fold_models[-1].predict_proba(final_features.iloc[held_out])[:, 1]

    # The same folds as the cross-validated search (same seed); customers stay in one fold for events.
    groups = final_rows[ID_COLUMN].to_numpy() if table.kind == "events" else None
    step(f"{search.folds} fold models x {iterations} iterations, out-of-fold predictions")
    oof_raw = out_of_fold(final_label, groups, search.folds, seed, fit_and_predict)
    calibration = fit_calibration(oof_raw, final_label, config.final.calibration)
    oof = calibration.apply(oof_raw)

    # Snapshot data: every train+validation row has an out-of-fold prediction. Events data: the latest
    # (validation) dates, whose churn rate is the closest to what the model will score.
    threshold_rows = split.validation[split.final] if table.kind == "events" else np.ones(len(oof), bool)
    thresholds = choose_thresholds(
        scoring.tiers,
        oof[threshold_rows],
        final_label[threshold_rows],
        None if (value := _value(final_rows, scoring)) is None else value[threshold_rows],
    )

    final_data = Pool(final_features, final_label, cat_features=categorical)
    final_model, model = config.final.model, None
    if final_model == "fold_average":
        step(f"averaging the {search.folds} fold models into one")
        try:
            model = average_models(fold_models, final_data)
        except CannotAverage as reason:
            log.warning("%s; refitting one model on all train+validation rows instead", reason)
            final_model = "refit"
    if model is None:
        step(f"final fit on {len(final_rows):,} train+validation rows")
        model = fit_fixed(params, search, seed, iterations, final_data)

    step(f"evaluating once on {len(test_rows):,} test rows")
    test_features = schema.coerce(test_rows)
    test_label = test_rows[LABEL_COLUMN].to_numpy()
    raw_test = model.predict_proba(test_features)[:, 1]
    probability = calibration.apply(raw_test)
    tiers = thresholds.assign(probability)
    bins = config.evaluation.ece_bins
    metrics = classification_metrics(probability, test_label, bins)
    metrics["ece_uncalibrated"] = expected_calibration_error(raw_test, test_label, bins)
    metrics["ece_out_of_fold"] = expected_calibration_error(oof, final_label, bins)
    metrics["roc_auc_out_of_fold"] = float(roc_auc_score(final_label, oof))
    metrics.update(tier_metrics(tiers, test_label))
    if table.kind == "events" and data.churn_dates is not None:
        lead = alert_lead_times(test_rows, tiers, test_label, data.churn_dates)
        # The dataset's lead time (`lead_time_days`; default at most half its horizon) names the metric.
        lead_days = dataset_config.lead_time(config.evaluation.lead_time_days)
        metrics.update(lead_time_metrics(lead, lead_days))
    test_metrics = finite({f"test_{name}": value for name, value in metrics.items()})

    fitted_schema = schema.fit(final_rows[schema.names])
    contract = ModelContract(
        model_name=model_name,
        dataset=dataset_config.name,
        dataset_kind=table.kind,
        dataset_hash=config_hash(dataset_config),
        horizon_days=table.horizon_days,
        schema=fitted_schema,
        calibration=calibration,
        thresholds=thresholds,
        health=HealthMapping.for_thresholds(thresholds),
        training_window={**split.window, "final_rows": str(len(final_rows))},
        metrics=test_metrics,
        params={
            **params,
            "iterations": iterations,
            "random_seed": seed,
            "eval_metric": search.metric,
            "one_hot_max_size": search.one_hot_max_size,
            "final_model": final_model,  # what was built: a fold average can fall back to a refit
            "folds": search.folds,
        },
        versions=library_versions(),
        code_version=git_commit(),
    )
    artifact = ModelArtifact(contract, model, pd.DataFrame())
    artifact.reference = reference_sample(final_rows, artifact, config.evaluation.reference_rows, seed)

    figures = {
        "roc": plots.roc(test_label, probability, metrics["roc_auc"]),
        "precision_recall": plots.precision_recall(test_label, probability, metrics["pr_auc"]),
        "calibration": plots.calibration(test_label, {"raw": raw_test, "calibrated": probability}, bins),
        "lift_gains": plots.lift_gains(test_label, probability),
        "shap_summary": shap_figure(model, test_features, categorical, config.evaluation.shap_rows, seed),
        "feature_importance": plots.feature_importance(
            pd.Series(model.get_feature_importance(), index=schema.names)
        ),
        "tier_confusion": plots.tier_confusion(tiers, test_label),
    }
    card = model_card(contract, config, split, thresholds, calibration, objective)
    return FinalModel(artifact, test_metrics, held_out_keys(frame, split), card, figures)


def reference_sample(rows: pd.DataFrame, artifact: ModelArtifact, limit: int, seed: int) -> pd.DataFrame:
    """Training rows with their features, label, calibrated prediction and tier: the drift reference."""
    sample = rows.sample(n=min(limit, len(rows)), random_state=seed).reset_index(drop=True)
    reference = sample[[*artifact.schema.names, LABEL_COLUMN]].copy()
    reference["prediction"] = artifact.probability(sample)
    reference["alert_tier"] = artifact.tiers(reference["prediction"].to_numpy())
    return reference


def shap_figure(model, features: pd.DataFrame, categorical: list[str], rows: int, seed: int) -> Figure:
    sample = features.sample(n=min(rows, len(features)), random_state=seed)
    values = model.get_feature_importance(data=Pool(sample, cat_features=categorical), type="ShapValues")
    return plots.shap_summary(values[:, :-1], sample)  # the last column is the expected value


def model_card(
    contract: ModelContract,
    config: TrainingConfig,
    split: Split,
    thresholds: TierThresholds,
    calibration: Calibration,
    objective: str | None = None,
) -> str:
    m = contract.metrics
    window = ", ".join(f"{k}={v}" for k, v in contract.training_window.items())
    search, folds, iterations = config.search, config.search.folds, contract.params.get("iterations")
    if objective == "customer_folds" and search.customer_fold_dates == "all":
        objective = (
            f"the mean validation {search.metric} over {folds} customer folds, each validated on its "
            "customers at every train+validation date and fitted on the other customers' rows"
        )
    elif objective == "customer_folds":
        objective = (
            f"the mean validation {search.metric} over {folds} customer folds, each validated on its "
            "customers at the validation dates and fitted on the other customers' earlier dates"
        )
    elif search.cross_validated(split.kind):
        objective = (
            f"the mean validation {search.metric} over {folds} stratified folds of train+validation "
            "(early stopping per fold; the iteration count is the folds' mean)"
        )
    else:
        objective = f"the validation {search.metric} (early stopping on the validation rows)"
    final_model = FINAL_MODEL_WHY[str(contract.params["final_model"])].format(
        folds=folds, share=f"{folds - 1}/{folds}", iterations=iterations
    )
    threshold_rows = (
        "the validation dates' out-of-fold predictions"
        if split.kind == "events"
        else "the out-of-fold predictions of train+validation"
    )
    lines = [
        f"# {contract.model_name}",
        "",
        f"CatBoost churn model for dataset `{contract.dataset}` ({contract.dataset_kind}"
        + (f", churn within {contract.horizon_days} days" if contract.horizon_days else "")
        + f"), dataset config hash `{contract.dataset_hash}`, code `{contract.code_version}`.",
        "",
        "## Training",
        f"- split: {window}",
        f"- tuned with Optuna TPE on {objective}",
        f"- model: {final_model}",
        f"- parameters: {', '.join(f'{k}={v}' for k, v in sorted(contract.params.items()))}",
        f"- calibration: {CALIBRATION_WHY[calibration.method]}",
        f"- tiers ({thresholds.policy} policy, chosen on {threshold_rows}): "
        f"high if p >= {thresholds.high:.4f}, medium if p >= {thresholds.medium:.4f}; "
        f"health score anchors {contract.health.anchors}",
        "",
        "## Test metrics (evaluated once, on rows no fit or choice saw)",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {name.removeprefix('test_')} | {value:.4f} |" for name, value in sorted(m.items())],
        "",
        "## Limits",
        "- Probabilities are calibrated to the training period's churn rate; re-check when it moves.",
        "- Tier thresholds follow the scoring policy at training time; a new policy needs a new model.",
    ]
    if split.kind == "events":
        lines.append(
            "- Test customers never appear in training rows; test dates are the latest labelled ones."
        )
    return "\n".join(lines) + "\n"
