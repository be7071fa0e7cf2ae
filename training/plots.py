"""Matplotlib figures the lab logs with each study: search history and importance, and the final
model's ROC, PR, calibration, lift/gains, SHAP summary, feature importance and tier confusion."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

TIER_ORDER = ("high", "medium", "low")


def _figure(width: float = 6.0, height: float = 4.5) -> tuple[Figure, Axes]:
    # Figure objects, not pyplot: no global state, no backend to choose, nothing to close.
    figure = Figure(figsize=(width, height), dpi=100)
    return figure, figure.subplots()


def optimisation_history(study: optuna.Study) -> Figure:
    figure, axes = _figure(7, 4.5)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    numbers = np.array([t.number for t in trials])
    values = np.array([t.value for t in trials], dtype=float)
    if len(values):
        best = (
            np.maximum.accumulate(values)
            if study.direction.name == "MAXIMIZE"
            else np.minimum.accumulate(values)
        )
        axes.scatter(numbers, values, label="completed trial", color="tab:blue")
        axes.step(numbers, best, where="post", label="best so far", color="tab:red")
    for trial in pruned:
        axes.axvline(trial.number, color="grey", alpha=0.25, linewidth=1)
    axes.set_xlabel("trial")
    axes.set_ylabel("validation metric")
    axes.set_title(f"Optimisation history ({len(trials)} completed, {len(pruned)} pruned in grey)")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def parameter_importance(importances: dict[str, float]) -> Figure:
    figure, axes = _figure()
    names = list(importances)[::-1]
    axes.barh(names, [importances[n] for n in names], color="tab:blue")
    axes.set_xlabel("importance for the validation metric (fANOVA)")
    axes.set_title("Hyper-parameter importance")
    figure.tight_layout()
    return figure


def roc(label: np.ndarray, probability: np.ndarray, auc: float) -> Figure:
    figure, axes = _figure(5, 5)
    false_positive, true_positive, _ = roc_curve(label, probability)
    axes.plot(false_positive, true_positive, label=f"model (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC (test)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def precision_recall(label: np.ndarray, probability: np.ndarray, average_precision: float) -> Figure:
    figure, axes = _figure(5, 5)
    precision, recall, _ = precision_recall_curve(label, probability)
    axes.plot(recall, precision, label=f"model (AP {average_precision:.3f})")
    axes.axhline(float(np.mean(label)), linestyle="--", color="grey", label="base rate")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall (test)")
    axes.legend(loc="upper right")
    figure.tight_layout()
    return figure


def calibration(label: np.ndarray, curves: dict[str, np.ndarray], bins: int) -> Figure:
    """Reliability diagram: observed churn rate against mean predicted probability per bin."""
    figure, axes = _figure(5, 5)
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for name, probability in curves.items():
        which = np.minimum((probability * bins).astype(int), bins - 1)
        frame = pd.DataFrame({"bin": which, "p": probability, "y": label}).groupby("bin").mean()
        axes.plot(frame["p"], frame["y"], marker="o", label=name)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed churn rate")
    axes.set_title("Calibration (test)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure


def lift_gains(label: np.ndarray, probability: np.ndarray) -> Figure:
    figure = Figure(figsize=(10, 4.5), dpi=100)
    gains_axes, lift_axes = figure.subplots(1, 2)
    order = np.argsort(-probability, kind="stable")
    sorted_label = np.asarray(label, dtype=float)[order]
    contacted = np.arange(1, len(sorted_label) + 1) / len(sorted_label)
    gains = np.cumsum(sorted_label) / max(sorted_label.sum(), 1)
    gains_axes.plot(contacted, gains, label="model")
    gains_axes.plot([0, 1], [0, 1], "--", color="grey", label="random")
    gains_axes.set_xlabel("share of customers contacted (highest risk first)")
    gains_axes.set_ylabel("share of churners reached")
    gains_axes.set_title("Cumulative gains (test)")
    gains_axes.legend(loc="lower right")
    deciles = np.array_split(sorted_label, 10)
    base = sorted_label.mean() if sorted_label.mean() > 0 else 1.0
    lift_axes.bar(np.arange(1, 11), [d.mean() / base for d in deciles], color="tab:blue")
    lift_axes.axhline(1.0, linestyle="--", color="grey")
    lift_axes.set_xlabel("decile (1 = highest risk)")
    lift_axes.set_ylabel("lift over base rate")
    lift_axes.set_title("Lift by decile (test)")
    figure.tight_layout()
    return figure


def shap_summary(shap_values: np.ndarray, features: pd.DataFrame, top: int = 15) -> Figure:
    """Beeswarm-like: one row per feature, a dot per customer at its SHAP value, coloured by the
    feature's value rank (categoricals by category code)."""
    mean_abs = np.abs(shap_values).mean(axis=0)
    order = np.argsort(-mean_abs)[:top][::-1]
    figure, axes = _figure(8, 0.4 * len(order) + 1.5)
    rng = np.random.default_rng(0)
    for row, index in enumerate(order):
        column = features.iloc[:, index]
        if pd.api.types.is_numeric_dtype(column):
            colour = column.rank(pct=True).fillna(0.5).to_numpy()
        else:
            codes = pd.factorize(column, sort=True)[0].astype(float)
            colour = codes / max(codes.max(), 1)
        jitter = rng.uniform(-0.3, 0.3, len(column))
        axes.scatter(shap_values[:, index], row + jitter, c=colour, cmap="coolwarm", s=6, alpha=0.6)
    axes.set_yticks(range(len(order)))
    axes.set_yticklabels([features.columns[i] for i in order])
    axes.axvline(0, color="grey", linewidth=1)
    axes.set_xlabel("SHAP value (impact on log-odds of churn)")
    axes.set_title("SHAP summary (test sample; colour = feature value, low blue to high red)")
    figure.tight_layout()
    return figure


def feature_importance(importance: pd.Series, top: int = 20) -> Figure:
    shown = importance.sort_values(ascending=False).head(top)[::-1]
    figure, axes = _figure(7, 0.35 * len(shown) + 1.5)
    axes.barh(shown.index, shown.to_numpy(), color="tab:blue")
    axes.set_xlabel("CatBoost importance (PredictionValuesChange)")
    axes.set_title("Feature importance")
    figure.tight_layout()
    return figure


def tier_confusion(tiers: np.ndarray, label: np.ndarray) -> Figure:
    counts = pd.crosstab(
        pd.Categorical(tiers, categories=TIER_ORDER), pd.Categorical(label, categories=[0, 1]), dropna=False
    )
    figure, axes = _figure(5, 4)
    image = axes.imshow(counts.to_numpy(), cmap="Blues")
    for (row, column), value in np.ndenumerate(counts.to_numpy()):
        axes.text(column, row, f"{value:,}", ha="center", va="center")
    axes.set_xticks([0, 1])
    axes.set_xticklabels(["stayed", "churned"])
    axes.set_yticks(range(len(TIER_ORDER)))
    axes.set_yticklabels(TIER_ORDER)
    axes.set_xlabel("outcome")
    axes.set_ylabel("alert tier")
    axes.set_title("Alert tier vs outcome (test)")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    return figure
