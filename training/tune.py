"""`churnguard tune`: an Optuna study over CatBoost parameters, tracked in MLflow, ending in a
registered, calibrated challenger.

Each trial scores K-fold cross-validation over train+validation on snapshot data, or the out-of-time
validation rows on events data (training.trials). The final model averages K fold models with the best
trial's settings into one CatBoost model, calibrated on their out-of-fold predictions (training.final).

One study, many workers. Every `tune` process with the same `--storage` and `--study` joins the same
study and runs trials until the study's budget (`--trials`, counted over all workers) is used up or its
own `--timeout` passes. Exactly one worker then fits and registers the final model: the one that
finished the study's last trial, which every worker can work out from the storage once no trial is
running. The worker that created the study opens the MLflow parent run; every trial, whoever ran it, is
a nested run under it. `final=False` (`--no-final`) only runs trials.

Reproducible: trial k samples with TPE seeded `seed + k` given the history, and CatBoost uses `seed`,
so one worker with the same seed on the same data gives the same trials and the same final metrics
(a `timeout` or several workers make the trial set depend on timing).
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow import MlflowClient
from optuna.trial import TrialState
from tqdm.auto import tqdm

from churnguard.config import ConfigError, UsageError
from churnguard.datasets import DatasetConfig, config_hash, load_dataset_config
from churnguard.scoring import load_scoring_config
from churnguard.tracking import configure_mlflow, experiment_id
from training import plots, runs, studies
from training.baselines import BASELINE_TAG, Baselines, measure_baselines
from training.config import TrainingConfig, load_training_config
from training.data import LabData, load_lab_data
from training.final import fit_final
from training.fit import default_point
from training.registry import log_and_register
from training.selection import DEFAULTS_ATTR, Selection, select_trial
from training.splits import TEST_KEYS_FILE, Split, make_split
from training.trials import BEST_ITERATIONS_ATTR, TRIAL_ERROR_ATTR, TrialRunner, pruner, search_objective

log = logging.getLogger(__name__)

DATA_REPORT_FILE = "data_report.txt"  # the loaders' report, in the study's parent run
QUALITY_TAG = "quality_warning"  # parent run and model version tag when the test metrics say "do not trust"


class NoCompletedTrial(UsageError):
    """Every trial failed or was pruned (or none ran): there is nothing to fit, register or promote."""


def quality_warnings(metrics: dict[str, float]) -> list[str]:
    """What the test metrics say against using the model at all."""
    auc = metrics.get("test_roc_auc")
    if auc is not None and auc < 0.5:
        return [
            f"test ROC-AUC {auc:.3f} is below 0.5: on the held-out test rows the model ranks churners "
            "worse than a coin. Do not promote it before finding out why (labels, a leak that does not "
            "hold at test time, a shift between the training and test periods)."
        ]
    return []


def card_with_baselines(card: str, baselines: Baselines, metrics: dict[str, float]) -> str:
    """The model card with the baselines' table after the test metrics, before the limits."""
    head, limits, tail = card.partition("\n## Limits")
    return f"{head}\n{baselines.card_section(metrics)}{limits}{tail}"


def card_with_selection(card: str, selection: Selection) -> str:
    """The model card's training section says which trial the model was fitted with, and why."""
    marker = "\n- model: "
    head, found, tail = card.partition(marker)
    if not found:
        return f"{card}\n- trial selection: {selection.reason}\n"
    return f"{head}\n- trial selection: {selection.reason}{marker}{tail}"


def card_with_warnings(card: str, warnings: list[str]) -> str:
    """The model card with a warning section right under its title."""
    if not warnings:
        return card
    title, _, rest = card.partition("\n")
    section = "\n".join(["", "## WARNING", *[f"- **{warning}**" for warning in warnings], ""])
    return f"{title}\n{section}{rest}"


def log_data_report(report) -> None:
    """The loaders' report in the tune log: drops and label problems must not pass unseen."""
    if report is None:
        return
    for line in report.format().splitlines():
        if "WARNING:" in line or "ERROR:" in line:
            log.warning("data: %s", line.strip())
        else:
            log.info("data: %s", line.strip())


