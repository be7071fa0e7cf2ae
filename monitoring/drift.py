"""`churnguard drift`: compare current data with the model's reference sample (Evidently 0.7).

Writes `drift_report.html` (Evidently's report under a churnguard summary) and `drift_summary.json`
to the output folder, logs both to MLflow next to the model, and adds the snapshot to the Evidently
workspace so `evidently ui --workspace <state>/evidently` shows drift over time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from churnguard.settings import state_dir
from monitoring.drift_checks import DriftChecks, run_checks
from monitoring.html import banner, inject_banner, model_label, page, table
from monitoring.inputs import (
    PREDICTION,
    TIER,
    MonitoredModel,
    MonitoringInputError,
    cap_rows,
    ensure_predictions,
    load_model,
    read_frame,
    read_logged_predictions,
    time_column,
    to_schema,
)
from monitoring.policy import DriftPolicy, MonitoringConfig, load_monitoring_config
from monitoring.records import add_to_workspace, log_to_mlflow

log = logging.getLogger(__name__)

REPORT_FILE = "drift_report.html"
SUMMARY_FILE = "drift_summary.json"
OK = "ok"
INSUFFICIENT = "insufficient_data"


@dataclass
class DriftResult:
    status: str  # "ok" or "insufficient_data" (no verdict)
    drift_detected: bool
    dataset_drift: bool
    prediction_drift: bool
    drifted_features: list[str]
    summary: dict[str, Any]
    report_path: Path
    summary_path: Path
    mlflow_run_id: str | None = None
    workspace_snapshot_id: str | None = None
    fail_on_drift: bool = False
    notes: list[str] = field(default_factory=list)
    snapshot: Any = field(default=None, repr=False)  # the Evidently Snapshot, for the workspace

    @property
    def exit_code(self) -> int:
        """What `churnguard drift` exits with: 1 only when asked to fail and drift was detected."""
        return 1 if self.fail_on_drift and self.drift_detected else 0


def run_drift(
    model_uri: str | None,
    current: Path | None,
    since: datetime | None,
    out_dir: Path | None,
    fail_on_drift: bool,
    config: MonitoringConfig | None = None,
    record: bool = True,
) -> DriftResult:
    """Load the model and the current data, check drift, write and record the results."""
    config = config or load_monitoring_config()
    uri = model_uri or config.model
    log.info("[1/4] loading model %s", uri)
    model = load_model(uri)
    log.info("[2/4] reading current data from %s", current or "the prediction log")
    frame = load_current(current, since, model)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (
        Path(out_dir)
        if out_dir
        else state_dir() / "monitoring" / "drift" / f"{model.name}-v{model.version}-{stamp}"
    )
    log.info("[3/4] checking drift of %s rows against the reference sample", f"{len(frame):,}")
    result = check_drift(model, frame, config.drift, out, source=str(current or "prediction log"))
    result.fail_on_drift = fail_on_drift
    if record:
        log.info("[4/4] recording the result in MLflow and the Evidently workspace")
        record_drift(result, model, config, stamp)
    log.info(
        "drift: %s%s -> %s",
        "DETECTED" if result.drift_detected else ("no verdict" if result.status == INSUFFICIENT else "none"),
        f" in {', '.join(result.drifted_features[:8])}" if result.drifted_features else "",
        result.report_path,
    )
    return result


def load_current(current: Path | None, since: datetime | None, model: MonitoredModel) -> pd.DataFrame:
    schema = model.artifact.schema
    if current is not None:
        frame = read_frame(Path(current), schema.categorical_names)
        when = time_column(frame)
        if since is not None and when is None:
            log.warning(
                "--since ignored: %s has no time column (one of scored_at, timestamp, logged_at)", current
            )
        elif since is not None:
            frame = frame[pd.to_datetime(frame[when], utc=True) >= _utc(since)]
        source = str(current)
    else:
        frame = read_logged_predictions(since)
        source = "prediction log"
        version = frame.get("model_version")
        if version is not None and model.version not in {"local", "unknown"}:
            # Probabilities are only comparable within one model version.
            frame = frame[version.astype(str) == str(model.version)]
            log.info("%s logged rows were scored by v%s", f"{len(frame):,}", model.version)
        if frame.empty:  # nothing logged yet: an empty frame in the schema gives "insufficient data"
            return to_schema(pd.DataFrame({name: [] for name in schema.names}), schema, source)
    return to_schema(frame, schema, source)


def check_drift(
    model: MonitoredModel, current: pd.DataFrame, policy: DriftPolicy, out_dir: Path, source: str = "current"
) -> DriftResult:
    """The drift verdict on frames already in the model's schema; writes the HTML and JSON to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = model.artifact
    reference = to_schema(artifact.reference, artifact.schema, "reference sample")
    rows = {"current": len(current), "reference": len(reference)}
    base: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "uri": model.resolved.uri,
            "name": model.name,
            "version": model.version,
            "run_id": model.run_id,
        },
        "source": source,
        "thresholds": thresholds(policy),
    }
    report_path, summary_path = out_dir / REPORT_FILE, out_dir / SUMMARY_FILE
    short = [side for side, count in rows.items() if count < policy.min_rows]
    if short:
        note = (
            f"insufficient data: {', '.join(f'{side} has {rows[side]:,} rows' for side in short)}, "
            f"the policy needs at least {policy.min_rows:,} (drift.min_rows); no verdict was made"
        )
        log.warning(note)
        summary = {
            **base,
            "status": INSUFFICIENT,
            "drift_detected": False,
            "dataset_drift": False,
            "prediction_drift": False,
            "rows": rows,
            "notes": [note],
            "drifted_features": [],
        }
        summary_path.write_text(json.dumps(summary, indent=2))
        report_path.write_text(
            page(
                "churnguard drift",
                banner("churnguard drift check", "No verdict: insufficient data", False, [note], []),
            )
        )
        return DriftResult(
            INSUFFICIENT, False, False, False, [], summary, report_path, summary_path, notes=[note]
        )

    # Sample first: rows that are not used need no scoring.
    current_used, current_sampled = cap_rows(current, policy.max_rows, policy.seed)
    reference_used, reference_sampled = cap_rows(reference, policy.max_rows, policy.seed)
    current_used, scored = ensure_predictions(current_used, artifact, str(model.version))
    if scored:
        log.info("scored %s current rows that had no prediction", f"{scored:,}")
    if PREDICTION not in reference_used.columns or reference_used[PREDICTION].isna().any():
        reference_used, _ = ensure_predictions(reference_used, artifact, str(model.version))
    else:
        reference_used = reference_used.assign(
            **{TIER: artifact.tiers(reference_used[PREDICTION].to_numpy()).astype(object)}
        )
    notes = []
    for side, sampled, used in (
        ("current", current_sampled, current_used),
        ("reference", reference_sampled, reference_used),
    ):
        if sampled:
            notes.append(
                f"sampled {len(used):,} of {rows[side]:,} {side} rows at random (drift.max_rows = "
                f"{policy.max_rows:,}) to bound time and memory"
            )
    for note in notes:
        log.info(note)

    checks = run_checks(
        reference_used,
        current_used,
        artifact.schema,
        policy,
        metadata={"model_name": model.name, "model_version": str(model.version), "source": source},
        tags=["churnguard", "drift"],
    )
    summary = summarize(checks, policy, base, rows, current_used, reference_used, notes, scored)
    alarm = summary["drift_detected"]
    # The run's name is what the workspace lists, so it carries the verdict.
    checks.snapshot.set_name(
        f"drift detected: {', '.join(c['column'] for c in summary['drifted_features'][:3]) or 'predictions'}"
        if alarm
        else "no drift"
    )

    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    checks.snapshot.save_html(str(report_path))
    inject_banner(report_path, summary_banner(summary))
    return DriftResult(
        OK,
        alarm,
        summary["dataset_drift"],
        summary["prediction_drift"],
        [c["column"] for c in summary["drifted_features"]],
        summary,
        report_path,
        summary_path,
        notes=notes,
        snapshot=checks.snapshot,
    )


