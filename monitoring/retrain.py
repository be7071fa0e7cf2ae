"""`churnguard retrain`: decide from drift, quality and model age whether to retrain, and if so do it.

The decision follows `retrain.triggers` in configs/monitoring.yaml. Retraining tunes and refits on the
dataset's newest data (`training.tune.run_tune`, which registers a `challenger`) and then runs the
promotion gate (`training.promote.run_promote`). Every decision, retrain or skip, is an MLflow run in
the monitoring experiment tagged `decision=retrain|skip`, with its reasons and its evidence: report
paths, drift and quality figures, the study, the challenger and the gate's verdict.

The lab's functions are passed in by the command line; only when they are not does the loop import
`training`, and then only when it retrains: `monitoring` never imports `training` at module level.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from churnguard.config import ConfigError
from churnguard.datasets import DataError, load_dataset_config
from monitoring.drift import DriftResult, important_columns, run_drift
from monitoring.html import model_label
from monitoring.inputs import MonitoredModel, MonitoringInputError, load_model
from monitoring.policy import MonitoringConfig, RetrainTriggers, load_monitoring_config
from monitoring.quality import QualityResult, run_quality

log = logging.getLogger(__name__)


@dataclass
class RetrainDecision:
    decision: Literal["retrain", "skip"]
    reasons: list[str]
    evidence: dict[str, Any]
    forced: bool = False
    mlflow_run_id: str | None = None
    tune: dict[str, Any] | None = None  # the study's outcome when it retrained
    promotion: dict[str, Any] | None = None  # the promotion gate's verdict

    @property
    def retrain(self) -> bool:
        return self.decision == "retrain"


def model_age_days(model: MonitoredModel, now: datetime) -> float | None:
    created = model.artifact.contract.created_at
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (now - moment).total_seconds() / 86_400


def decide(
    model: MonitoredModel,
    drift: DriftResult | None,
    quality: QualityResult | None,
    triggers: RetrainTriggers,
    force: bool = False,
    now: datetime | None = None,
) -> tuple[Literal["retrain", "skip"], list[str], dict[str, Any]]:
    """The retrain policy: returns (decision, reasons, evidence). Missing evidence never triggers."""
    now = now or datetime.now(UTC)
    reasons: list[str] = []
    evidence: dict[str, Any] = {}
    if force:
        reasons.append("forced (--force)")

    if drift is not None:
        evidence["drift"] = {
            "status": drift.status,
            "drift_detected": drift.drift_detected,
            "drifted_features": drift.drifted_features,
            "prediction_drift": drift.prediction_drift,
            "report": str(drift.report_path),
            "summary": str(drift.summary_path),
        }
        if drift.status == "ok":
            important = important_columns(model, triggers.important_features)
            evidence["important_features"] = important
            hit = [name for name in drift.drifted_features if name in important]
            if triggers.drift_on_important_features and hit:
                reasons.append(f"drift in important features: {', '.join(hit)}")
            if triggers.prediction_drift and drift.prediction_drift:
                reasons.append("the predicted probabilities or the tier mix drifted")

    test_auc = model.artifact.contract.metrics.get("test_roc_auc")
    if quality is not None:
        evidence["quality"] = {
            "status": quality.status,
            "realized_roc_auc": quality.realized_auc,
            "realized_ece": quality.realized_ece,
            "model_test_roc_auc": test_auc,
            "report": str(quality.report_path),
            "summary": str(quality.summary_path),
        }
        auc, ece = quality.realized_auc, quality.realized_ece
        if auc is not None and test_auc is not None and auc < test_auc - triggers.auc_drop:
            reasons.append(
                f"ROC-AUC fell to {auc:.3f} from {test_auc:.3f} at test (more than {triggers.auc_drop})"
            )
        if ece is not None and ece > triggers.max_ece:
            reasons.append(f"calibration error {ece:.3f} is above {triggers.max_ece}")

    age = model_age_days(model, now)
    evidence["model_age_days"] = age
    if age is not None and age > triggers.max_model_age_days:
        reasons.append(f"model is {age:.0f} days old (max {triggers.max_model_age_days})")
    return ("retrain" if reasons else "skip"), reasons, evidence


def run_retrain(
    dataset: str,
    model_uri: str | None,
    current: Path | None,
    since: datetime | None,
    force: bool,
    *,
    config: MonitoringConfig | None = None,
    outcomes: Path | None = None,
    tune: Callable[..., Any] | None = None,
    promote: Callable[..., Any] | None = None,
) -> RetrainDecision:
    """Check drift and quality of the served model, decide, and retrain + gate when the policy says so.

    `tune`/`promote` are the lab's `run_tune`/`run_promote`; the command line passes them in (it is the
    one place that wires the parts together). Left out, they are imported from `training` on first use.
    """
    config = config or load_monitoring_config()
    dataset_config = load_dataset_config(dataset)
    uri = model_uri or f"models:/{dataset_config.registered_model_name}@champion"
    log.info("[1/5] loading model %s", uri)
    model = load_model(uri)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    log.info("[2/5] checking drift")
    drift: DriftResult | None = None
    unavailable: dict[str, str] = {}
    try:
        drift = run_drift(uri, current, since, None, False, config)
    except MonitoringInputError as error:
        unavailable["drift"] = str(error)
        log.warning("drift check unavailable: %s", error)

    log.info("[3/5] checking label-delayed quality")
    quality: QualityResult | None = None
    try:
        quality = run_quality(uri, outcomes, None if outcomes else dataset, None, config=config)
    except (MonitoringInputError, DataError, ConfigError) as error:
        unavailable["quality"] = str(error)
        log.warning("quality check unavailable: %s", error)

    decision, reasons, evidence = decide(model, drift, quality, config.retrain.triggers, force)
    evidence["unavailable"] = unavailable
    result = RetrainDecision(decision, reasons, evidence, forced=force)
    log.info("[4/5] decision: %s%s", decision, f" ({'; '.join(reasons)})" if reasons else "")
    result.mlflow_run_id = record_decision(result, model, dataset, config, stamp)

    if result.retrain:
        log.info("[5/5] retraining on the newest data of '%s'", dataset)
        if tune is None:
            from training.tune import run_tune as tune
        if promote is None:
            from training.promote import run_promote as promote

        policy = config.retrain
        tuned = tune(
            dataset,
            trials=policy.trials,
            timeout=policy.timeout_seconds,
            storage=None,
            study=None,
            seed=policy.seed,
        )
        result.tune = _plain(asdict(tuned))
        gate = promote(model_name=tuned.model_name or dataset_config.registered_model_name, dataset=dataset)
        result.promotion = _plain(asdict(gate))
        record_outcome(result)
        log.info(
            "retrained: challenger v%s, %s (%s)",
            tuned.model_version,
            "promoted to champion" if gate.promoted else "not promoted",
            gate.reason,
        )
    else:
        log.info("[5/5] nothing to do: the model stays")
    return result


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numbers, text, lists, dicts)."""
    return json.loads(json.dumps(data, default=str))