@dataclass
class TuneResult:
    dataset: str
    study_name: str
    storage: str  # without password
    metric: str
    trials_run: int  # by this worker
    trials_finished: int  # in the whole study
    trials_pruned: int
    best_value: float | None
    best_params: dict[str, Any]
    parent_run_id: str | None
    finalized: bool  # this worker fitted and registered the final model
    model_name: str | None = None
    model_version: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # quality_warnings of the registered model
    baselines: dict[str, float] = field(default_factory=dict)  # baseline_<name>_test_<metric>
    baseline_warnings: list[str] = field(default_factory=list)  # a baseline does as well as the model
    selected_trial: int | None = None  # the trial the final model was fitted with (training.selection)
    selection: str = ""  # why that trial
    seconds: float = 0.0

    def summary(self) -> str:
        best = "n/a" if self.best_value is None else f"{self.best_value:.4f}"
        text = (
            f"tune {self.dataset}: study '{self.study_name}' {self.trials_run} trials here, "
            f"{self.trials_finished} in the study ({self.trials_pruned} pruned), "
            f"best validation {self.metric} {best}, {self.seconds:.0f} s"
        )
        if self.finalized:
            auc = self.test_metrics.get("test_roc_auc", float("nan"))
            ece = self.test_metrics.get("test_ece", float("nan"))
            text += f"; registered {self.model_name} v{self.model_version}"
            text += f" (test ROC-AUC {auc:.4f}, ECE {ece:.4f})"
            text += f"\n  fitted with {self.selection}"
            for name in sorted({key.split("_test_")[0] for key in self.baselines}):
                text += (
                    f"\n  {name.removeprefix('baseline_')} on the same test rows: "
                    f"ROC-AUC {self.baselines[f'{name}_test_roc_auc']:.4f}, "
                    f"PR-AUC {self.baselines[f'{name}_test_pr_auc']:.4f}"
                )
        text += "".join(f"\nWARNING: {warning}" for warning in [*self.warnings, *self.baseline_warnings])
        return text