def thresholds(policy: DriftPolicy) -> dict[str, Any]:
    return {
        "alpha": policy.alpha,
        "correction": policy.correction,
        "numeric": policy.numeric.model_dump(),
        "categorical": policy.categorical.model_dump(),
        "per_feature": {name: rule.model_dump() for name, rule in policy.per_feature.items()},
        "new_category_share": policy.new_category_share,
        "missing_increase": policy.missing_increase,
        "dataset_drift": policy.dataset.model_dump(),
        "min_rows": policy.min_rows,
        "max_rows": policy.max_rows,
    }


def summarize(
    checks: DriftChecks,
    policy: DriftPolicy,
    base: dict[str, Any],
    rows: dict[str, int],
    current: pd.DataFrame,
    reference: pd.DataFrame,
    notes: list[str],
    scored: int,
) -> dict[str, Any]:
    features = checks.features
    drifted = sorted(checks.drifted_features, key=lambda c: -(c.effect or 0.0))
    share = len(drifted) / len(features) if features else 0.0
    dataset_drift = len(drifted) >= policy.dataset.min_drifted_features or share >= policy.dataset.drift_share
    prediction_drift = any(c.drifted for c in checks.prediction)
    tier_mix = {
        "reference": reference[TIER].value_counts(normalize=True).round(4).to_dict(),
        "current": current[TIER].value_counts(normalize=True).round(4).to_dict(),
    }
    return {
        **base,
        "status": OK,
        "drift_detected": bool(dataset_drift or prediction_drift),
        "dataset_drift": bool(dataset_drift),
        "prediction_drift": bool(prediction_drift),
        "drifted_share": share,
        "n_drifted_features": len(drifted),
        "n_features": len(features),
        "drifted_features": [c.to_dict() for c in drifted],
        "prediction": {c.column: c.to_dict() for c in checks.prediction},
        "tier_mix": tier_mix,
        "mean_prediction": {
            "reference": float(reference[PREDICTION].mean()),
            "current": float(current[PREDICTION].mean()),
        },
        "new_categories": {
            c.column: {"values": c.new_categories, "share": c.new_category_share}
            for c in features
            if c.new_categories
        },
        "missing_values": {
            c.column: {"reference": c.missing_share_reference, "current": c.missing_share_current}
            for c in features
            if c.missing_share_current or c.missing_share_reference
        },
        "features": [c.to_dict() for c in features],
        "rows": {**rows, "current_used": len(current), "reference_used": len(reference), "scored": scored},
        "sampled": bool(notes),
        "notes": notes,
        "per_test_p_threshold": checks.p_threshold,
        "tested_columns": checks.tested_columns,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2e}" if 0 < abs(value) < 10 ** (-digits) else f"{value:.{digits}f}"


