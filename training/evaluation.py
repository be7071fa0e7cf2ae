"""Model quality: discrimination, calibration, alert tiers and, for events data, alert lead time."""

from __future__ import annotations

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


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that JSON, MLflow and the contract accept (no NaN or infinity)."""
    return {name: float(value) for name, value in metrics.items() if np.isfinite(value)}