def run_tune(
    dataset: str,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    seed: int | None = None,
    *,
    final: bool = True,
    confirmed_labels: pd.DataFrame | None = None,
) -> TuneResult:
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be positive, not {timeout}")
    started = time.perf_counter()
    config = load_training_config()
    dataset_config = load_dataset_config(dataset)
    seed = config.search.seed if seed is None else seed
    budget = trials if trials is not None else (None if timeout is not None else config.search.trials)
    study_name = study or f"{dataset_config.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    worker = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    where = studies.redact(storage)
    log.info(
        "tune %s: study '%s' on %s, budget %s trials, timeout %s s, seed %d",
        *(dataset_config.name, study_name, where, budget or "no", timeout or "no", seed),
    )

    data = load_lab_data(dataset_config, confirmed_labels)
    log_data_report(data.table.report)
    split = make_split(data.table, config.split)
    log.info("split (%s, seed %d): %s", split.kind, split.seed, split.sizes())

    configure_mlflow()
    client = MlflowClient()
    experiment = experiment_id(config.experiment_name(dataset_config.name))
    objective = search_objective(data, split, config.search)
    cross_validated = objective != "holdout"
    described = {
        "cross_validation": f"mean of {config.search.folds} folds of train+validation",
        "customer_folds": f"mean of {config.search.folds} customer folds, out of time",
        "holdout": "holdout",
    }
    log.info("objective: validation %s, %s", config.search.metric, described[objective])
    optuna_study, created = studies.open_study(
        studies.open_storage(storage),
        study_name,
        config.search.direction,
        pruner(config.search, cross_validated),
    )
    if created and config.search.start_from_defaults:
        optuna_study.enqueue_trial(default_point(config.search.space), user_attrs={DEFAULTS_ATTR: True})
    parent_run_id = _parent_run(
        client,
        experiment,
        optuna_study,
        created,
        dataset_config,
        config,
        split,
        storage,
        budget,
        seed,
        objective,
    )
    if objective == "customer_folds" and config.search.events_objective == "holdout":
        client.set_tag(parent_run_id, "objective_fallback", "too few churners in the validation rows")
    if created and data.table.report is not None:
        client.log_text(parent_run_id, data.table.report.format(), DATA_REPORT_FILE)
    if data.label_update is not None:  # the labels are not only the dataset's: say so on the run
        client.set_tag(parent_run_id, "feedback_labels", data.label_update.format())

    runner = TrialRunner.for_split(
        optuna_study,
        data,
        split,
        search=config.search,
        seed=seed,
        objective=objective,
        worker=worker,
        client=client,
        experiment=experiment,
        parent_run_id=parent_run_id,
    )
    trials_run = runner.run(budget, timeout)

    result = TuneResult(
        dataset=dataset_config.name,
        study_name=study_name,
        storage=studies.redact(storage),
        metric=config.search.metric,
        trials_run=trials_run,
        trials_finished=0,
        trials_pruned=0,
        best_value=None,
        best_params={},
        parent_run_id=parent_run_id,
        finalized=False,
    )
    if not studies.wait_for_running(optuna_study, config.final.wait_for_workers_seconds):
        log.warning("other workers' trials are still running; finishing without them")
    _summarise(optuna_study, result)
    if result.best_value is None:
        _refuse_without_completed_trial(client, optuna_study, parent_run_id, worker)
    if not trials_run and budget is not None and result.trials_finished >= budget:
        done = result.trials_finished
        log.info("study '%s' already has %d trials (budget %d): nothing to run", study_name, done, budget)
    elif studies.last_finisher(optuna_study) != worker:
        log.info("another worker finished the study's last trial; it logs the summary and the final model")
    elif optuna_study.user_attrs.get(studies.FINAL_ATTR):
        version = optuna_study.user_attrs[studies.FINAL_ATTR]
        log.info("study '%s' already has its final model (version %s)", study_name, version)
    else:
        _log_study_summary(client, parent_run_id, optuna_study)
        if final:
            selection = _log_selection(client, parent_run_id, optuna_study, config)
            _finalize(
                objective,
                optuna_study,
                selection,
                data,
                split,
                dataset_config,
                config,
                seed,
                parent_run_id,
                result,
            )
        client.set_terminated(parent_run_id, "FINISHED")
    result.seconds = time.perf_counter() - started
    log.info("%s", result.summary())
    return result


# ---------------------------------------------------------------------------------------------- study


def _parent_run(
    client: MlflowClient,
    experiment: str,
    study: optuna.Study,
    created: bool,
    dataset_config: DatasetConfig,
    config: TrainingConfig,
    split: Split,
    storage: str | None,
    budget: int | None,
    seed: int,
    objective: str,
) -> str:
    """The creating worker opens the parent run and publishes its id in the study; joiners read it."""
    if not created:
        run_id = studies.wait_for_study_attr(study, studies.PARENT_RUN_ATTR, timeout=60)
        if run_id:
            return run_id
        log.warning("study '%s' has no MLflow parent run yet; opening one for this worker", study.study_name)
    versions = runs.library_versions()
    run_id = runs.create_parent_run(
        client,
        experiment,
        study.study_name,
        params={
            "dataset": dataset_config.name,
            "dataset_hash": config_hash(dataset_config),
            "study": study.study_name,
            "storage": studies.redact(storage),
            "trial_budget": budget,
            "seed": seed,
            "split_seed": split.seed,
            "metric": config.search.metric,
            "objective": objective,
            "folds": config.search.folds,
            "final_model": config.final.model,
            "calibration": config.final.calibration,
            **{f"split_{name}_rows": size for name, size in split.sizes().items()},
        },
        tags={
            "dataset": dataset_config.name,
            "dataset_hash": config_hash(dataset_config),
            "git_commit": runs.git_commit(),
            **{f"version.{name}": version for name, version in versions.items()},
        },
    )
    if dataset_config._path is not None:
        client.log_artifact(run_id, str(dataset_config._path), "dataset")
    client.log_dict(run_id, dataset_config.model_dump(mode="json"), "dataset/effective_config.json")
    client.log_dict(run_id, config.model_dump(mode="json"), "training_config.json")
    study.set_user_attr(studies.PARENT_RUN_ATTR, run_id)
    return run_id