def verdict(summary: dict[str, Any]) -> str:
    if not summary["drift_detected"]:
        return "No drift detected"
    what = []
    if summary["dataset_drift"]:
        what.append(f"{len(summary['drifted_features'])} of {summary['n_features']} features drifted")
    if summary["prediction_drift"]:
        what.append("the predictions drifted")
    return "Drift detected: " + "; ".join(what)


def summary_text(summary: dict[str, Any], top: int = 8) -> str:
    """The verdict for a terminal: the largest shifts first, then the tier mix; the HTML has the rest."""
    lines = [verdict(summary)]
    drifted = sorted(summary["drifted_features"], key=lambda c: -(c["effect"] or 0))
    for c in drifted[:top]:
        lines.append(f"  {c['column']:<36} {c['group'] or '':<13} {c['effect_method']}={_fmt(c['effect'])}")
    if len(drifted) > top:
        lines.append(f"  ... and {len(drifted) - top} more (see the HTML report)")
    mix = summary["tier_mix"]
    shares = ", ".join(
        f"{tier} {mix['reference'].get(tier, 0):.1%} -> {mix['current'].get(tier, 0):.1%}"
        for tier in ("high", "medium", "low")
    )
    lines.append(f"  tier mix (reference -> current): {shares}")
    return "\n".join(lines)


def summary_banner(summary: dict[str, Any]) -> str:
    drifted = summary["drifted_features"]
    t = summary["thresholds"]
    model, used = summary["model"], summary["rows"]
    paragraphs = [
        f"Model {model_label(model['name'], model['version'])}; current data: {summary['source']}; "
        f"{used['current_used']:,} current vs {used['reference_used']:,} reference rows.",
        f"A column drifts when its {t['numeric']['test']}/{t['categorical']['test']} p-value is below "
        f"{summary['per_test_p_threshold']:.2g} (alpha {t['alpha']} / {summary['tested_columns']} columns, "
        f"{t['correction']}) and its effect ({t['numeric']['effect']} >= {t['numeric']['effect_threshold']}, "
        f"{t['categorical']['effect']} >= {t['categorical']['effect_threshold']}) is large enough; or when "
        f">= {t['new_category_share']:.0%} of rows carry unseen categories; or missing values rise by "
        f">= {t['missing_increase']:.0%}.",
        "Below, Evidently's panel per column shows the effect size against its floor; its 'drift detected' "
        "counts here only when the significance test agrees, as in the table.",
        *summary["notes"],
    ]
    rows = [
        [
            c["column"],
            c["group"] or "",
            "; ".join(c["reasons"]),
            f"{c['test_method']} p={_fmt(c['p_value'])} (< {_fmt(c['p_threshold'])})",
            f"{c['effect_method']}={_fmt(c['effect'])} (>= {c['effect_threshold']})",
        ]
        for c in [*[p for p in summary["prediction"].values() if p["drifted"]], *drifted]
    ]
    tables = [table(["column", "group", "why", "test", "effect"], rows, "churnguard-drifted")] if rows else []
    if summary["new_categories"]:
        tables.append(
            table(
                ["feature", "unseen categories", "share of rows"],
                [
                    [name, ", ".join(v["values"][:10]), f"{v['share']:.2%}"]
                    for name, v in summary["new_categories"].items()
                ],
                "churnguard-new-categories",
            )
        )
    mix = summary["tier_mix"]
    tables.append(
        table(
            ["alert tier", "reference share", "current share"],
            [
                [tier, f"{mix['reference'].get(tier, 0):.1%}", f"{mix['current'].get(tier, 0):.1%}"]
                for tier in ("high", "medium", "low")
            ],
            "churnguard-tier-mix",
        )
    )
    return banner("churnguard drift check", verdict(summary), summary["drift_detected"], paragraphs, tables)


