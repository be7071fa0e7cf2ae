"""Quality metrics: what calibrated probabilities promise before labels arrive, and what labels show.

If the probabilities are calibrated, each customer churns with probability p, so the precision of a
tier is expected to be the mean p inside it, its recall the tier's share of the summed p, and the
ROC-AUC the chance that a churner outranks a stayer when churners are drawn by p. Drawing labels from
the probabilities many times also gives the band in which realized metrics should fall by chance
alone, including the calibration error a perfectly calibrated model still shows on finite data.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

TIERS = ("high", "medium", "low")


def expected_auc(probability: np.ndarray) -> float:
    """E[#correctly ordered churner/stayer pairs] / E[#pairs], labels ~ Bernoulli(p), ranking by p.

    O(n log n): sort by p; each customer i as the churner pairs with every j of lower p as the stayer
    (ties count one half); self-pairs are removed from the denominator.
    """
    p = np.asarray(probability, dtype=float)
    if p.size < 2:
        return float("nan")
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    stay = 1.0 - sorted_p
    # stayer mass strictly below each value, and the mass of its tie group
    unique, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    cumulative = np.concatenate([[0.0], np.cumsum(stay)])
    below = cumulative[first]
    tie_mass = cumulative[first + counts] - below
    group = np.repeat(np.arange(unique.size), counts)
    # within a tie group, pairs (i, j != i) count one half: subtract i's own stay mass
    concordant = sorted_p * (below[group] + 0.5 * (tie_mass[group] - stay))
    denominator = p.sum() * (1 - p).sum() - np.sum(p * (1 - p))
    return float(concordant.sum() / denominator) if denominator > 0 else float("nan")


def expected_tier_metrics(probability: np.ndarray, tiers: np.ndarray) -> dict[str, dict[str, float]]:
    p = np.asarray(probability, dtype=float)
    total = p.sum()
    metrics = {}
    for tier in TIERS:
        inside = tiers == tier
        metrics[tier] = {
            "share": float(inside.mean()) if p.size else float("nan"),
            "precision": float(p[inside].mean()) if inside.any() else float("nan"),
            "recall": float(p[inside].sum() / total) if total > 0 else float("nan"),
        }
    return metrics


def realized_tier_metrics(label: np.ndarray, tiers: np.ndarray) -> dict[str, dict[str, float]]:
    y = np.asarray(label, dtype=float)
    positives = y.sum()
    metrics = {}
    for tier in TIERS:
        inside = tiers == tier
        metrics[tier] = {
            "share": float(inside.mean()) if y.size else float("nan"),
            "precision": float(y[inside].mean()) if inside.any() else float("nan"),
            "recall": float(y[inside].sum() / positives) if positives > 0 else float("nan"),
        }
    return metrics


def calibration_table(probability: np.ndarray, label: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Equal-count bins of the probability: mean predicted vs observed churn rate per bin."""
    p, y = np.asarray(probability, dtype=float), np.asarray(label, dtype=float)
    if p.size == 0:
        return []
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in np.unique(index):
        inside = index == b
        rows.append(
            {
                "rows": int(inside.sum()),
                "predicted": float(p[inside].mean()),
                "observed": float(y[inside].mean()),
            }
        )
    return rows


def expected_calibration_error(probability: np.ndarray, label: np.ndarray, bins: int) -> float:
    """Row-weighted mean |predicted - observed| over equal-count bins."""
    table = calibration_table(probability, label, bins)
    total = sum(row["rows"] for row in table)
    if not total:
        return float("nan")
    return float(sum(row["rows"] * abs(row["predicted"] - row["observed"]) for row in table) / total)


def realized_auc(probability: np.ndarray, label: np.ndarray) -> float:
    y = np.asarray(label)
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")  # one class only: AUC is undefined
    return float(roc_auc_score(y, probability))


def simulated_bands(
    probability: np.ndarray, tiers: np.ndarray, bins: int, draws: int, seed: int
) -> dict[str, dict[str, float]]:
    """5th-95th percentile of AUC, high-tier precision and ECE when labels are drawn from p."""
    p = np.asarray(probability, dtype=float)
    if p.size < 2:
        return {}
    rng = np.random.default_rng(seed)
    ranks = rankdata(p)  # average ranks handle ties like roc_auc_score
    high = tiers == "high"
    aucs, precisions, eces = [], [], []
    for _ in range(draws):
        y = rng.random(p.size) < p
        positives = int(y.sum())
        negatives = p.size - positives
        if positives and negatives:
            aucs.append((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))
        if high.any():
            precisions.append(y[high].mean())
        eces.append(expected_calibration_error(p, y, bins))

    def band(values: list[float]) -> dict[str, float]:
        if not values:
            return {"low": float("nan"), "mean": float("nan"), "high": float("nan")}
        low, mean, top = np.percentile(values, 5), np.mean(values), np.percentile(values, 95)
        return {"low": float(low), "mean": float(mean), "high": float(top)}

    return {"roc_auc": band(aucs), "high_precision": band(precisions), "ece": band(eces)}
