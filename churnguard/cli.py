"""The `churnguard` command: the one place that wires the parts together.

Each command imports what it needs inside its handler, so `churnguard --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: each command imports what it uses, so `--help` stays fast
    from pyspark.sql import SparkSession

    from churnguard.datasets import DatasetConfig
    from churnguard.schema import FeatureSchema

log = logging.getLogger("churnguard")

EXIT_USAGE = 2  # bad configuration or data: the message says which file, column and rows


def _state_path(*parts: str) -> Path:
    from churnguard.settings import state_dir

    return state_dir().joinpath(*parts)


# ---------------------------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from churnguard.simulate import SimulationConfig, realism, simulate, write

    out = Path(args.out) if args.out else _state_path("sim")
    sim = simulate(SimulationConfig(customers=args.customers, days=args.days, seed=args.seed), progress=True)
    files = write(sim, out)
    facts = realism(sim)
    print(f"simulated {args.customers:,} customers over {args.days} days (seed {args.seed}) into {out}")
    for name, path in files.items():
        print(f"  {name:<22} {path}")
    print(
        "  realism: "
        + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items())
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from churnguard.datasets import load_dataset_config
    from churnguard.feature_table import build_feature_table

    config = load_dataset_config(args.dataset)
    if args.engine == "spark":
        return _features_on_spark(args, config)
    table = build_feature_table(config)
    out = Path(args.out) if args.out else _state_path("features", f"{config.name}.parquet")
    table.write(out)
    if table.report:
        print(table.report.format())
    frame = table.frame
    positives = float(frame["label"].mean()) if len(frame) else float("nan")
    _print_table(config.name, out, len(frame), table.schema, f"label rate {positives:.1%}")
    return 0


def _print_table(dataset: str, out: Path, rows: int, schema: FeatureSchema, detail: str) -> None:
    print(f"wrote {rows:,} rows x {len(schema.features)} features for '{dataset}' to {out} ({detail})")
    for group, names in sorted(schema.by_group().items()):
        print(f"  {group:<13} {len(names):>4} features")


def _spark_conf(args: argparse.Namespace) -> dict[str, str]:
    from churnguard.config import UsageError

    conf = {}
    for item in args.spark_conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--spark-conf takes KEY=VALUE, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


@contextlib.contextmanager
def _spark(args: argparse.Namespace) -> Iterator[SparkSession]:
    """A session for one command, stopped after it unless it was already running (a test's, a notebook's)."""
    from pyspark.sql import SparkSession

    from churnguard.spark_engine import spark_session

    running = SparkSession.getActiveSession()
    spark = spark_session(args.spark_master, _spark_conf(args))
    try:
        yield spark
    finally:
        if running is None:
            spark.stop()


def _features_on_spark(args: argparse.Namespace, config: DatasetConfig) -> int:
    from churnguard.config import UsageError
    from churnguard.datasets import EventsDataset
    from churnguard.spark_engine import spark_feature_table

    if not isinstance(config, EventsDataset):
        raise UsageError(f"dataset '{config.name}' is a snapshot: the Spark engine builds events datasets")
    out = Path(args.out) if args.out else _state_path("features", f"{config.name}.spark")
    with _spark(args) as spark:
        table = spark_feature_table(config, out, spark, customers_per_bucket=args.customers_per_bucket)
    print(table.report.format())
    detail = (
        f"Parquet folder, {table.buckets} buckets, {table.seconds:.1f}s; label rate {table.label_rate:.1%}"
    )
    _print_table(config.name, out, table.rows, table.schema, detail)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from churnguard.config import UsageError
    from churnguard.datasets import EventsDataset, load_dataset_config
    from churnguard.store.backfill import backfill
    from churnguard.store.events import EventStore

    config = load_dataset_config(args.dataset)
    if not isinstance(config, EventsDataset):
        raise UsageError(f"dataset '{config.name}' is a snapshot: only events datasets have events to ingest")
    store = EventStore.open(args.store)
    try:
        print(backfill(config, store).format())
    finally:
        store.close()
    return 0


def cmd_daily(args: argparse.Namespace) -> int:
    import pandas as pd

    from churnguard.config import UsageError
    from churnguard.daily import daily_pass
    from churnguard.datasets import load_dataset_config
    from churnguard.live import as_of_moment
    from churnguard.predict import Predictor
    from churnguard.prediction_log import PredictionLog
    from churnguard.store.events import EventStore
    from churnguard.tracking import resolve_model

    config = load_dataset_config(args.dataset)
    model_uri = args.model or f"models:/{config.registered_model_name}@champion"
    try:
        as_of = pd.Timestamp(args.as_of) if args.as_of else as_of_moment(None).normalize()
    except ValueError:
        raise UsageError(f"--as-of {args.as_of!r}: expected a date such as 2025-09-28") from None
    if as_of != as_of.normalize():
        raise UsageError(f"--as-of {args.as_of!r}: the daily pass scores as of a day, give a date")
    alerts_config = None
    if not args.no_alerts:
        from alerts.routing import load_alerts_config

        alerts_config = load_alerts_config()  # a bad alerts.yaml stops the pass before it starts
    resolved = resolve_model(model_uri)
    predictor = Predictor.load(resolved.local_dir, resolved.version)
    store = EventStore.open(args.store)
    prediction_log = None if args.no_log else PredictionLog.open(args.log)
    out = Path(args.out) if args.out else _state_path("daily")
    try:
        summary = daily_pass(
            predictor,
            config.registered_model_name,
            store,
            prediction_log,
            as_of,
            out,
            explain=not args.no_explain,
            chunk_customers=args.chunk_customers,
        )
        print(summary.format())
        if alerts_config is not None and alerts_config.enabled and summary.scored:
            from alerts.daily import alerts_from_pass

            raised, escalated = alerts_from_pass(
                alerts_config, predictor, store, prediction_log, Path(summary.snapshot), as_of
            )
            print(raised.format())
            print(escalated.format())
    except ValueError as exc:  # a model without event features
        raise UsageError(f"{model_uri}: {exc}") from None
    finally:
        store.close()
        if prediction_log is not None:
            prediction_log.close()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from churnguard.validation import validate_dataset

    report = validate_dataset(args.dataset)
    print(report.format())
    return EXIT_USAGE if report.errors else 0  # data problems exit 2, as every command does


def cmd_tune(args: argparse.Namespace) -> int:
    from training.tune import run_tune

    confirmed = None
    if args.with_outcomes:
        from churnguard.feedback import stored_confirmed_labels
        from churnguard.settings import state_dir

        confirmed = stored_confirmed_labels(state_dir())
    result = run_tune(
        args.dataset,
        args.trials,
        args.timeout,
        args.storage,
        args.study,
        args.seed,
        final=not args.no_final,
        confirmed_labels=confirmed,
    )
    print(result.summary())
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from training.promote import run_promote

    decision = run_promote(args.model, args.dataset)
    verdict = "promoted" if decision.promoted else "kept the champion"
    print(f"promote {decision.model_name}: {verdict}: {decision.reason}")
    return decision.exit_code


def cmd_serve(args: argparse.Namespace) -> int:
    from service.run import serve

    return serve(args.model, args.host, args.port, args.workers, args.behind_proxy or None)


def cmd_score(args: argparse.Namespace) -> int:
    from churnguard.score_file import score_file

    if args.engine == "spark":
        from churnguard.spark_score import score_file_on_spark

        with _spark(args) as spark:
            summary = score_file_on_spark(
                args.model, Path(args.input), Path(args.output), spark, args.explain
            )
        print(summary.format())
        return 0
    summary = score_file(args.model, Path(args.input), Path(args.output), args.chunk_rows, args.explain)
    print(summary.format())
    return 0


def _since(text: str | None):
    from datetime import UTC, datetime

    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_drift(args: argparse.Namespace) -> int:
    from monitoring.drift import run_drift, summary_text

    result = run_drift(
        args.model,
        Path(args.current) if args.current else None,
        _since(args.since),
        Path(args.out) if args.out else None,
        args.fail_on_drift,
    )
    print(summary_text(result.summary))
    print(f"  HTML report  {result.report_path}\n  JSON summary {result.summary_path}")
    return result.exit_code


def cmd_quality(args: argparse.Namespace) -> int:
    from monitoring.quality import run_quality

    result = run_quality(
        args.model,
        Path(args.outcomes) if args.outcomes else None,
        args.dataset,
        Path(args.out) if args.out else None,
    )
    print(f"quality: {result.status}; realized ROC-AUC {result.realized_auc}, ECE {result.realized_ece}")
    print(f"  HTML report  {result.report_path}\n  JSON summary {result.summary_path}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from monitoring.retrain import run_retrain

    decision = run_retrain(
        args.dataset,
        args.model,
        Path(args.current) if args.current else None,
        _since(args.since),
        args.force,
        outcomes=Path(args.outcomes) if args.outcomes else None,
    )
    print(f"retrain: {decision.decision}" + "".join(f"\n  - {reason}" for reason in decision.reasons))
    if decision.promotion:
        print(f"  promotion gate: {decision.promotion}")
    return 0


def cmd_outcomes(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from churnguard.feedback import format_report, ingest, load_outcomes, outcome_report, report_sections
    from churnguard.prediction_log import read_predictions
    from churnguard.scoring import load_scoring_config
    from churnguard.settings import state_dir
    from monitoring.html import write_report_page

    state = state_dir()
    if args.action == "ingest":
        if not args.file:
            from churnguard.config import UsageError

            raise UsageError("outcomes ingest needs FILE: a CSV or Parquet file of outcomes")
        print(ingest(Path(args.file), state).format())
    outcomes = load_outcomes(state)
    measures = _alert_measures(args.store)
    if outcomes.empty and measures is None:
        print("no outcomes stored yet: ingest some with `churnguard outcomes ingest FILE`")
        return 0
    report: dict = {"outcomes": 0}
    sections: list = []
    if outcomes.empty:
        print("no outcomes stored yet: ingest some with `churnguard outcomes ingest FILE`")
    else:
        config = load_scoring_config().feedback
        # Only the alerts that can match an outcome: from the lookback before the earliest one.
        since = pd.Timestamp(outcomes["outcome_date"].min(), tz="UTC") - pd.Timedelta(
            days=config.lookback_days
        )
        report = outcome_report(outcomes, read_predictions(since.to_pydatetime()), config)
        print(format_report(report))
        sections += report_sections(report)
    if measures is not None:
        from alerts.measures import MEASURE_HEADERS, format_measures, measure_rows, public

        report["alert_measures"] = public(measures)
        print(format_measures(measures))
        sections.append(("Alerts: time to act, save rate, SLA", MEASURE_HEADERS, measure_rows(measures)))
    out = Path(args.out) if args.out else state / "outcomes" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    page = write_report_page(out.with_suffix(".html"), "churnguard: outcomes of alerts", sections)
    print(f"  JSON report {out}\n  HTML report {page}")
    return 0


def _alert_measures(url: str | None) -> dict | None:
    """The alert measures of the store at `url` (the event store's by default); None without alerts."""
    from alerts.measures import measures_from_store
    from alerts.store import AlertStore
    from churnguard.store.events import default_url

    url = url or default_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///").split("?")[0]).is_file():
        return None  # no store yet: do not create one just to report on it
    store = AlertStore.open(url)
    try:
        return measures_from_store(store)
    finally:
        store.close()


def cmd_alerts(args: argparse.Namespace) -> int:
    import json
    import time

    from alerts.lifecycle import UnknownAlert, check_resolution, transition
    from alerts.routing import load_alerts_config
    from alerts.store import AlertStore
    from churnguard.config import UsageError
    from churnguard.settings import state_dir

    store = AlertStore.open(args.store)
    try:
        if args.action == "list":
            rows = store.alerts(
                owner=args.owner,
                state=args.state,
                tier=args.tier,
                customer_id=args.customer,
                limit=args.limit,
            )
            for alert in rows:
                overdue = " OVERDUE" if alert["state"] == "open" and alert["due_at"] < time.time() else ""
                print(
                    f"#{alert['alert_id']:<6} {alert['state']:<12} {alert['customer_id']:<10} "
                    f"{alert['tier']:<6} health {alert['health_score']:>3}  priority {alert['priority']}  "
                    f"{alert['owner'] or '(no owner)'}  {', '.join(alert['triggers'])}{overdue}"
                )
            print(f"{len(rows)} alert(s)")
            return 0
        if args.action in {"ack", "start", "resolve"}:
            if args.alert_id is None:
                raise UsageError(f"alerts {args.action} needs the alert id")
            resolution = (
                check_resolution(args.outcome, args.churn_reason, args.note)
                if args.action == "resolve"
                else None
            )
            action = {"ack": "acknowledge", "start": "start", "resolve": "resolve"}[args.action]
            try:
                alert = transition(
                    store,
                    args.alert_id,
                    action,
                    actor=args.actor,
                    resolution=resolution,
                    state_dir=state_dir(),
                )
            except UnknownAlert as exc:
                raise UsageError(str(exc)) from None
            print(f"alert #{alert['alert_id']} ({alert['customer_id']}) is now {alert['state']}")
            return 0
        config = load_alerts_config()
        if args.action == "deliver":
            from alerts.outbox import deliver

            print(deliver(store, config, max_seconds=args.max_seconds).format())
        elif args.action == "retry-dead":
            from alerts.outbox import retry_dead

            print(f"{retry_dead(store, args.delivery_ids or None)} dead letter(s) queued again")
        elif args.action == "escalate":
            from alerts.escalation import escalate_overdue

            print(escalate_overdue(store, config).format())
        elif args.action == "outbox":
            print(json.dumps(store.outbox_counts()))
    finally:
        store.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from churnguard.demo import run_demo

    return run_demo(customers=args.customers, seed=args.seed, trials=args.trials)


# ---------------------------------------------------------------------------------------------- parser


def _spark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=["pandas", "spark"],
        default="pandas",
        help="pandas in this process (default), or Spark for data past one machine's memory",
    )
    parser.add_argument(
        "--spark-master",
        help="spark: master URL, e.g. local[2] or spark://host:7077 (default: spark-submit's, else local[*])",
    )
    parser.add_argument(
        "--spark-conf", action="append", metavar="KEY=VALUE", help="spark: a Spark setting (repeatable)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnguard",
        description="Customer-churn early warning: simulate, build features, validate, train, serve, monitor",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sim = command("simulate", cmd_simulate, "simulate a B2B CRM customer base with known churn truth")
    sim.add_argument("--customers", type=int, default=20_000, help="number of customers (default 20000)")
    sim.add_argument("--days", type=int, default=365, help="days simulated (default 365)")
    sim.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data")
    sim.add_argument(
        "--out", help="output folder (default: <state>/sim, which configs/datasets/crm.yaml reads)"
    )

    feat = command("features", cmd_features, "build the point-in-time feature table of a dataset")
    feat.add_argument("--dataset", required=True, help="dataset name in configs/datasets/ or a YAML path")
    feat.add_argument(
        "--out",
        help="output Parquet file, a folder with --engine spark "
        "(default: <state>/features/<dataset>.parquet, or <dataset>.spark)",
    )
    _spark_arguments(feat)
    feat.add_argument(
        "--customers-per-bucket",
        type=int,
        default=2_000,
        help="spark: customers whose events one pandas call holds (bounds each task's memory)",
    )

    ingest = command("ingest", cmd_ingest, "bulk-load an events dataset's files into the event store")
    ingest.add_argument(
        "--dataset", required=True, help="events dataset name in configs/datasets/ or a YAML path"
    )
    ingest.add_argument("--store", help="sqlite:///PATH or postgresql://... (default: <state>/events.db)")

    daily = command("daily", cmd_daily, "score every active customer from the event store as of a day")
    daily.add_argument("--dataset", required=True, help="events dataset whose model scores (its champion)")
    daily.add_argument("--as-of", help="the day to score as of (midnight at its start; default: today, UTC)")
    daily.add_argument(
        "--model", help="MLflow model URI or artifact folder (default: models:/<name>@champion)"
    )
    daily.add_argument("--store", help="event store URL (default: <state>/events.db)")
    daily.add_argument("--log", help="prediction log URL (default: <state>/predictions.db)")
    daily.add_argument("--no-log", action="store_true", help="do not write the prediction log")
    daily.add_argument("--no-explain", action="store_true", help="skip reasons (faster)")
    daily.add_argument("--out", help="snapshot folder (default: <state>/daily)")
    daily.add_argument(
        "--chunk-customers", type=int, default=5_000, help="customers per chunk, logged and written together"
    )
    daily.add_argument(
        "--no-alerts", action="store_true", help="do not raise alerts from the snapshot (configs/alerts.yaml)"
    )

    val = command("validate", cmd_validate, "check a dataset's files and report every problem")
    val.add_argument("--dataset", required=True, help="dataset name in configs/datasets/ or a YAML path")

    tune = command(
        "tune", cmd_tune, "tune a CatBoost churn model with Optuna, track it in MLflow, register it"
    )
    tune.add_argument("--dataset", required=True, help="dataset name in configs/datasets/ or a YAML path")
    tune.add_argument("--trials", type=int, help="trials for this worker (default: configs/training.yaml)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("--storage", help="Optuna storage: sqlite:///f.db, postgresql://..., or a journal file")
    tune.add_argument("--study", help="study name; workers with the same storage and name share one study")
    tune.add_argument("--seed", type=int, help="random seed (default: configs/training.yaml)")
    tune.add_argument("--no-final", action="store_true", help="run trials only; do not fit/register a model")
    tune.add_argument(
        "--with-outcomes",
        action="store_true",
        help="let confirmed outcomes (churnguard outcomes ingest) decide the labels they cover",
    )

    promote = command(
        "promote", cmd_promote, "promote the challenger if it beats the champion (exit 0 if so)"
    )
    promote.add_argument("--model", help="registered model name, e.g. churn-crm")
    promote.add_argument("--dataset", help="dataset whose model to promote (instead of --model)")

    serve = command("serve", cmd_serve, "serve predictions over HTTP with BentoML")
    serve.add_argument(
        "--model", help="MLflow model URI or artifact folder (default: models:/<name>@champion)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 3000)")
    serve.add_argument("--workers", type=int, help="worker processes")
    serve.add_argument(
        "--behind-proxy",
        action="store_true",
        help="allow a non-loopback address without API keys (an authenticating proxy is in front)",
    )

    score = command("score", cmd_score, "score a Parquet or CSV file offline, in chunks")
    score.add_argument("--model", required=True, help="MLflow model URI or artifact folder")
    score.add_argument(
        "--input", required=True, help="Parquet or CSV file in the model's input schema (spark: Parquet)"
    )
    score.add_argument("--output", required=True, help="output Parquet or CSV file (spark: a Parquet folder)")
    score.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (default 100000)")
    score.add_argument("--explain", action="store_true", help="add reasons (slower)")
    _spark_arguments(score)

    drift = command("drift", cmd_drift, "Evidently drift report: current data against the model's reference")
    drift.add_argument(
        "--model", help="MLflow model URI or artifact folder (default: configs/monitoring.yaml)"
    )
    source = drift.add_mutually_exclusive_group()
    source.add_argument("--current", help="CSV or Parquet file in the model's input schema")
    source.add_argument("--since", help="use the prediction log since this ISO date")
    drift.add_argument("--out", help="output folder (default: <state>/monitoring/drift/...)")
    drift.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is detected")

    quality = command("quality", cmd_quality, "label-delayed quality: expected against realized, per cohort")
    quality.add_argument("--model", help="MLflow model URI or artifact folder")
    quality.add_argument("--outcomes", help="outcomes file: customer_id and churned (0/1) or churn_date")
    quality.add_argument("--dataset", help="take outcomes from this events dataset's churn dates")
    quality.add_argument("--out", help="output folder")

    retrain = command("retrain", cmd_retrain, "decide from drift and quality whether to retrain, and do it")
    retrain.add_argument("--dataset", required=True, help="dataset to retrain on")
    retrain.add_argument("--model", help="served model URI (default: models:/<name>@champion)")
    retrain_source = retrain.add_mutually_exclusive_group()
    retrain_source.add_argument("--current", help="current data file for the drift check")
    retrain_source.add_argument("--since", help="use the prediction log since this ISO date")
    retrain.add_argument("--outcomes", help="outcomes file for the quality check")
    retrain.add_argument("--force", action="store_true", help="retrain whatever the evidence says")

    outcomes = command(
        "outcomes",
        cmd_outcomes,
        "feedback on alerts: ingest what happened to alerted customers, report alert precision",
    )
    outcomes.add_argument(
        "action", choices=["ingest", "report"], help="ingest FILE and report, or report what is stored"
    )
    outcomes.add_argument(
        "file",
        nargs="?",
        help="CSV or Parquet: customer_id, outcome (saved|churned|false_alarm), outcome_date, churn_reason",
    )
    outcomes.add_argument(
        "--out", help="JSON report file, the HTML beside it (default: <state>/outcomes/report.json)"
    )
    outcomes.add_argument(
        "--store", help="event store URL, which holds the alerts to measure (default: <state>/events.db)"
    )

    alerts = command(
        "alerts", cmd_alerts, "alerts to account owners: list, acknowledge, start, resolve, deliver, escalate"
    )
    alerts.add_argument(
        "action",
        choices=["list", "ack", "start", "resolve", "deliver", "retry-dead", "escalate", "outbox"],
        help="list alerts; ack/start/resolve ID; deliver the outbox; retry-dead [DELIVERY_ID...]; "
        "escalate overdue alerts to managers; outbox counts",
    )
    alerts.add_argument("alert_id", nargs="?", type=int, help="the alert (ack, start, resolve)")
    alerts.add_argument("delivery_ids", nargs="*", type=int, help="retry-dead: only these deliveries")
    alerts.add_argument(
        "--store", help="event store URL, which holds the alerts (default: <state>/events.db)"
    )
    alerts.add_argument("--owner", help="list: one account owner's alerts")
    alerts.add_argument("--state", choices=["open", "acknowledged", "in_progress", "resolved"], help="list")
    alerts.add_argument("--tier", choices=["high", "medium", "low"], help="list: one tier")
    alerts.add_argument("--customer", help="list: one customer's alerts")
    alerts.add_argument("--limit", type=int, default=100, help="list: at most this many (default 100)")
    alerts.add_argument("--actor", help="who acts (recorded with the alert)")
    alerts.add_argument("--outcome", help="resolve: saved, churned or false_alarm")
    alerts.add_argument("--churn-reason", help="resolve: for churned, one of the outcomes vocabulary")
    alerts.add_argument("--note", help="resolve: what was done")
    alerts.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="deliver: keep delivering (waiting out backoffs) for up to this long until the outbox is empty",
    )

    demo = command("demo", cmd_demo, "run the main job end to end on embedded defaults")
    demo.add_argument("--customers", type=int, default=20_000, help="simulated customers (default 20000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    demo.add_argument("--trials", type=int, default=5, help="Optuna trials per study (default 5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from churnguard.config import UsageError

    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"churnguard {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
