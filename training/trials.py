"""The trials of a study: an ask/tell loop over the search space, each trial a CatBoost fit with early
stopping and pruning on the validation rows, tracked as a nested MLflow run under the study's run."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from catboost import CatBoostError, Pool
from mlflow import MlflowClient
from optuna.trial import TrialState
from tqdm.auto import tqdm

from churnguard.schema import LABEL_COLUMN
from training import runs, studies
from training.config import SearchConfig
from training.data import LabData
from training.fit import PruningCallback, fit_with_early_stopping, pool, suggest_params
from training.splits import Split

log = logging.getLogger(__name__)

BEST_ITERATIONS_ATTR = "best_iterations"  # trial user attr: early-stopped iteration count


def pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    if not search.pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=search.pruning.startup_trials, n_warmup_steps=search.pruning.warmup_iterations
    )


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
    train_pool: Pool
    validation_pool: Pool

    @classmethod
    def for_split(cls, study: optuna.Study, data: LabData, split: Split, **kwargs: Any) -> TrialRunner:
        frame, schema = data.table.frame, data.table.schema
        label = frame[LABEL_COLUMN].to_numpy()
        return cls(
            study=study,
            train_pool=pool(frame[split.train], schema, label[split.train]),
            validation_pool=pool(frame[split.validation], schema, label[split.validation]),
            **kwargs,
        )

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
        callback = (
            PruningCallback(trial, search.metric, search.pruning.report_every)
            if search.pruning.enabled
            else None
        )
        state, value, seconds, iterations = TrialState.FAIL, None, 0.0, 0
        try:
            fit = fit_with_early_stopping(
                params,
                search,
                self.seed,
                self.train_pool,
                self.validation_pool,
                [callback] if callback else None,
            )
            seconds, iterations = fit.seconds, fit.best_iteration + 1
            trial.set_user_attr(BEST_ITERATIONS_ATTR, iterations)
            if callback:
                callback.check_pruned()
            state, value = TrialState.COMPLETE, fit.validation_score
        except optuna.TrialPruned as pruned:
            state = TrialState.PRUNED
            log.info("trial %d pruned: %s", trial.number, pruned)
        except CatBoostError as error:
            log.warning("trial %d failed in CatBoost: %s", trial.number, error)
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
        }
        if value is not None:
            metrics[f"validation_{search.metric.lower()}"] = value
        runs.finish_trial_run(self.client, run_id, params, metrics, state.name)
        shown = "n/a" if value is None else f"{value:.4f}"
        log.info(
            "trial %d %s: validation %s %s, %d iterations, %.1f s",
            *(trial.number, state.name.lower(), search.metric, shown, iterations, seconds),
        )
        return state