def record_drift(result: DriftResult, model: MonitoredModel, config: MonitoringConfig, stamp: str) -> None:
    summary = result.summary
    metrics = {
        "drift_detected": float(result.drift_detected),
        "current_rows": float(summary["rows"]["current"]),
    }
    if result.status == OK:
        metrics |= {
            "dataset_drift": float(result.dataset_drift),
            "prediction_drift": float(result.prediction_drift),
            "drifted_share": summary["drifted_share"],
            "n_drifted_features": float(summary["n_drifted_features"]),
        }
        prediction = summary["prediction"].get(PREDICTION)
        if prediction and prediction["effect"] is not None:
            metrics["prediction_effect"] = prediction["effect"]
    tags = {
        "model_name": model.name,
        "model_version": str(model.version),
        "status": result.status,
        "drift_detected": str(result.drift_detected).lower(),
        "drifted_features": ",".join(result.drifted_features[:20]),
    }
    result.mlflow_run_id = log_to_mlflow(
        "drift",
        run_id=model.run_id,
        experiment=config.experiment,
        tags=tags,
        metrics=metrics,
        files={"html": result.report_path, "json": result.summary_path},
        artifact_path=f"monitoring/drift/{stamp}",
    )
    if result.status != OK:
        return
    snapshot = result.snapshot
    if snapshot is None:
        return
    top = important_columns(model, config.drift.dashboard_features)
    result.workspace_snapshot_id = add_to_workspace(
        config.workspace,
        f"churnguard drift: {model.name}",
        f"Drift of {model.name} inputs and predictions against its training reference sample",
        snapshot,
        lambda project: drift_dashboard(project, config.drift, top, model),
    )


def important_columns(model: MonitoredModel, count: int) -> list[str]:
    """The model's most important features (CatBoost's own importance), most important first."""
    if count <= 0:
        return []
    importance = model.artifact.model.get_feature_importance()
    ranked = sorted(zip(model.artifact.schema.names, importance, strict=True), key=lambda item: -item[1])
    return [name for name, _ in ranked[:count]]


def drift_dashboard(project, policy: DriftPolicy, top: list[str], model: MonitoredModel) -> None:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel, text_panel

    schema = model.artifact.schema

    def effect_of(column: str, categorical: bool) -> PanelMetric:
        rule = policy.test_for(column, categorical)
        return PanelMetric(
            legend=column,
            metric="evidently:metric_v2:ValueDrift",
            metric_labels={"column": column, "method": rule.effect},
        )

    project.dashboard.add_panel(text_panel(title=f"churnguard drift: {model.name}"))
    project.dashboard.add_panel(
        line_plot_panel(
            title="Predicted probability and tier mix (effect size)",
            values=[
                effect_of(PREDICTION, False),
                PanelMetric(
                    legend=TIER,
                    metric="evidently:metric_v2:ValueDrift",
                    metric_labels={"column": TIER, "method": "jensenshannon"},
                ),
            ],
            size="full",
        )
    )
    if top:
        project.dashboard.add_panel(
            line_plot_panel(
                title=f"Top {len(top)} features by importance (effect size)",
                values=[effect_of(name, schema[name].categorical) for name in top],
                size="full",
            )
        )


def _utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


__all__ = ["DriftResult", "MonitoringInputError", "run_drift"]
