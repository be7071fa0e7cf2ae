"""Probability calibration, fitted on out-of-fold predictions (never on the rows a model trained on,
never on test): K fold models over train+validation, with the final parameters and iteration count,
each predict the fold they did not see. The final model is their average (or a refit like them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression

from churnguard.artifact import Calibration
from training.splits import fold_indices

log = logging.getLogger(__name__)

_EPS = 1e-6


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probability, dtype=float), _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))


def fit_platt(raw: np.ndarray, label: np.ndarray, ridge: float = 1e-6) -> Calibration:
    """sigmoid(a * logit(raw) + b) by Newton's method on the log-likelihood (two parameters)."""
    x = _logit(raw)
    y = np.asarray(label, dtype=float)
    design = np.column_stack([x, np.ones_like(x)])
    weights = np.array([1.0, 0.0])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - y) + ridge * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Calibration(method="platt", a=float(weights[0]), b=float(weights[1]))


def fit_isotonic(raw: np.ndarray, label: np.ndarray) -> Calibration:
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, label)
    return Calibration(
        method="isotonic",
        x=np.asarray(iso.X_thresholds_, dtype=float).tolist(),
        y=np.asarray(iso.y_thresholds_, dtype=float).tolist(),
    )


def fit_calibration(raw: np.ndarray, label: np.ndarray, method: str) -> Calibration:
    if method == "platt":
        return fit_platt(raw, label)
    if method == "isotonic":
        return fit_isotonic(raw, label)
    raise ValueError(f"unknown calibration method {method!r} (platt or isotonic)")


def out_of_fold(
    label: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    seed: int,
    fit_and_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Held-out raw predictions for every row: `fit_and_predict(train_rows, predict_rows)` per fold."""
    predictions = np.full(len(label), np.nan)
    for number, (fit_rows, held_out) in enumerate(fold_indices(label, groups, folds, seed), start=1):
        predictions[held_out] = fit_and_predict(fit_rows, held_out)
        log.debug("out-of-fold: fold %d/%d done", number, folds)
        if progress:
            progress(1)
    return predictions
