"""`churnguard demo` / `make demo`: the main job end to end on embedded defaults.

Each step prints what it produced and where, so the demo doubles as a tour of the product.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from churnguard.settings import state_dir

if TYPE_CHECKING:
    from alerts.receiver import WebhookReceiver
    from alerts.routing import AlertsConfig

log = logging.getLogger(__name__)

DEMO_DATASETS = ("crm", "telco", "cdnow")


def step(title: str) -> Callable:
    def wrap(function: Callable) -> Callable:
        def run(*args, **kwargs):
            print(f"\n=== {title} ===", flush=True)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            print(f"--- {title}: done in {time.perf_counter() - started:.1f} s", flush=True)
            return result

        return run

    return wrap


@step("1. simulate a CRM customer base")
def simulate_crm(customers: int, seed: int) -> Path:
    from churnguard.simulate import SimulationConfig, realism, simulate, write

    sim = simulate(SimulationConfig(customers=customers, seed=seed), progress=True)
    out = state_dir() / "sim"
    files = write(sim, out)
    facts = realism(sim)
    for name, path in files.items():
        print(f"  {name:<28} {path}")
    print(
        f"  annual churn {facts['annual_churn_rate']:.1%}, oracle ROC-AUC {facts['oracle_roc_auc']:.3f}, "
        f"'no login for 30 days' rule precision {facts['no_login_30d_precision']:.2f}"
    )
    return out


@step("2. validate the datasets")
def validate_all() -> None:
    from churnguard.validation import validate_dataset

    for name in DEMO_DATASETS:
        report = validate_dataset(name)
        print(report.format())
        if report.errors:
            raise SystemExit(f"dataset '{name}' has errors; see above")


@step("3. build point-in-time feature tables")
def build_features() -> dict[str, Path]:
    from churnguard.datasets import load_dataset_config
    from churnguard.feature_table import build_feature_table

    paths = {}
    for name in DEMO_DATASETS:
        table = build_feature_table(load_dataset_config(name))
        path = table.write(state_dir() / "features" / f"{name}.parquet")
        paths[name] = path
        print(
            f"  {name:<6} {len(table.frame):>8,} rows x {len(table.schema.features):>3} features, "
            f"label rate {table.labels.mean():.1%} -> {path}"
        )
    return paths


# The monitoring story on simulated data: the model learns from the first months, a product change
# in month 8 cuts SMB logins by 40%, the monitors catch it and the loop retrains and promotes.
CHANGE_SCENARIO = "login_cut"
CHANGE_START = "2025-08-01"
FIRST_TRAINING_WINDOW = {"START": "2025-03-02", "END": "2025-05-31"}  # observation dates of the first model
SCORING_DATE = "2025-06-30"  # a batch scored by the service before the change
DRIFT_DATE = "2025-09-28"  # current data after the change
FEED_START = "2025-09-14"  # events from here on reach the store over HTTP, as a CRM would send them
FEED_BATCH = 10_000
DEMO_TRIALS = 5


@step("4. inject a known change: SMB logins cut by 40% from month 8")
def inject_change(sim_dir: Path, seed: int) -> None:
    import pandas as pd

    from churnguard.scenarios import SCENARIOS, apply_scenario

    customers = pd.read_parquet(sim_dir / "customers.parquet")
    events = pd.read_parquet(sim_dir / "events.parquet")
    end = events["timestamp"].max() + pd.Timedelta(days=1)
    _, changed = apply_scenario(CHANGE_SCENARIO, customers, events, CHANGE_START, end, seed)
    changed.to_parquet(sim_dir / "events.parquet", index=False)
    removed = len(events) - len(changed)
    print(f"  {SCENARIOS[CHANGE_SCENARIO].description}: {removed:,} logins removed after {CHANGE_START}")


@contextlib.contextmanager
def observation_window(window: dict[str, str]) -> Iterator[None]:
    """Override the CRM dataset's observation dates (through its environment overrides) for a while."""
    overrides = {f"CHURNGUARD_DATASET_CRM__OBSERVATION__{key}": value for key, value in window.items()}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key in overrides:
            os.environ.pop(key, None)


