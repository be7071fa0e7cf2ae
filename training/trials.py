"""The trials of a study: an ask/tell loop over the search space, tracked as nested MLflow runs under
the study's run. Each trial fits CatBoost with early stopping on its validation rows:

- cross-validated (snapshot data): K stratified folds of train+validation, the same folds for every
  trial; the objective is the mean of the folds' early-stopped scores. After each fold the running mean
  is reported, so the median pruner compares trials on the same rows and stops a poor one early.
- holdout (events data, or `search.objective: holdout`): train rows, early-stopped on the validation
  rows, reported every `report_every` iterations for pruning.

On ~5,600 Telco rows one validation split's AUC varies with the draw alone (sd ~0.006: 0.836-0.857 over
ten folds for one configuration), more than configurations differ; the mean of five folds varies less,
so the search chases less noise.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from catboost import CatBoostError, Pool
from mlflow import MlflowClient
from optuna.trial import TrialState
from tqdm.auto import tqdm

from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
from training import runs, studies
from training.config import SearchConfig
from training.data import LabData
from training.fit import PruningCallback, fit_with_early_stopping, pool, suggest_params
from training.selection import FOLD_SCORES_ATTR
from training.splits import Split, fold_indices

log = logging.getLogger(__name__)

BEST_ITERATIONS_ATTR = "best_iterations"  # trial user attr: early-stopped iteration count (fold mean)
TRIAL_ERROR_ATTR = "error"  # trial user attr: why a failed trial failed, for the study's final message


def pruner(search: SearchConfig, cross_validated: bool = False) -> optuna.pruners.BasePruner:
    if not search.pruning.enabled:
        return optuna.pruners.NopPruner()
    # Cross-validated trials report once per fold (steps 0..K-1); holdout trials once per N iterations.
    warmup = 0 if cross_validated else search.pruning.warmup_iterations
    return optuna.pruners.MedianPruner(n_startup_trials=search.pruning.startup_trials, n_warmup_steps=warmup)


def sampler(search: SearchConfig, seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: concurrent workers treat each other's running trials as bad, so they spread out.
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=search.startup_trials,
            multivariate=True,
            constant_liar=True,
        )


def search_objective(data: LabData, split: Split, search: SearchConfig) -> str:
    """`cross_validation` (snapshot folds), `customer_folds` (events folds) or `holdout` (events).

    An events holdout with fewer than `min_validation_churners` churners falls back to customer folds.
    """
    if split.kind == "snapshot":
        return "cross_validation" if search.cross_validated(split.kind) else "holdout"
    if search.events_objective == "customer_folds":
        return "customer_folds"
    churners = int(data.table.frame[LABEL_COLUMN].to_numpy()[split.validation].sum())
    if churners < search.min_validation_churners:
        log.warning(
            "the validation rows hold only %d churners (fewer than search.min_validation_churners = %d): "
            "a holdout that small picks noise; scoring trials on %d customer folds instead",
            *(churners, search.min_validation_churners, search.folds),
        )
        return "customer_folds"
    return "holdout"


def customer_folds(
    frame: pd.DataFrame, split: Split, folds: int, seed: int, dates: str = "validation"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (fit, validation) row masks over the non-test customers.

    `validation`: out of time and out of customer, fold k validates on its customers' rows at the
    validation dates and fits on the other customers' rows at the earlier (training) dates.
    `all`: out of customer, fold k validates on its customers' rows at every train+validation date and
    fits on the other customers' rows at the same dates: the folds the final model's fold models and
    out-of-fold predictions use. Customers are split by `fold_indices`, grouped and stratified."""
    label = frame[LABEL_COLUMN].to_numpy()
    customers = frame[ID_COLUMN].to_numpy()
    if dates == "all":
        rows = np.flatnonzero(split.final)
        masks = []
        for fit_rows, held_out in fold_indices(label[rows], customers[rows], folds, seed):
            fit, validation = np.zeros(len(frame), dtype=bool), np.zeros(len(frame), dtype=bool)
            fit[rows[fit_rows]], validation[rows[held_out]] = True, True
            masks.append((fit, validation))
        return masks
    observed = frame[OBSERVATION_COLUMN].to_numpy()
    at_validation = split.final & np.isin(observed, np.unique(observed[split.validation]))
    at_training = split.final & ~at_validation
    rows = np.flatnonzero(at_validation)
    masks = []
    for _, held_out in fold_indices(label[rows], customers[rows], folds, seed):
        validation = np.zeros(len(frame), dtype=bool)
        validation[rows[held_out]] = True
        fit = at_training & ~np.isin(customers, customers[rows[held_out]])
        masks.append((fit, validation))
    return masks