def record_decision(
    result: RetrainDecision, model: MonitoredModel, dataset: str, config: MonitoringConfig, stamp: str
) -> str:
    import mlflow

    from churnguard.tracking import configure_mlflow, experiment_id

    configure_mlflow()
    tags = {
        "churnguard.kind": "retrain-decision",
        "decision": result.decision,
        "reasons": "; ".join(result.reasons) or "no trigger fired",
        "forced": str(result.forced).lower(),
        "model_name": model.name,
        "model_version": str(model.version),
        "dataset": dataset,
    }
    drift = result.evidence.get("drift", {})
    quality = result.evidence.get("quality", {})
    metrics = {
        "retrain": float(result.retrain),
        "drift_detected": float(bool(drift.get("drift_detected"))),
        "n_drifted_features": float(len(drift.get("drifted_features", []))),
        "realized_roc_auc": quality.get("realized_roc_auc"),
        "realized_ece": quality.get("realized_ece"),
        "model_age_days": result.evidence.get("model_age_days"),
    }
    with mlflow.start_run(
        experiment_id=experiment_id(config.experiment),
        run_name=f"retrain decision {model_label(model.name, str(model.version))}",
        tags=tags,
    ) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        mlflow.log_dict(
            {"decision": result.decision, "reasons": result.reasons, "evidence": result.evidence},
            "decision.json",
        )
        for kind, facts in (("drift", drift), ("quality", quality)):
            for key in ("report", "summary"):
                path = Path(facts.get(key, ""))
                if facts.get(key) and path.is_file():
                    mlflow.log_artifact(str(path), artifact_path=f"evidence/{kind}")
        run_id = run.info.run_id
    log.info("recorded decision '%s' in MLflow run %s", result.decision, run_id)
    return run_id


def record_outcome(result: RetrainDecision) -> None:
    """Add the study and the gate's verdict to the decision's run."""
    import mlflow

    tune, gate = result.tune or {}, result.promotion or {}
    with mlflow.start_run(run_id=result.mlflow_run_id):
        mlflow.set_tags(
            {
                "study": str(tune.get("study_name")),
                "challenger_version": str(tune.get("model_version")),
                "promoted": str(bool(gate.get("promoted"))).lower(),
                "promotion_reason": str(gate.get("reason", ""))[:5000],
            }
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "retrain_outcome.json"
            path.write_text(json.dumps({"tune": tune, "promotion": gate}, indent=2))
            mlflow.log_artifact(str(path))


__all__ = ["RetrainDecision", "decide", "run_retrain"]
