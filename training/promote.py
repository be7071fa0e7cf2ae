"""`churnguard promote`: the gate that moves the `champion` alias to the `challenger`.

Champion and challenger are scored on the same rows, the most recent labelled data no fit saw: the
challenger's test rows for snapshot data (their keys are logged with its training run), and for
events data the challenger's held-out test customers at the latest labelled observation dates of the
current data. The challenger is promoted only if it beats the champion by `promotion.margin` on
`promotion.metric` and its ECE is not worse by more than `promotion.ece_tolerance`. The first
registered model, with no champion to beat, becomes champion. Every decision is an MLflow run.

Caveat: a champion trained with another split seed may have seen some of these rows, which flatters
it; the gate then errs towards keeping the champion.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from churnguard.artifact import ContractError, ModelArtifact
from churnguard.config import ConfigError
from churnguard.datasets import load_dataset_config
from churnguard.schema import LABEL_COLUMN
from churnguard.tracking import CHALLENGER, CHAMPION, configure_mlflow, experiment_id, resolve_model
from training import runs
from training.config import PromotionConfig, TrainingConfig, load_training_config
from training.data import load_lab_data
from training.evaluation import classification_metrics, finite
from training.splits import TEST_KEYS_FILE, latest_rows_of

log = logging.getLogger(__name__)


@dataclass
class PromotionDecision:
    model_name: str
    promoted: bool
    reason: str
    challenger_version: str | None
    champion_version: str | None  # the champion before this decision
    metric: str
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    run_id: str | None = None

    @property
    def exit_code(self) -> int:
        """What `churnguard promote` exits with: 0 when the challenger was promoted, 1 when not."""
        return 0 if self.promoted else 1


def run_promote(model_name: str | None = None, dataset: str | None = None) -> PromotionDecision:
    if model_name is None and dataset is None:
        raise ConfigError("promote needs a model name (--model) or a dataset (--dataset) to find it")
    config = load_training_config()
    configure_mlflow()
    client = MlflowClient()
    if model_name is None:
        model_name = load_dataset_config(dataset).registered_model_name
    challenger = _version(client, model_name, CHALLENGER)
    champion = _version(client, model_name, CHAMPION)
    decision = PromotionDecision(
        model_name=model_name,
        promoted=False,
        reason="",
        challenger_version=str(challenger.version) if challenger else None,
        champion_version=str(champion.version) if champion else None,
        metric=config.promotion.metric,
    )
    dataset = dataset or _dataset_of(client, model_name, challenger)

    if challenger is None:
        decision.reason = f"no '{CHALLENGER}' version of {model_name} to promote"
        return _record(client, config, dataset, decision)
    if dataset is None:
        raise ConfigError(f"{model_name} v{challenger.version} has no 'dataset' tag; pass --dataset")
    if champion is not None and str(champion.version) == str(challenger.version):
        decision.reason = f"v{challenger.version} is already {CHAMPION}"
        return _record(client, config, dataset, decision)

    rows, labels = _evaluation_rows(client, challenger, dataset, config)
    decision.rows = len(rows)
    decision.challenger_metrics = _score(model_name, challenger, rows, labels, config)
    if champion is None:
        decision.promoted, decision.reason = True, f"first registered model: no {CHAMPION} to beat"
    else:
        try:
            decision.champion_metrics = _score(model_name, champion, rows, labels, config)
        except (ContractError, KeyError) as error:
            decision.promoted = True
            decision.reason = f"{CHAMPION} v{champion.version} cannot score the current data: {error}"
        else:
            decision.promoted, decision.reason = compare(
                decision.challenger_metrics, decision.champion_metrics, config.promotion
            )
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, challenger.version)
        client.delete_registered_model_alias(model_name, CHALLENGER)  # nothing is waiting any more
    client.set_model_version_tag(model_name, challenger.version, "promotion", _decision_word(decision))
    return _record(client, config, dataset, decision)


def _dataset_of(client: MlflowClient, model_name: str, challenger: ModelVersion | None) -> str | None:
    """The dataset a model was trained on, from the challenger's tags or any version's."""
    if challenger is not None and challenger.tags.get("dataset"):
        return challenger.tags["dataset"]
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    return next((v.tags["dataset"] for v in versions if v.tags.get("dataset")), None)


def compare(
    challenger: dict[str, float], champion: dict[str, float], policy: PromotionConfig
) -> tuple[bool, str]:
    """Promote only on a clear win on the metric and no real loss of calibration."""
    name = policy.metric
    gain = challenger[name] - champion[name] if policy.higher_is_better else champion[name] - challenger[name]
    ece_loss = challenger["ece"] - champion["ece"]
    if gain < policy.margin:
        return False, (
            f"{name} {challenger[name]:.4f} vs champion {champion[name]:.4f}: "
            f"improvement {gain:+.4f} is below the margin {policy.margin}"
        )
    if ece_loss > policy.ece_tolerance:
        return False, (
            f"{name} improves by {gain:+.4f}, but ECE {challenger['ece']:.4f} vs {champion['ece']:.4f} "
            f"is worse by more than {policy.ece_tolerance}"
        )
    return True, (
        f"{name} {challenger[name]:.4f} vs champion {champion[name]:.4f} (+{gain:.4f} >= {policy.margin}); "
        f"ECE {challenger['ece']:.4f} vs {champion['ece']:.4f}"
    )


def _version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _evaluation_rows(
    client: MlflowClient, challenger: ModelVersion, dataset: str, config: TrainingConfig
) -> tuple[pd.DataFrame, np.ndarray]:
    run_id = challenger.tags.get("run_id") or challenger.run_id
    with tempfile.TemporaryDirectory(prefix="churnguard-keys-") as scratch:
        path = client.download_artifacts(run_id, f"split/{TEST_KEYS_FILE}", scratch)
        keys = pd.read_parquet(path)
    table = load_lab_data(load_dataset_config(dataset)).table
    rows = table.frame[latest_rows_of(table.frame, keys, config.split.events.test_dates)].reset_index(
        drop=True
    )
    if rows.empty or rows[LABEL_COLUMN].nunique() < 2:
        raise ConfigError(
            f"dataset '{dataset}' has no labelled rows of {challenger.name} v{challenger.version}'s held-out "
            "customers with both outcomes; the gate cannot compare the models"
        )
    return rows, rows[LABEL_COLUMN].to_numpy()


def _score(
    model_name: str, version: ModelVersion, rows: pd.DataFrame, labels: np.ndarray, config: TrainingConfig
) -> dict[str, float]:
    resolved = resolve_model(f"models:/{model_name}/{version.version}")
    artifact = ModelArtifact.load(Path(resolved.local_dir))
    probability = artifact.probability(rows)
    return finite(classification_metrics(probability, labels, config.evaluation.ece_bins))


def _decision_word(decision: PromotionDecision) -> str:
    return "promoted" if decision.promoted else "refused"


def _record(
    client: MlflowClient, config: TrainingConfig, dataset: str | None, decision: PromotionDecision
) -> PromotionDecision:
    """Every decision, promoted or not, is an MLflow run in the dataset's experiment."""
    word = _decision_word(decision)
    log.info(
        "promote %s v%s: %s (%s)", decision.model_name, decision.challenger_version, word, decision.reason
    )
    if dataset is None:
        log.warning("no dataset known for %s; the decision is not recorded in MLflow", decision.model_name)
        return decision
    experiment = experiment_id(config.experiment_name(dataset))
    tags = {
        runs.KIND_TAG: "promotion",
        "decision": word,
        "reason": decision.reason[:5000],
        "model_name": decision.model_name,
        "challenger_version": str(decision.challenger_version),
        "champion_version": str(decision.champion_version),
        "git_commit": runs.git_commit(),
    }
    name = f"promote-{decision.model_name}-v{decision.challenger_version}"
    with mlflow.start_run(experiment_id=experiment, run_name=name, tags=tags) as run:
        mlflow.log_params(
            {
                "metric": config.promotion.metric,
                "margin": config.promotion.margin,
                "ece_tolerance": config.promotion.ece_tolerance,
                "dataset": dataset,
                "rows": decision.rows,
            }
        )
        metrics = {f"challenger_{k}": v for k, v in decision.challenger_metrics.items()}
        metrics |= {f"champion_{k}": v for k, v in decision.champion_metrics.items()}
        metrics["promoted"] = float(decision.promoted)
        mlflow.log_metrics(metrics)
    decision.run_id = run.info.run_id
    return decision
