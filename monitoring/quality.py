"""`churnguard quality`: label-delayed evaluation of logged predictions, per scoring cohort.

Before labels mature, each cohort shows the quality its calibrated probabilities promise (expected
ROC-AUC, precision and recall per tier, churn rate, with the band chance alone allows). Once outcomes
arrive, the realized metrics stand beside them: ROC-AUC, precision of the high tier, calibration (ECE,
predicted vs observed rate), plus Evidently's classification report on the matured rows.
Writes `quality_report.html`, `quality_summary.json` and `classification_report.html`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnguard.schema import ID_COLUMN
from churnguard.settings import state_dir
from monitoring import expected as metrics
from monitoring.html import banner, escape, model_label, page, table
from monitoring.inputs import (
    PREDICTION,
    PREDICTION_ALIASES,
    TIER,
    MonitoredModel,
    MonitoringInputError,
    load_model,
    read_logged_predictions,
    time_column,
)
from monitoring.outcomes import (
    SCORED_AT,
    Outcomes,
    label_predictions,
    outcomes_from_dataset,
    read_outcomes_file,
)
from monitoring.policy import MonitoringConfig, QualityPolicy, load_monitoring_config
from monitoring.records import log_to_mlflow

log = logging.getLogger(__name__)

REPORT_FILE = "quality_report.html"
SUMMARY_FILE = "quality_summary.json"
CLASSIFICATION_FILE = "classification_report.html"


@dataclass
class QualityResult:
    status: str  # "ok" (some labels matured), "awaiting_labels" or "no_predictions"
    cohorts: list[dict[str, Any]]
    overall: dict[str, Any]
    summary: dict[str, Any]
    report_path: Path
    summary_path: Path
    classification_report_path: Path | None = None
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def realized_auc(self) -> float | None:
        value = self.overall.get("realized", {}).get("roc_auc")
        return None if value is None or math.isnan(value) else value

    @property
    def realized_ece(self) -> float | None:
        value = self.overall.get("realized", {}).get("ece")
        return None if value is None or math.isnan(value) else value


def run_quality(
    model_uri: str | None,
    outcomes: Path | None,
    dataset: str | None,
    out_dir: Path | None,
    *,
    config: MonitoringConfig | None = None,
    predictions: pd.DataFrame | None = None,
    record: bool = True,
) -> QualityResult:
    """Join logged predictions with matured outcomes and compare expected with realized quality."""
    config = config or load_monitoring_config()
    uri = model_uri or config.model
    log.info("[1/4] loading model %s", uri)
    model = load_model(uri)
    log.info("[2/4] reading logged predictions and outcomes")
    logged = normalise_predictions(
        read_logged_predictions(None) if predictions is None else predictions, model
    )
    if outcomes is not None:
        known = read_outcomes_file(outcomes)
    elif dataset is not None:
        known = outcomes_from_dataset(dataset)
    else:
        known = outcomes_from_dataset(model.artifact.contract.dataset)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (
        Path(out_dir)
        if out_dir
        else state_dir() / "monitoring" / "quality" / f"{model.name}-v{model.version}-{stamp}"
    )
    log.info("[3/4] evaluating %s predictions against %s", f"{len(logged):,}", known.source)
    result = assess_quality(model, logged, known, config.quality, out)
    if record:
        log.info("[4/4] recording the result in MLflow")
        record_quality(result, model, config, stamp)
    log.info("quality: %s -> %s", result.status, result.report_path)
    return result


def normalise_predictions(frame: pd.DataFrame, model: MonitoredModel) -> pd.DataFrame:
    """customer_id, scored_at, prediction, alert_tier from whatever the prediction log calls them."""
    when = time_column(frame)
    probability = (
        PREDICTION
        if PREDICTION in frame.columns
        else next((name for name in PREDICTION_ALIASES if name in frame.columns), None)
    )
    missing = [
        what
        for what, column in (
            (ID_COLUMN, ID_COLUMN if ID_COLUMN in frame.columns else None),
            ("time", when),
            ("probability", probability),
        )
        if column is None
    ]
    if missing:
        raise MonitoringInputError(
            f"predictions lack {', '.join(missing)}; columns are {list(frame.columns)}"
        )
    if "model_version" in frame.columns and model.version not in {"local", "unknown"}:
        frame = frame[frame["model_version"].astype(str) == str(model.version)]
    out = pd.DataFrame(
        {
            ID_COLUMN: frame[ID_COLUMN].astype(str).to_numpy(),
            SCORED_AT: pd.to_datetime(frame[when], utc=True).dt.tz_localize(None).to_numpy(),
            PREDICTION: pd.to_numeric(frame[probability], errors="coerce").to_numpy(dtype=float),
        }
    )
    out = out[out[PREDICTION].notna()].reset_index(drop=True)
    out[TIER] = model.artifact.tiers(out[PREDICTION].to_numpy())
    return out


def horizon_for(model: MonitoredModel, policy: QualityPolicy) -> int:
    return policy.horizon_days or model.artifact.contract.horizon_days or 90


def cohort_metrics(frame: pd.DataFrame, policy: QualityPolicy) -> dict[str, Any]:
    """Expected quality on all rows, and expected vs realized on the matured rows."""
    p, tiers = frame[PREDICTION].to_numpy(), frame[TIER].to_numpy()
    result: dict[str, Any] = {
        "rows": len(frame),
        "matured": int(frame["matured"].sum()),
        "expected": {
            "churn_rate": float(p.mean()) if len(p) else float("nan"),
            "roc_auc": metrics.expected_auc(p),
            "tiers": metrics.expected_tier_metrics(p, tiers),
        },
    }
    labelled = frame[frame["matured"]]
    if len(labelled) >= policy.min_labelled:
        lp, lt, y = labelled[PREDICTION].to_numpy(), labelled[TIER].to_numpy(), labelled["label"].to_numpy()
        result["expected_on_matured"] = {
            "churn_rate": float(lp.mean()),
            "roc_auc": metrics.expected_auc(lp),
            "tiers": metrics.expected_tier_metrics(lp, lt),
            "bands": metrics.simulated_bands(lp, lt, policy.ece_bins, policy.simulations, policy.seed),
        }
        result["realized"] = {
            "churn_rate": float(y.mean()),
            "roc_auc": metrics.realized_auc(lp, y),
            "ece": metrics.expected_calibration_error(lp, y, policy.ece_bins),
            "tiers": metrics.realized_tier_metrics(y, lt),
            "calibration": metrics.calibration_table(lp, y, policy.ece_bins),
        }
    return result


def assess_quality(
    model: MonitoredModel, predictions: pd.DataFrame, outcomes: Outcomes, policy: QualityPolicy, out_dir: Path
) -> QualityResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    horizon = horizon_for(model, policy)
    labelled = label_predictions(predictions, outcomes, horizon)
    labelled["cohort"] = labelled[SCORED_AT].dt.to_period(policy.cohort).astype(str)
    cohorts = [
        {"cohort": name, **cohort_metrics(group, policy)}
        for name, group in labelled.groupby("cohort", sort=True)
    ]
    overall = cohort_metrics(labelled, policy) if len(labelled) else {"rows": 0, "matured": 0}
    notes = []
    if not len(labelled):
        status = "no_predictions"
        notes.append("no logged predictions of this model version to evaluate")
    elif overall["matured"] < policy.min_labelled:
        status = "awaiting_labels"
        notes.append(
            f"{overall['matured']:,} of {len(labelled):,} predictions have matured labels "
            f"(horizon {horizon} days, outcomes as of {outcomes.as_of:%Y-%m-%d}); realized metrics need "
            f"{policy.min_labelled} (quality.min_labelled): showing expected quality only"
        )
    else:
        status = "ok"
    test_auc = model.artifact.contract.metrics.get("test_roc_auc")
    summary = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status,
        "model": {
            "uri": model.resolved.uri,
            "name": model.name,
            "version": model.version,
            "run_id": model.run_id,
        },
        "outcomes": {"source": outcomes.source, "as_of": outcomes.as_of.isoformat(), "horizon_days": horizon},
        "thresholds": model.artifact.contract.thresholds.model_dump(),
        "model_test_roc_auc": test_auc,
        "policy": policy.model_dump(),
        "overall": overall,
        "cohorts": cohorts,
        "notes": notes,
    }
    report_path, summary_path = out_dir / REPORT_FILE, out_dir / SUMMARY_FILE
    summary_path.write_text(json.dumps(summary, indent=2, default=float))
    classification = None
    if status == "ok":
        classification = out_dir / CLASSIFICATION_FILE
        evidently_classification(labelled[labelled["matured"]], model, classification)
        summary["classification_report"] = str(classification)
        summary_path.write_text(json.dumps(summary, indent=2, default=float))
    report_path.write_text(quality_page(summary))
    return QualityResult(
        status, cohorts, overall, summary, report_path, summary_path, classification, notes=notes
    )


def evidently_classification(frame: pd.DataFrame, model: MonitoredModel, path: Path) -> None:
    """Evidently's classification report on matured rows; labels at the high-tier threshold."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    data = pd.DataFrame(
        {"target": frame["label"].astype(int).to_numpy(), PREDICTION: frame[PREDICTION].to_numpy()}
    )
    definition = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas=PREDICTION, pos_label=1)],
        numerical_columns=[PREDICTION],
    )
    threshold = model.artifact.contract.thresholds.high
    snapshot = Report([ClassificationPreset(probas_threshold=threshold)]).run(
        Dataset.from_pandas(data, data_definition=definition), None
    )
    snapshot.save_html(str(path))


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _band(bands: dict[str, Any], key: str, fmt) -> str:
    band = bands.get(key)
    return f"{fmt(band['low'])}-{fmt(band['high'])}" if band else "n/a"


