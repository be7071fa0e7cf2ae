"""CatBoost fitting: hyper-parameters from the search space, native categorical features, pruning,
and the average of fold models as one native CatBoost model."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from catboost import CatBoostClassifier, CatBoostError, Pool, sum_models

from churnguard.schema import FeatureSchema
from training.config import Choices, FloatRange, IntRange, SearchConfig, SearchSpace

Params = dict[str, Any]


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> Params:
    """One point of the search space, named as CatBoost names its parameters."""
    params: Params = {}
    for name in SearchSpace.model_fields:
        spec = getattr(space, name)
        if isinstance(spec, IntRange):
            params[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, FloatRange):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Choices):
            params[name] = trial.suggest_categorical(name, spec.choices)
    return params


# CatBoost's own defaults (CPU, Logloss); the learning rate it picks alone depends on the data and the
# iteration count, 0.05 is about what it picks for ~10,000 rows.
CATBOOST_DEFAULTS: Params = {
    "depth": 6,
    "learning_rate": 0.05,
    "l2_leaf_reg": 3.0,
    "border_count": 254,
    "random_strength": 1.0,
    "bagging_temperature": 1.0,
    "auto_class_weights": None,
}


def default_point(space: SearchSpace) -> Params:
    """CatBoost's defaults as a point of `space` (clipped into ranges; a missing choice takes the first),
    the study's first trial: the search keeps them unless the objective finds better."""
    point: Params = {}
    for name in SearchSpace.model_fields:
        spec = getattr(space, name)
        default = CATBOOST_DEFAULTS.get(name)
        if isinstance(spec, Choices):
            point[name] = default if default in spec.choices else spec.choices[0]
        elif default is None:  # the iteration ceiling: early stopping picks the count
            point[name] = spec.high
        else:
            point[name] = type(spec.low)(min(max(default, spec.low), spec.high))
    return point


def catboost_params(params: Params, search: SearchConfig, seed: int) -> Params:
    """Search params plus the fixed settings every fit shares."""
    fixed: Params = {
        "loss_function": "Logloss",
        "eval_metric": search.metric,
        "random_seed": seed,
        "thread_count": search.thread_count,
        "bootstrap_type": "Bayesian",  # bagging_temperature only acts on the Bayesian bootstrap
        # One-hot splits instead of CTR statistics for low-cardinality categoricals: on Telco as good or
        # better in cross-validation, several times faster, and fold models average exactly (average_models).
        "one_hot_max_size": search.one_hot_max_size,
        "allow_writing_files": False,  # no catboost_info/ folders in the working directory
        "verbose": 0,
    }
    merged = {**params, **fixed}
    if merged.get("auto_class_weights") is None:
        merged.pop("auto_class_weights", None)
    return merged


def pool(frame: pd.DataFrame, schema: FeatureSchema, label: np.ndarray | None = None) -> Pool:
    """CatBoost gets categoricals natively: strings in the schema's categorical columns."""
    return Pool(schema.coerce(frame), label=label, cat_features=schema.categorical_names)


class PruningCallback:
    """Reports the validation metric to Optuna every `report_every` iterations and stops a hopeless fit.

    Same protocol as optuna_integration's CatBoostPruningCallback (CatBoost cannot raise from a callback,
    so `check_pruned` raises after `fit`), but it reports every N iterations instead of every one: each
    report is a write to the study's storage, which shared SQLite/PostgreSQL storages feel.
    """

    def __init__(self, trial: optuna.Trial, metric: str, report_every: int) -> None:
        self.trial = trial
        self.metric = metric
        self.report_every = report_every
        self.pruned_at: int | None = None

    def after_iteration(self, info: Any) -> bool:
        if info.iteration % self.report_every:
            return True
        score = info.metrics["validation"][self.metric][-1]
        self.trial.report(float(score), step=info.iteration)
        if self.trial.should_prune():
            self.pruned_at = info.iteration
            return False
        return True

    def check_pruned(self) -> None:
        if self.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at iteration {self.pruned_at}")


@dataclass
class FitResult:
    model: CatBoostClassifier
    best_iteration: int  # 0-based, as CatBoost counts
    validation_score: float
    seconds: float


def fit_with_early_stopping(
    params: Params,
    search: SearchConfig,
    seed: int,
    train: Pool,
    validation: Pool,
    callbacks: list[Any] | None = None,
) -> FitResult:
    model = CatBoostClassifier(**catboost_params(params, search, seed))
    started = time.perf_counter()
    model.fit(
        train,
        eval_set=validation,
        early_stopping_rounds=search.early_stopping_rounds,
        use_best_model=True,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - started
    best = model.get_best_iteration()
    scores = model.get_evals_result()["validation"][search.metric]
    best = len(scores) - 1 if best is None else best
    return FitResult(model, int(best), float(scores[best]), seconds)


def fit_fixed(
    params: Params, search: SearchConfig, seed: int, iterations: int, data: Pool
) -> CatBoostClassifier:
    """A fit with a fixed iteration count (the final model and its out-of-fold twins)."""
    settings = catboost_params({**params, "iterations": iterations}, search, seed)
    model = CatBoostClassifier(**settings)
    model.fit(data)
    return model


class CannotAverage(ValueError):
    """The fold models cannot be averaged into one exact model (they use categorical statistics)."""


def average_models(models: list[CatBoostClassifier], check: Pool) -> CatBoostClassifier:
    """One CatBoost model whose raw score (log-odds) is the mean of the models' raw scores.

    `sum_models` with weights 1/K. Exact for trees on numbers and one-hot categoricals; fold models with
    CTR statistics (categoricals above `one_hot_max_size`) each hold their own CTR tables, which CatBoost
    can only merge approximately, so those raise CannotAverage. Checked on `check` rows before returning.
    """
    weights = [1.0 / len(models)] * len(models)
    try:
        summed = sum_models(models, weights=weights, ctr_merge_policy="FailIfCtrIntersects")
        # sum_models returns a plain CatBoost; the artifact contract scores with CatBoostClassifier.
        with tempfile.TemporaryDirectory(prefix="churnguard-average-") as folder:
            path = Path(folder) / "average.cbm"
            summed.save_model(str(path), format="cbm")
            average = CatBoostClassifier()
            average.load_model(str(path), format="cbm")
            # Loaded, the sum holds an empty `params` entry; saved again (the artifact), every later load
            # printed "There are invalid params and some of them will be ignored": at registration,
            # scoring, drift and promotion. The fold models' own parameters stay, as `model<i>:params`.
            metadata = average.get_metadata()
            if "params" in set(metadata.keys()) and not metadata["params"]:
                del metadata["params"]
    except CatBoostError as error:
        raise CannotAverage(f"CatBoost cannot average the fold models exactly ({error})") from None
    expected = np.mean([m.predict(check, prediction_type="RawFormulaVal") for m in models], axis=0)
    actual = average.predict(check, prediction_type="RawFormulaVal")
    if not np.allclose(actual, expected, rtol=0, atol=1e-8):
        raise CannotAverage(
            f"the averaged model differs from the mean of its {len(models)} fold models by up to "
            f"{np.max(np.abs(actual - expected)):.2e} in log-odds"
        )
    return average
