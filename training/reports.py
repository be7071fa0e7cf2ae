"""Reading the lab's MLflow runs back for people: what notebooks/compare_runs.ipynb shows.

Studies are parent runs (`churnguard.kind = study`), trials their nested runs (`trial`), and the
promotion gate's decisions `promotion` runs, all in the experiment `churnguard-<dataset>`.
"""

from __future__ import annotations

import math

import mlflow
import pandas as pd
from matplotlib.figure import Figure

from churnguard.tracking import configure_mlflow
from training.config import load_training_config
from training.runs import KIND_TAG

STUDY_COLUMNS = [
    "tags.mlflow.runName",
    "start_time",
    "params.trial_budget",
    "metrics.trials_completed",
    "metrics.trials_pruned",
    "metrics.best_validation_value",
    "metrics.test_roc_auc",
    "metrics.test_pr_auc",
    "metrics.test_ece",
    "metrics.test_lift_top_decile",
]


def _runs(dataset: str, kind: str) -> pd.DataFrame:
    configure_mlflow()
    name = load_training_config().experiment_name(dataset)
    if mlflow.get_experiment_by_name(name) is None:
        return pd.DataFrame()
    return mlflow.search_runs(
        experiment_names=[name], filter_string=f"tags.`{KIND_TAG}` = '{kind}'", order_by=["start_time DESC"]
    )


def study_runs(dataset: str) -> pd.DataFrame:
    """One row per study (parent run), newest first, with its best validation and test metrics."""
    runs = _runs(dataset, "study")
    return runs[[c for c in ["run_id", *STUDY_COLUMNS] if c in runs.columns]] if len(runs) else runs


def trial_runs(dataset: str, study: str | None = None) -> pd.DataFrame:
    """One row per trial: its parameters, validation metric, fit time and pruned flag."""
    runs = _runs(dataset, "trial")
    if study is not None and len(runs):
        runs = runs[runs["tags.churnguard.study"] == study]
    return runs


def validation_column(trials: pd.DataFrame) -> str:
    columns = [c for c in trials.columns if c.startswith("metrics.validation_")]
    if not columns:
        raise ValueError("these runs have no validation metric; are they trial runs?")
    return columns[0]


def plot_metric_vs_params(trials: pd.DataFrame, metric: str | None = None) -> Figure:
    """One panel per tuned parameter: the validation metric of every trial against its value."""
    metric = metric or validation_column(trials)
    params = sorted(c for c in trials.columns if c.startswith("params."))
    columns = 4
    rows = math.ceil(len(params) / columns)
    figure = Figure(figsize=(16, 3.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    pruned = trials.get("metrics.pruned", pd.Series(0.0, index=trials.index)).fillna(0) > 0
    for panel, param in zip(axes.flat, params, strict=False):
        values = pd.to_numeric(trials[param], errors="coerce")
        x = values if values.notna().all() else trials[param].astype(str)
        panel.scatter(x[~pruned], trials.loc[~pruned, metric], label="completed", color="tab:blue")
        panel.scatter(x[pruned], trials.loc[pruned, metric], label="pruned", color="tab:grey", marker="x")
        panel.set_title(param.removeprefix("params."))
        panel.set_ylabel(metric.removeprefix("metrics."))
        if param.endswith("learning_rate") or param.endswith("l2_leaf_reg"):
            panel.set_xscale("log")
    for panel in list(axes.flat)[len(params) :]:
        panel.set_visible(False)
    axes.flat[0].legend(loc="best")
    figure.tight_layout()
    return figure


def best_trials(trials: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The best completed trials side by side: one column per trial, parameters and metrics as rows."""
    metric = validation_column(trials)
    completed = trials[trials.get("metrics.pruned", 0) == 0]
    maximise = not metric.endswith("logloss")
    best = completed.sort_values(metric, ascending=not maximise).head(top)
    shown = [
        metric,
        "metrics.best_iterations",
        "metrics.fit_seconds",
        *sorted(c for c in trials if c.startswith("params.")),
    ]
    table = best.set_index("tags.mlflow.runName")[shown].T
    table.index = [name.split(".", 1)[1] for name in table.index]
    return table


def compare_studies(studies: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """The best studies by test ROC-AUC side by side."""
    if studies.empty or "metrics.test_roc_auc" not in studies:
        return pd.DataFrame()
    best = studies.dropna(subset=["metrics.test_roc_auc"]).sort_values(
        "metrics.test_roc_auc", ascending=False
    )
    table = best.head(top).set_index("tags.mlflow.runName").drop(columns=["run_id"], errors="ignore").T
    # The test metrics first, then the parameters and the tags: the comparison the heading promises.
    kind = {"metrics": 0, "params": 1}
    table = table.loc[sorted(table.index, key=lambda name: (kind.get(name.split(".", 1)[0], 2), name))]
    table.index = [name.split(".", 1)[-1] for name in table.index]
    return table


def promotion_history(dataset: str) -> pd.DataFrame:
    """Every promotion decision: which versions, the decision, why, and both models' metrics."""
    runs = _runs(dataset, "promotion")
    if runs.empty:
        return runs
    columns = [
        "start_time",
        "tags.model_name",
        "tags.challenger_version",
        "tags.champion_version",
        "tags.decision",
        "tags.reason",
        *sorted(c for c in runs.columns if c.startswith("metrics.")),
    ]
    return runs[[c for c in columns if c in runs.columns]]