def validation_folds(
    data: LabData, split: Split, search: SearchConfig, seed: int, objective: str | None = None
) -> list[tuple[Pool, Pool]]:
    """(train, validation) pools a trial fits on: K folds of train+validation, K customer folds of
    events, or the one holdout."""
    frame, schema = data.table.frame, data.table.schema
    label = frame[LABEL_COLUMN].to_numpy()
    objective = objective or search_objective(data, split, search)
    if objective == "customer_folds":
        masks = customer_folds(frame, split, search.folds, seed, search.customer_fold_dates)
        churners = [int(label[held].sum()) for _, held in masks]
        log.info("customer folds: %s churners in the folds' validation rows", churners)
        return [
            (pool(frame[fit], schema, label[fit]), pool(frame[held], schema, label[held]))
            for fit, held in masks
        ]
    if objective == "holdout":
        return [
            (
                pool(frame[split.train], schema, label[split.train]),
                pool(frame[split.validation], schema, label[split.validation]),
            )
        ]
    rows = frame[split.final]
    features, rows_label = schema.coerce(rows), label[split.final]
    categorical = schema.categorical_names
    return [
        (
            Pool(features.iloc[fit_rows], rows_label[fit_rows], cat_features=categorical),
            Pool(features.iloc[held_out], rows_label[held_out], cat_features=categorical),
        )
        for fit_rows, held_out in fold_indices(rows_label, None, search.folds, seed)
    ]


