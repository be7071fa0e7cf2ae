"""Model quality: discrimination, calibration, alert tiers and, for events data, alert lead time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN

ALERT_TIERS = ("high", "medium")


def expected_calibration_error(probability: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |observed rate - mean probability| over equal-width probability bins."""
    probability = np.asarray(probability, dtype=float)
    label = np.asarray(label, dtype=float)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        rows = which == b
        error += rows.sum() * abs(label[rows].mean() - probability[rows].mean())
    return float(error / len(probability))


def lift_at(probability: np.ndarray, label: np.ndarray, share: float = 0.1) -> float:
    """Churn rate among the top `share` by probability over the overall rate."""
    label = np.asarray(label, dtype=float)
    count = max(1, round(share * len(label)))
    top = np.argsort(-np.asarray(probability), kind="stable")[:count]
    return float(label[top].mean() / label.mean()) if label.mean() > 0 else float("nan")


def classification_metrics(probability: np.ndarray, label: np.ndarray, ece_bins: int) -> dict[str, float]:
    label = np.asarray(label, dtype=int)
    clipped = np.clip(probability, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": float(roc_auc_score(label, probability)),
        "pr_auc": float(average_precision_score(label, probability)),
        "log_loss": float(log_loss(label, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(label, probability)),
        "ece": expected_calibration_error(probability, label, ece_bins),
        "lift_top_decile": lift_at(probability, label, 0.1),
        "base_rate": float(label.mean()),
        "rows": float(len(label)),
    }


def tier_metrics(tiers: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Precision and recall of each alert tier, and of high+medium together ("alert")."""
    label = np.asarray(label, dtype=bool)
    positives = max(int(label.sum()), 1)
    metrics: dict[str, float] = {}
    groups = {tier: tiers == tier for tier in ALERT_TIERS}
    groups["alert"] = np.isin(tiers, ALERT_TIERS)
    for name, rows in groups.items():
        flagged = int(rows.sum())
        metrics[f"precision_{name}"] = float(label[rows].mean()) if flagged else 0.0
        metrics[f"recall_{name}"] = float(label[rows].sum() / positives)
        metrics[f"share_{name}"] = float(flagged / len(tiers)) if len(tiers) else 0.0
    return metrics


def alert_lead_times(
    keys: pd.DataFrame, tiers: np.ndarray, label: np.ndarray, churn_dates: pd.Series
) -> pd.DataFrame:
    """Per churner among `keys` (customer_id, observation_date rows): the first observation date with a
    high or medium alert and the days from it to the churn date (NaN when never alerted)."""
    rows = keys[[ID_COLUMN, OBSERVATION_COLUMN]].assign(tier=np.asarray(tiers), label=np.asarray(label))
    churners = rows.loc[rows["label"] == 1, ID_COLUMN].unique()
    alerts = rows[rows["tier"].isin(ALERT_TIERS) & rows[ID_COLUMN].isin(churners)]
    first_alert = alerts.groupby(ID_COLUMN)[OBSERVATION_COLUMN].min()
    out = pd.DataFrame({ID_COLUMN: churners})
    out["first_alert"] = out[ID_COLUMN].map(first_alert)
    out["churn_date"] = out[ID_COLUMN].map(churn_dates).astype("datetime64[ns]")
    out["lead_days"] = (out["churn_date"] - out["first_alert"]).dt.days
    return out


def lead_time_metrics(lead: pd.DataFrame, days: int) -> dict[str, float]:
    alerted = lead["lead_days"].dropna()
    return {
        "churners": float(len(lead)),
        "alert_coverage": float(len(alerted) / len(lead)) if len(lead) else 0.0,
        "lead_time_median_days": float(alerted.median()) if len(alerted) else 0.0,
        f"lead_time_share_{days}d": float((alerted >= days).mean()) if len(alerted) else 0.0,
        # Of every churner, the share warned (high or medium) at least `days` ahead: the lead-time bar.
        f"alert_coverage_{days}d": float((alerted >= days).sum() / len(lead)) if len(lead) else 0.0,
    }


@dataclass(frozen=True)
class AucDifference:
    """ROC-AUC of one ranking minus another's on the same rows, with a paired bootstrap interval."""

    difference: float
    low: float  # 2.5% quantile of the bootstrap differences
    high: float  # 97.5% quantile
    sd: float
    resamples: int

    def format(self) -> str:
        return f"{self.difference:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f})"


def paired_auc_difference(
    label: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    groups: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> AucDifference:
    """ROC-AUC(first) - ROC-AUC(second), and how much it moves when the customers are drawn again.

    Whole groups (customers) are resampled with replacement, both rankings on the same draw: an events
    test set holds each customer at several dates, and those rows are not independent draws."""
    label = np.asarray(label, dtype=int)
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    count = int(group_index.max()) + 1 if len(group_index) else 0
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        # A customer drawn k times weighs k: the same AUC as repeating their rows k times.
        weight = np.bincount(rng.integers(0, count, count), minlength=count)[group_index]
        drawn_labels = label[weight > 0]
        if drawn_labels.min() == drawn_labels.max():  # one class drawn: no AUC on this draw
            continue
        differences.append(
            roc_auc_score(label, first, sample_weight=weight)
            - roc_auc_score(label, second, sample_weight=weight)
        )
    drawn = np.asarray(differences)
    if not len(drawn):
        raise ValueError("every bootstrap draw held one class only: no AUC difference to measure")
    return AucDifference(
        float(roc_auc_score(label, first) - roc_auc_score(label, second)),
        float(np.quantile(drawn, 0.025)),
        float(np.quantile(drawn, 0.975)),
        float(drawn.std(ddof=1)) if len(drawn) > 1 else 0.0,
        len(drawn),
    )


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that JSON, MLflow and the contract accept (no NaN or infinity)."""
    return {name: float(value) for name, value in metrics.items() if np.isfinite(value)}