@step("5. tune, register and promote the first model (months 1-6)")
def first_model(trials: int) -> str:
    from training.promote import run_promote
    from training.tune import run_tune

    with observation_window(FIRST_TRAINING_WINDOW):
        result = run_tune("crm", trials=trials, seed=0)
    print(f"  {result.summary()}")
    decision = run_promote(result.model_name)
    print(f"  promotion: {'promoted' if decision.promoted else 'kept champion'} ({decision.reason})")
    return result.model_name


def feature_rows(observation_date: str) -> Path:
    """Unlabelled features of every active customer at one observation date, as the CRM would send them."""
    from churnguard.datasets import ObservationSpec, load_dataset_config, load_events
    from churnguard.feature_table import events_table

    config = load_dataset_config("crm")
    date = ObservationSpec(start=observation_date, end=observation_date, every_days=1)
    config = config.model_copy(update={"observation": date})
    table = events_table(config, load_events(config), labelled=False)
    path = state_dir() / "demo" / f"customers-{observation_date}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.frame[["customer_id", *table.schema.names]].to_parquet(path, index=False)
    return path


def start_service(port: int) -> subprocess.Popen:
    import sys

    env = {**os.environ, "CHURNGUARD_SERVICE__RELOAD__POLL_SECONDS": "5"}
    command = [sys.executable, "-m", "churnguard.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"the service exited with code {process.returncode}; run `churnguard serve` to see why"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(1)
    process.terminate()
    raise SystemExit("the service did not become ready within 180 s")


def post(port: int, route: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{route}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def get(port: int, route: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=30) as answer:
        return json.loads(answer.read())


@step("6. load the CRM's history into the event store (churnguard ingest)")
def load_history(sim_dir: Path) -> None:
    """Everything before the live feed starts, as a backfill would load a CRM export."""
    import pandas as pd

    from churnguard.datasets import load_dataset_config
    from churnguard.store.backfill import backfill
    from churnguard.store.events import EventStore

    events = pd.read_parquet(sim_dir / "events.parquet")
    history = state_dir() / "demo" / "history-events.parquet"
    history.parent.mkdir(parents=True, exist_ok=True)
    events[events["timestamp"] < pd.Timestamp(FEED_START)].to_parquet(history, index=False)
    config = load_dataset_config("crm")
    config = config.model_copy(
        update={"events": [config.events[0].model_copy(update={"path": str(history)})]}
    )
    store = EventStore.open()
    try:
        print("  " + backfill(config, store).format().replace("\n", "\n  "))
    finally:
        store.close()


@step("7. serve the champion; the CRM feeds its latest events over HTTP")
def feed_events(port: int, sim_dir: Path) -> None:
    import pandas as pd

    from churnguard.store.backfill import content_event_ids

    events = pd.read_parquet(sim_dir / "events.parquet")
    live = events[
        (events["timestamp"] >= pd.Timestamp(FEED_START)) & (events["timestamp"] < pd.Timestamp(DRIFT_DATE))
    ]
    live = live.assign(event_id=content_event_ids(live).astype(str))
    live = live.assign(timestamp=live["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    live["value"] = live["value"].astype(object).where(live["value"].notna(), None)
    records = live[["event_id", "customer_id", "timestamp", "type", "value"]].to_dict(orient="records")
    started, stored = time.perf_counter(), 0
    for start in range(0, len(records), FEED_BATCH):
        stored += post(port, "/events", {"events": records[start : start + FEED_BATCH]})["stored"]
    seconds = time.perf_counter() - started
    print(
        f"  POST /events: {len(records):,} events from {FEED_START} to {DRIFT_DATE} in batches of "
        f"{FEED_BATCH:,}: {stored:,} stored in {seconds:.1f} s ({len(records) / seconds:,.0f} events/s)"
    )
    again = post(port, "/events", {"events": records[:FEED_BATCH]})
    print(f"  the first batch sent again: {again['stored']} stored, {again['duplicates']:,} already there")


@step("8. score customers by id over HTTP, features computed from their stored history")
def score_by_id(port: int) -> None:
    import pandas as pd

    from churnguard.store.events import EventStore

    store = EventStore.open()
    try:
        ids = store.customer_ids()[:2000]
    finally:
        store.close()
    started = time.perf_counter()
    answer = post(port, "/predict_batch", {"customer_ids": ids, "as_of": SCORING_DATE, "explain": True})
    seconds = time.perf_counter() - started
    results = answer["results"]
    tiers = pd.Series([result["alert_tier"] for result in results]).value_counts().to_dict()
    print(
        f"  POST /predict_batch by id as of {SCORING_DATE}: {len(results):,} customers in {seconds:.2f} s; "
        f"tiers {tiers}"
    )
    riskiest = max(results, key=lambda result: result["churn_probability"])["customer_id"]
    started = time.perf_counter()
    # As of the simulated CRM's last day: "now" (no as_of) would be long after its data ends.
    one = post(port, "/predict", {"customer_id": riskiest, "as_of": DRIFT_DATE, "explain": True})
    print(
        f'  POST /predict {{"customer_id": "{riskiest}", "as_of": "{DRIFT_DATE}"}} in '
        f"{1000 * (time.perf_counter() - started):.0f} ms, explained:"
    )
    print("  " + json.dumps(one, indent=2, ensure_ascii=False).replace("\n", "\n  "))


# The daily pass runs on two days in a row: the first raises alerts, the second updates them.
DAY_BEFORE = "2025-09-27"
DEMO_SECRET_ENV = "CHURNGUARD_DEMO_WEBHOOK_SECRET"
CHINESE_NAMES = {"Chen", "Xu", "Wei"}  # the simulated owners with these names read Chinese


def demo_secret() -> str:
    """The webhook's signing secret: from the environment, as configs/alerts.yaml requires."""
    return os.environ.setdefault(DEMO_SECRET_ENV, secrets.token_hex(16))


def demo_alerts_config(receiver_url: str) -> AlertsConfig:
    """Every owner's alerts go to one signed webhook on loopback; owners named in CHINESE_NAMES read zh."""
    import yaml

    from alerts.routing import CONFIG_ENV, load_alerts_config
    from churnguard.store.events import EventStore

    store = EventStore.open()
    try:
        customers = store.customers(records_only=True)
    finally:
        store.close()
    owners = sorted(set(customers["account_owner"].dropna().astype(str)))
    chinese = [owner for owner in owners if CHINESE_NAMES & set(owner.split())]
    data = {
        "channels": {"owner-hub": {"kind": "webhook", "url": receiver_url, "secret_env": DEMO_SECRET_ENV}},
        "default_channels": ["owner-hub"],
        "language": "en",
        "owners": {owner: {"language": "zh"} for owner in chinese},
        "delivery": {"backoff_seconds": 1},
    }
    path = state_dir() / "demo" / "alerts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    os.environ[CONFIG_ENV] = str(path)  # so `churnguard alerts ...` from here reads the same routing
    print(
        f"  routing {path}: {len(owners)} owners, {len(chinese)} of them reading Chinese "
        f"({', '.join(chinese)})"
    )
    return load_alerts_config(path)


@step("9. the daily pass on two days in a row: every active customer scored, alerts raised then updated")
def daily(model_name: str, receiver_url: str) -> AlertsConfig:
    import pandas as pd

    from alerts.daily import alerts_from_pass
    from churnguard.daily import daily_pass
    from churnguard.predict import Predictor
    from churnguard.prediction_log import PredictionLog
    from churnguard.store.events import EventStore
    from churnguard.tracking import resolve_model

    config = demo_alerts_config(receiver_url)
    resolved = resolve_model(f"models:/{model_name}@champion")
    predictor = Predictor.load(resolved.local_dir, resolved.version)
    store, prediction_log = EventStore.open(), PredictionLog.open()
    runs = [
        (DAY_BEFORE, ""),
        (DRIFT_DATE, ""),
        (DRIFT_DATE, " (run again: nothing is scored, logged or raised twice)"),
    ]
    try:
        for day, note in runs:
            as_of = pd.Timestamp(day)
            summary = daily_pass(predictor, model_name, store, prediction_log, as_of, state_dir() / "daily")
            print(f"  {summary.format()}{note}".replace("\n", "\n  "))
            raised, _ = alerts_from_pass(
                config, predictor, store, prediction_log, Path(summary.snapshot), as_of
            )
            print(
                f"  alerts as of {day}: raised {raised.raised:,} ({raised.in_digest:,} of them in digests "
                f"over the daily cap), updated {raised.updated:,}, unchanged {raised.unchanged:,}; "
                f"{raised.queued:,} messages queued ({raised.seconds:.1f} s)"
            )
    finally:
        store.close()
        prediction_log.close()
    command = f"cd {Path.cwd()} && .venv/bin/churnguard daily --dataset crm"
    print(f"  every morning at 05:00, from cron: 0 5 * * * {command}")
    return config


@step("10. the alerts reach their owners: a signed webhook on loopback, in English and Chinese")
def deliver_alerts(config: AlertsConfig, receiver: WebhookReceiver) -> None:
    from alerts.outbox import deliver
    from alerts.store import AlertStore

    store = AlertStore.open()
    try:
        print(f"  {deliver(store, config, max_seconds=60).format()}")
        alerts = store.query("SELECT COUNT(*) AS n FROM alerts")[0]["n"]
    finally:
        store.close()
    kept = list(receiver.messages.values())
    kinds = {kind: sum(m["kind"] == kind for m in kept) for kind in ("alert", "digest", "update")}
    print(
        f"  the receiver took {receiver.requests:,} requests ({receiver.bad_signatures} with a bad "
        f"signature): {len(kept):,} messages kept by idempotency key ({kinds['alert']:,} alerts one by "
        f"one, {kinds['digest']:,} digests, {kinds['update']:,} tier updates; {receiver.duplicates} "
        "copies dropped); "
        f"{len(receiver.alert_ids()):,} distinct alerts by alert id, of {alerts:,} in the store"
    )
    for language in ("en", "zh"):
        key = next(
            (k for k, m in receiver.messages.items() if m["kind"] == "alert" and m["language"] == language),
            None,
        )
        if key is None:
            print(f"  no {language} alert arrived")
            continue
        message = receiver.messages[key]
        print(
            f"\n  one {language} message, the HTTP body as it arrived ({len(receiver.bodies[key]):,} bytes):"
        )
        print("  " + receiver.bodies[key].decode("utf-8"))
        print(f"  its text, as {message['recipient']['name']} reads it:")
        print("    " + message["text"].replace("\n", "\n    "))


@step("11. owners act through the service's alert API; the measures follow")
def act_on_alerts(port: int) -> None:
    from alerts.measures import format_measures, measures_from_store
    from alerts.store import AlertStore

    first, second = get(port, "/alerts?state=open&limit=2")["alerts"]
    acknowledged = post(port, f"/alerts/{first['alert_id']}/acknowledge", {"actor": first["owner"]})
    print(
        f"  POST /alerts/{first['alert_id']}/acknowledge ({first['customer_id']}, {first['owner']}): "
        f"{acknowledged['state']}"
    )
    path = f"/alerts/{second['alert_id']}"
    post(port, f"{path}/start", {"actor": second["owner"]})
    resolution = {"outcome": "saved", "churn_reason": "price", "note": "renewed after a 10% discount"}
    resolved = post(port, f"{path}/resolve", {**resolution, "actor": second["owner"]})
    print(
        f"  POST {path}/start, then {path}/resolve {json.dumps(resolution)} ({second['customer_id']}, "
        f"{second['owner']}): {resolved['state']}, outcome {resolved['outcome']}, reason "
        f"{resolved['churn_reason']}; written to the outcomes store"
    )
    store = AlertStore.open()
    try:
        measures = measures_from_store(store)
    finally:
        store.close()
    if measures is None:
        raise SystemExit("no alerts in the store after the daily passes")
    # The whole table lists every owner: show the overall, tier and rule rows and the two owners.
    shown = {
        **measures,
        "per_owner": {o: measures["per_owner"][o] for o in sorted({first["owner"], second["owner"]})},
    }
    print("  " + format_measures(shown).replace("\n", "\n  "))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    lines = [
        line for line in metrics.splitlines() if line.startswith("churnguard_alert_") and 'by="all"' in line
    ]
    print("  GET /metrics (the service's Prometheus endpoint), overall:")
    print("    " + "\n    ".join(lines))
    print("  `churnguard outcomes report` prints them per owner too, with an HTML page")


@step("12. monitor: drift of current data (after the change) against the model's reference")
def detect_drift() -> Path:
    from monitoring.drift import run_drift, summary_text

    current = feature_rows(DRIFT_DATE)
    result = run_drift(None, current, None, None, fail_on_drift=False)
    print("  " + summary_text(result.summary).replace("\n", "\n  "))
    print(f"  HTML report {result.report_path}")
    return current


@step("13. retrain loop: decide, tune on the newest data, gate, and let the service pick up the champion")
def retrain_loop(current: Path, port: int, served_before: str) -> None:
    from monitoring.retrain import run_retrain
    from training.promote import run_promote
    from training.tune import run_tune

    decision = run_retrain("crm", None, current, None, False, tune=run_tune, promote=run_promote)
    print(f"  decision: {decision.decision}" + "".join(f"\n    - {reason}" for reason in decision.reasons))
    if decision.promotion:
        print(f"  promotion gate: promoted={decision.promotion['promoted']} ({decision.promotion['reason']})")
    if not (decision.promotion and decision.promotion["promoted"]):
        print(f"  the gate kept the champion: the service goes on serving version {served_before}")
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and get(port, "/model")["model_version"] == served_before:
        time.sleep(2)
    now_served = get(port, "/model")["model_version"]
    print(f"  the running service now serves version {now_served} (was {served_before})")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_demo(customers: int = 20_000, seed: int = 7, trials: int = DEMO_TRIALS) -> int:
    from alerts.receiver import WebhookReceiver

    started = time.perf_counter()
    print(f"churnguard demo: state folder {state_dir()}")
    # The retraining study of the demo is as small as the first one.
    os.environ.setdefault("CHURNGUARD_MONITORING__RETRAIN__TRIALS", str(trials))
    sim_dir = simulate_crm(customers, seed)
    validate_all()
    build_features()
    inject_change(sim_dir, seed)
    model_name = first_model(trials)
    load_history(sim_dir)
    port = free_port()
    service = start_service(port)
    try:
        served = get(port, "/model")["model_version"]
        print(f"\nservice on http://127.0.0.1:{port} serves {model_name} v{served} (OpenAPI at /docs.json)")
        feed_events(port, sim_dir)
        score_by_id(port)
        with WebhookReceiver(demo_secret()) as receiver:
            config = daily(model_name, receiver.url)
            deliver_alerts(config, receiver)
        act_on_alerts(port)
        current = detect_drift()
        retrain_loop(current, port, served)
    finally:
        service.terminate()
        service.wait(timeout=60)
    elapsed = time.perf_counter() - started
    print(f"\nchurnguard demo finished in {elapsed:.0f} s; everything is under {state_dir()}")
    print(f"  MLflow UI:    .venv/bin/mlflow ui --backend-store-uri sqlite:///{state_dir() / 'mlflow.db'}")
    print(f"  Evidently UI: .venv/bin/evidently ui --workspace {state_dir() / 'evidently'}")
    return 0