# ---------------------------------------------------------------------------------------------- ending


def _summarise(study: optuna.Study, result: TuneResult) -> None:
    finished = studies.finished_trials(study)
    result.trials_finished = len(finished)
    result.trials_pruned = sum(t.state == TrialState.PRUNED for t in finished)
    if any(t.state == TrialState.COMPLETE for t in finished):
        result.best_value = float(study.best_value)
        result.best_params = dict(study.best_params)


def _refuse_without_completed_trial(
    client: MlflowClient, study: optuna.Study, parent_run_id: str, worker: str
) -> None:
    """No completed trial means no model: say why and exit non-zero rather than end as if it worked."""
    finished = studies.finished_trials(study)
    failed = [t for t in finished if t.state == TrialState.FAIL]
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    if not finished:
        why = "no trial ran (the timeout passed before the first one started?)"
    else:
        why = f"{len(finished)} trials finished: {len(failed)} failed, {pruned} pruned"
        errors = [t.user_attrs[TRIAL_ERROR_ATTR] for t in failed if TRIAL_ERROR_ATTR in t.user_attrs]
        if errors:
            why += f"; the first failure: {errors[0]}"
    message = f"study '{study.study_name}': no completed trial, so no model was fitted or registered ({why})"
    log.error("%s", message)
    if studies.last_finisher(study) in (worker, None):
        if finished:
            _log_study_summary(client, parent_run_id, study)
        client.set_tag(parent_run_id, QUALITY_TAG, message)
        client.set_terminated(parent_run_id, "FAILED")
    raise NoCompletedTrial(message)


def _log_study_summary(client: MlflowClient, parent_run_id: str, study: optuna.Study) -> None:
    finished = studies.finished_trials(study)
    completed = [t for t in finished if t.state == TrialState.COMPLETE]
    metrics = {
        "trials_finished": len(finished),
        "trials_completed": len(completed),
        "trials_pruned": sum(t.state == TrialState.PRUNED for t in finished),
        "trials_failed": sum(t.state == TrialState.FAIL for t in finished),
    }
    for name, value in metrics.items():
        client.log_metric(parent_run_id, name, value)
    runs.log_figure(client, parent_run_id, plots.optimisation_history(study), "optimisation_history")
    if not completed:
        return
    best = study.best_trial
    client.log_metric(parent_run_id, "best_validation_value", float(best.value))
    # `iterations` in the search space is the ceiling early stopping works under: logged as
    # `best_iterations` it read as the 2,000 ceiling; the early-stopped count takes that name.
    early_stopped = int(best.user_attrs[BEST_ITERATIONS_ATTR])
    client.log_metric(parent_run_id, "best_iterations", early_stopped)
    client.log_batch(
        parent_run_id,
        params=[
            mlflow.entities.Param(
                "iterations_ceiling" if name == "iterations" else f"best_{name}", runs.param_value(value)
            )
            for name, value in best.params.items()
        ]
        + [
            mlflow.entities.Param("best_trial", str(best.number)),
            mlflow.entities.Param("best_iterations", str(early_stopped)),
        ],
    )
    if len(completed) >= 2:
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (ValueError, RuntimeError) as error:  # e.g. every completed trial has the same value
            log.info("parameter importance not available: %s", error)
        else:
            client.log_dict(parent_run_id, importances, "param_importances.json")
            runs.log_figure(
                client, parent_run_id, plots.parameter_importance(importances), "param_importances"
            )