def quality_page(summary: dict[str, Any]) -> str:
    rows = []
    for cohort in [*summary["cohorts"], {"cohort": "all", **summary["overall"]}]:
        if "rows" not in cohort or not cohort["rows"]:
            continue
        exp = cohort.get("expected_on_matured") or cohort["expected"]
        real = cohort.get("realized", {})
        bands = exp.get("bands", {})
        rows.append(
            [
                cohort["cohort"],
                f"{cohort['rows']:,}",
                f"{cohort['matured']:,}",
                _num(exp["roc_auc"]),
                _num(real.get("roc_auc")),
                _band(bands, "roc_auc", _num),
                _pct(exp["tiers"]["high"]["precision"]),
                _pct(real.get("tiers", {}).get("high", {}).get("precision")),
                _pct(exp["tiers"]["high"]["recall"]),
                _pct(real.get("tiers", {}).get("high", {}).get("recall")),
                _pct(exp["churn_rate"]),
                _pct(real.get("churn_rate")),
                _num(real.get("ece")),
                _band(bands, "ece", _num),
            ]
        )
    headers = [
        "cohort", "rows", "matured",
        "AUC expected", "AUC realized", "AUC band (5-95%)",
        "high precision expected", "high precision realized",
        "high recall expected", "high recall realized",
        "churn rate predicted", "churn rate observed",
        "ECE realized", "ECE band if calibrated",
    ]  # fmt: skip
    tables = [table(headers, rows, "churnguard-quality")]
    calibration = summary["overall"].get("realized", {}).get("calibration", [])
    if calibration:
        tables.append(
            table(
                ["bin rows", "mean predicted", "observed rate"],
                [[f"{b['rows']:,}", _pct(b["predicted"]), _pct(b["observed"])] for b in calibration],
                "churnguard-calibration",
            )
        )
    model, out = summary["model"], summary["outcomes"]
    paragraphs = [
        f"Model {model_label(model['name'], model['version'])} "
        f"(test ROC-AUC {_num(summary['model_test_roc_auc'])}); outcomes: "
        f"{out['source']} as of {out['as_of'][:10]}, horizon {out['horizon_days']} days.",
        "Expected values assume the calibrated probabilities are right: labels drawn from them would land "
        "inside the band 90% of the time. Where labels have matured, expected is computed on the same rows.",
        *summary["notes"],
    ]
    if summary.get("classification_report"):
        paragraphs.append(f"Evidently classification report: {Path(summary['classification_report']).name}")
    verdict = {
        "ok": "Realized quality available",
        "awaiting_labels": "Awaiting labels: expected quality only",
        "no_predictions": "No predictions to evaluate",
    }[summary["status"]]
    body = banner("churnguard quality: expected vs realized", verdict, False, paragraphs, tables)
    return page(f"churnguard quality {escape(model['name'])}", body)


def record_quality(
    result: QualityResult, model: MonitoredModel, config: MonitoringConfig, stamp: str
) -> None:
    overall = result.overall
    values = {
        "rows": float(overall.get("rows", 0)),
        "matured": float(overall.get("matured", 0)),
        "expected_roc_auc": overall.get("expected", {}).get("roc_auc"),
        "realized_roc_auc": result.realized_auc,
        "realized_ece": result.realized_ece,
        "realized_churn_rate": overall.get("realized", {}).get("churn_rate"),
        "realized_high_precision": overall.get("realized", {})
        .get("tiers", {})
        .get("high", {})
        .get("precision"),
    }
    files = {"html": result.report_path, "json": result.summary_path}
    if result.classification_report_path:
        files["classification"] = result.classification_report_path
    result.mlflow_run_id = log_to_mlflow(
        "quality",
        run_id=model.run_id,
        experiment=config.experiment,
        tags={"model_name": model.name, "model_version": str(model.version), "status": result.status},
        metrics={
            key: float(value) for key, value in values.items() if value is not None and not np.isnan(value)
        },
        files=files,
        artifact_path=f"monitoring/quality/{stamp}",
    )