@dataclass
class TrialRunner:
    """Runs this worker's share of the study as an ask/tell loop; each trial is a nested MLflow run."""

    study: optuna.Study
    search: SearchConfig
    seed: int
    worker: str
    client: MlflowClient
    experiment: str
    parent_run_id: str
    folds: list[tuple[Pool, Pool]]  # (train, validation): K folds, or one holdout pair

    @property
    def cross_validated(self) -> bool:
        return len(self.folds) > 1

    @classmethod
    def for_split(
        cls,
        study: optuna.Study,
        data: LabData,
        split: Split,
        search: SearchConfig,
        seed: int,
        objective: str | None = None,
        **kwargs: Any,
    ) -> TrialRunner:
        folds = validation_folds(data, split, search, seed, objective)
        return cls(study=study, search=search, seed=seed, folds=folds, **kwargs)

    def run(self, budget: int | None, timeout: float | None) -> int:
        """Trials until the study's budget (all workers) is used or the timeout passes; returns how many."""
        started = time.monotonic()
        already = len(studies.finished_trials(self.study))
        bar = tqdm(
            total=budget,
            initial=min(already, budget) if budget else already,
            desc=f"tune {self.study.study_name}",
            unit="trial",
            dynamic_ncols=True,
        )
        count = 0
        try:
            while budget is None or studies.started_trials(self.study) < budget:
                if timeout is not None and time.monotonic() - started >= timeout:
                    log.info("timeout of %.0f s reached", timeout)
                    break
                trial = self.study.ask()
                # Seeded per trial number (training.tune docstring): reproducible alone, distinct per worker.
                self.study.sampler = sampler(self.search, self.seed + trial.number)
                trial.set_user_attr(studies.WORKER_ATTR, self.worker)
                state = self.run_trial(trial)
                count += 1
                bar.update(1)
                best = self.best_value()
                bar.set_postfix(last=state.name.lower(), best="n/a" if best is None else f"{best:.4f}")
        finally:
            bar.close()
        return count

    def best_value(self) -> float | None:
        try:
            return float(self.study.best_value)
        except ValueError:  # no completed trial yet
            return None

    def run_trial(self, trial: optuna.Trial) -> TrialState:
        search = self.search
        run_id = runs.start_trial_run(
            self.client, self.experiment, self.parent_run_id, self.study.study_name, trial.number
        )
        params = suggest_params(trial, search.space)
        state, value, seconds, iterations = TrialState.FAIL, None, 0.0, 0
        fold_scores: list[float] = []
        fold_iterations: list[int] = []
        try:
            for number, (train, validation) in enumerate(self.folds):
                callback = (
                    PruningCallback(trial, search.metric, search.pruning.report_every)
                    if search.pruning.enabled and not self.cross_validated
                    else None
                )
                fit = fit_with_early_stopping(
                    params, search, self.seed, train, validation, [callback] if callback else None
                )
                seconds += fit.seconds
                fold_scores.append(fit.validation_score)
                fold_iterations.append(fit.best_iteration + 1)
                if callback:
                    callback.check_pruned()
                elif search.pruning.enabled and number < len(self.folds) - 1:
                    trial.report(float(np.mean(fold_scores)), step=number)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after fold {number + 1} of {len(self.folds)}")
            iterations = round(float(np.mean(fold_iterations)))
            trial.set_user_attr(BEST_ITERATIONS_ATTR, iterations)
            trial.set_user_attr(FOLD_SCORES_ATTR, fold_scores)  # the selection's standard error
            state, value = TrialState.COMPLETE, float(np.mean(fold_scores))
        except optuna.TrialPruned as pruned:
            state = TrialState.PRUNED
            # What was fitted before the stop, not 0: the log and the trial run say how far it got.
            iterations = round(float(np.mean(fold_iterations))) if fold_iterations else 0
            log.info("trial %d pruned: %s", trial.number, pruned)
        except CatBoostError as error:
            log.warning("trial %d failed in CatBoost: %s", trial.number, error)
            trial.set_user_attr(TRIAL_ERROR_ATTR, f"CatBoost: {str(error)[:300]}")
        except BaseException:
            # Never leave a trial RUNNING in a shared study: the other workers would wait for it.
            self.study.tell(trial, state=TrialState.FAIL)
            runs.finish_trial_run(self.client, run_id, params, {}, "FAIL")
            raise
        if state == TrialState.COMPLETE:
            frozen = self.study.tell(trial, value)
        else:
            frozen = self.study.tell(trial, state=state)
        value = frozen.value if frozen.value is not None else value  # a pruned trial keeps its last report
        metrics = {
            "fit_seconds": seconds,
            "best_iterations": iterations,
            "pruned": float(state == TrialState.PRUNED),
            "folds_fitted": float(len(fold_scores)),
        }
        if value is not None:
            metrics[f"validation_{search.metric.lower()}"] = value
        if self.cross_validated:
            for number, score in enumerate(fold_scores, start=1):
                metrics[f"validation_{search.metric.lower()}_fold{number}"] = score
        runs.finish_trial_run(self.client, run_id, params, metrics, state.name)
        shown = "n/a" if value is None else f"{value:.4f}"
        where = f"mean of {len(fold_scores)} folds" if self.cross_validated else "holdout"
        counted = "best iteration when stopped" if state == TrialState.PRUNED else "iterations"
        log.info(
            "trial %d %s: validation %s %s (%s), %d %s, %.1f s",
            *(trial.number, state.name.lower(), search.metric, shown, where, iterations, counted, seconds),
        )
        return state