def _log_selection(
    client: MlflowClient, parent_run_id: str, study: optuna.Study, config: TrainingConfig
) -> Selection:
    """Choose the trial the final model uses (training.selection) and say so in the log and the run."""
    selection = select_trial(study, config.search.defaults_within_se)
    log.info("trial selection: %s", selection.reason)
    for name, value in selection.tags().items():
        client.set_tag(parent_run_id, name, value)
    for name, value in selection.metrics().items():
        client.log_metric(parent_run_id, name, value)
    client.log_param(parent_run_id, "selected_trial", str(selection.trial.number))
    return selection


def _log_test_keys(keys) -> None:
    """The test rows' keys, so the promotion gate scores champion and challenger on the same rows."""
    with tempfile.TemporaryDirectory(prefix="churnguard-keys-") as scratch:
        path = Path(scratch) / TEST_KEYS_FILE
        keys.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "split")


def _finalize(
    objective: str,
    study: optuna.Study,
    selection: Selection,
    data: LabData,
    split: Split,
    dataset_config: DatasetConfig,
    config: TrainingConfig,
    seed: int,
    parent_run_id: str,
    result: TuneResult,
) -> None:
    chosen = selection.trial
    model_name = dataset_config.registered_model_name
    steps = tqdm(total=5, desc="final model", unit="step", dynamic_ncols=True)

    def step(message: str) -> None:
        steps.set_postfix_str(message)
        steps.update(1)
        log.info("final model: %s", message)

    try:
        final_model = fit_final(
            data,
            split,
            dict(chosen.params),
            int(chosen.user_attrs[BEST_ITERATIONS_ATTR]),
            dataset_config,
            config,
            load_scoring_config(),
            seed,
            model_name,
            step,
            objective,
        )
        step("baselines on the same test rows")
        baselines = measure_baselines(data, split, dataset_config, seed)
        warnings = quality_warnings(final_model.metrics)
        below_baseline = baselines.warnings(final_model.metrics)
        for warning in [*warnings, *below_baseline]:
            log.warning("!!! %s !!! %s", model_name, warning)
        card = card_with_baselines(final_model.card, baselines, final_model.metrics)
        card = card_with_selection(card, selection)
        card = card_with_warnings(card, [*warnings, *below_baseline])
        with runs.active_run(parent_run_id):
            mlflow.log_metrics(final_model.metrics)
            mlflow.log_metrics(baselines.metrics())
            if warnings:
                mlflow.set_tag(QUALITY_TAG, " ".join(warnings))
            if below_baseline:
                mlflow.set_tag(BASELINE_TAG, " ".join(below_baseline))
            mlflow.log_dict(
                final_model.artifact.contract.model_dump(mode="json", by_alias=True), "contract.json"
            )
            mlflow.log_text(card, "model_card.md")
            _log_test_keys(final_model.test_keys)
            client = MlflowClient()
            for name, figure in final_model.figures.items():
                runs.log_figure(client, parent_run_id, figure, name)
            step("logging and registering the model")
            tags = {
                "dataset": dataset_config.name,
                "dataset_hash": config_hash(dataset_config),
                "study": study.study_name,
                "run_id": parent_run_id,
                **selection.tags(),
                "split_seed": str(split.seed),
                **{name: f"{value:.6f}" for name, value in final_model.metrics.items()},
                **{name: f"{value:.6f}" for name, value in baselines.metrics().items()},
                **({QUALITY_TAG: " ".join(warnings)} if warnings else {}),
                **({BASELINE_TAG: " ".join(below_baseline)} if below_baseline else {}),
            }
            version = log_and_register(final_model.artifact, card, model_name, tags)
    finally:
        steps.close()
    study.set_user_attr(studies.FINAL_ATTR, version)
    result.selected_trial = chosen.number
    result.selection = selection.reason
    result.finalized = True
    result.model_name = model_name
    result.model_version = version
    result.test_metrics = final_model.metrics
    result.warnings = warnings
    result.baselines = baselines.metrics()
    result.baseline_warnings = below_baseline
