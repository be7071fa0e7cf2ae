"""Two replicas of the service on one PostgreSQL database, as behind a load balancer.

Two real `churnguard serve` processes (BentoML on loopback, different ports) share one prediction log
and one event store, which also holds the alerts and their outbox. Under concurrent load to both,
each scored customer is logged exactly once; what one replica ingests, the other scores; an alert
raised by the daily pass is sent once although both replicas deliver from the outbox.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from live_fixtures import LiveWorld, build_live_world, run_cli
from model_fixtures import ServerProcess, start_server
from pg_fixtures import fresh_database

from alerts.receiver import WebhookReceiver
from alerts.store import AlertStore
from churnguard.prediction_log import PredictionLog
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS_PER_CLIENT = 24
BATCH_IDS = 5


@dataclass
class Replicas:
    world: LiveWorld
    url: str  # the shared PostgreSQL database: event store, alerts, outbox and prediction log
    a: ServerProcess
    b: ServerProcess
    receiver: WebhookReceiver
    env: dict[str, str]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    state = tmp_path_factory.mktemp("replicas")
    with (
        fresh_database("churnguard_replicas") as url,
        pytest.MonkeyPatch.context() as patch,
        WebhookReceiver() as receiver,
    ):
        patch.setenv("CHURNGUARD_STATE_DIR", str(state))
        world = build_live_world(state, store_url=url)
        alerts_config = state / "alerts.yaml"
        alerts_config.write_text(
            yaml.safe_dump(
                {
                    "channels": {"hub": {"kind": "webhook", "url": receiver.url}},
                    "default_channels": ["hub"],
                }
            )
        )
        env = {
            "CHURNGUARD_API_KEYS": "",
            "CHURNGUARD_EVENT_STORE": url,
            "CHURNGUARD_PREDICTION_LOG": url,
            "CHURNGUARD_ALERTS_CONFIG": str(alerts_config),
            "CHURNGUARD_SERVICE__OUTBOX__DELIVER_SECONDS": "0.5",
            # Every alert on its own (no digest), so the receiver counts each by id.
            "CHURNGUARD_SCORING__ALERTS__DAILY_CAP": "10000",
        }
        # Started together, as a deployment rolls out: both create the shared tables at once.
        a = start_server(str(world.model_dir), state / "replica-a", env=env, wait=False)
        b = start_server(str(world.model_dir), state / "replica-b", env=env, wait=False)
        try:
            a.wait_ready()
            b.wait_ready()
            yield Replicas(world, url, a, b, receiver, env)
        finally:
            a.stop()
            b.stop()


def observed_ids(world: LiveWorld, count: int) -> tuple[list[str], str]:
    """Customers of the offline table on its last observation date, and that date."""
    table = world.table.frame
    last = table[OBSERVATION_COLUMN].max()
    ids = sorted(table.loc[table[OBSERVATION_COLUMN] == last, ID_COLUMN].astype(str).unique())
    return ids[:count], f"{last:%Y-%m-%d}"


def test_concurrent_load_on_both_logs_each_scored_customer_once(replicas: Replicas) -> None:
    ids, as_of = observed_ids(replicas.world, 120)
    expected: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    served_by: Counter[int] = Counter()
    lock = threading.Lock()

    def client(number: int) -> None:
        with (
            httpx.Client(base_url=replicas.a.base_url, timeout=60) as to_a,
            httpx.Client(base_url=replicas.b.base_url, timeout=60) as to_b,
        ):
            for n in range(REQUESTS_PER_CLIENT):
                replica, http = (replicas.a, to_a) if (number + n) % 2 == 0 else (replicas.b, to_b)
                request_id = f"load-{number}-{n}"
                start = (number * REQUESTS_PER_CLIENT + n) % len(ids)
                if n % 3 == 0:  # a batch by ids; else one customer by id
                    wanted = [ids[(start + k) % len(ids)] for k in range(BATCH_IDS)]
                    body = {"customer_ids": wanted, "as_of": as_of, "explain": False}
                    response = http.post("/predict_batch", json=body, headers={"x-request-id": request_id})
                else:
                    wanted = [ids[start]]
                    body = {"customer_id": wanted[0], "as_of": as_of}
                    response = http.post("/predict", json=body, headers={"x-request-id": request_id})
                with lock:
                    if response.status_code != 200:
                        failures.append(
                            f"{replica.port} {request_id}: {response.status_code} {response.text}"[:500]
                        )
                        continue
                    served_by[replica.port] += 1
                    for customer in wanted:
                        expected[(request_id, customer)] += 1

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    assert served_by[replicas.a.port] > 0 and served_by[replicas.b.port] > 0

    log = PredictionLog.open(replicas.url)
    try:
        logged = log.read()
    finally:
        log.close()
    logged = logged[logged["request_id"].str.startswith("load-")]
    got = Counter(zip(logged["request_id"], logged["customer_id"], strict=True))
    assert got == expected  # every scored customer once: none missing, none twice


def test_an_event_ingested_by_one_replica_is_scored_by_the_other(replicas: Replicas) -> None:
    customer = "REPLICA-NEW-1"
    now = pd.Timestamp.now(tz="UTC")
    with (
        httpx.Client(base_url=replicas.a.base_url, timeout=60) as to_a,
        httpx.Client(base_url=replicas.b.base_url, timeout=60) as to_b,
    ):
        unknown = to_b.post("/predict", json={"customer_id": customer})
        assert unknown.status_code == 404 and customer in unknown.text
        record = {
            "customer_id": customer,
            "signup_date": f"{now - pd.Timedelta(days=200):%Y-%m-%d}",
            "segment": "SMB",
            "industry": "retail",
            "region": "EMEA",
            "plan": "basic",
            "contract_value": 3000,
            "account_owner": "Ana Lima",
        }
        assert to_a.post("/customers", json={"customers": [record]}).status_code == 200
        events = [
            {
                "event_id": f"replica-{day}",
                "customer_id": customer,
                "type": "login",
                "timestamp": f"{now - pd.Timedelta(days=day):%Y-%m-%dT%H:%M:%SZ}",
            }
            for day in range(3, 150, 2)
        ]
        # The crm model reads the contract too: its term, MRR, seats and auto-renew, as events.
        signed = f"{now - pd.Timedelta(days=200):%Y-%m-%d}"
        term = {"contract_term": 365, "contract_mrr": 250, "contract_seats": 5, "contract_auto_renew": 1}
        events += [
            {"event_id": f"replica-{kind}", "customer_id": customer, "type": kind, "value": value,
             "timestamp": signed}
            for kind, value in term.items()
        ]  # fmt: skip
        stored = to_a.post("/events", json={"events": events})
        assert stored.status_code == 200 and stored.json()["stored"] == len(events), stored.text
        by_b = to_b.post("/predict", json={"customer_id": customer, "as_of": f"{now:%Y-%m-%d}"})
        by_a = to_a.post("/predict", json={"customer_id": customer, "as_of": f"{now:%Y-%m-%d}"})
    assert by_b.status_code == 200, by_b.text
    assert by_b.json()["customer_id"] == customer
    assert by_b.json()["churn_probability"] == by_a.json()["churn_probability"]  # the same history


def test_an_alert_is_sent_once_though_both_replicas_deliver(replicas: Replicas, tmp_path: Path) -> None:
    _, day = observed_ids(replicas.world, 1)
    daily = run_cli(
        ["daily", "--dataset", "crm", "--as-of", day, "--model", str(replicas.world.model_dir),
         "--store", replicas.url, "--log", replicas.url, "--out", str(tmp_path / "daily")],
        {**replicas.world.environment(), **replicas.env},
    )  # fmt: skip
    assert daily.returncode == 0, daily.stderr[-3000:]
    store = AlertStore.open(replicas.url)
    try:
        alerts = store.alerts(limit=10_000)
        assert alerts, daily.stdout
        assert pd.Series([a["customer_id"] for a in alerts]).is_unique
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and store.outbox_counts() != {"sent": len(alerts)}:
            time.sleep(0.5)
        assert store.outbox_counts() == {"sent": len(alerts)}, replicas.a.log_tail()
    finally:
        store.close()
    receiver = replicas.receiver
    assert set(receiver.alerts) == {a["alert_id"] for a in alerts}
    assert set(receiver.alerts.values()) == {1}
    # Sent once, not deduplicated by the receiver: no second copy ever reached it.
    assert receiver.duplicates == 0 and receiver.requests == len(alerts)


def test_a_shared_log_that_refuses_writes_is_a_503_on_either_replica(replicas: Replicas) -> None:
    """A PostgreSQL log failing (here a trigger refuses inserts) gets the same 503 as a locked SQLite
    log, "nothing was scored", never a 500; once it accepts writes again, so does the service."""
    import psycopg

    ids, as_of = observed_ids(replicas.world, 1)
    body = {"customer_id": ids[0], "as_of": as_of}
    with psycopg.connect(replicas.url, autocommit=True) as sql:
        sql.execute(
            "CREATE FUNCTION refuse_log() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'log refused'; END $$ "
            "LANGUAGE plpgsql"
        )
        sql.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON predictions FOR EACH ROW EXECUTE FUNCTION refuse_log()"
        )
        try:
            for server in (replicas.a, replicas.b):
                refused = httpx.post(f"{server.base_url}/predict", json=body, timeout=60)
                assert refused.status_code == 503, refused.text
                assert "nothing was scored" in refused.json()["error"]
                assert refused.headers["retry-after"] == "5"
        finally:
            sql.execute("DROP TRIGGER refuse ON predictions")
        for server in (replicas.a, replicas.b):
            answered = httpx.post(f"{server.base_url}/predict", json=body, timeout=60)
            assert answered.status_code == 200, answered.text


def test_both_replicas_recover_when_postgresql_drops_their_connections(replicas: Replicas) -> None:
    """A database restart or failover drops every connection: the requests that meet a dropped one get
    a 503 (nothing scored), and the replicas reconnect by themselves rather than failing until restarted."""
    import psycopg

    ids, as_of = observed_ids(replicas.world, 1)
    body = {"customer_id": ids[0], "as_of": as_of}
    with psycopg.connect(replicas.url, autocommit=True) as sql:
        dropped = sql.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert dropped >= 4  # at least the event store and the log of each replica
    for server in (replicas.a, replicas.b):
        statuses = []
        for _ in range(6):
            answer = httpx.post(f"{server.base_url}/predict", json=body, timeout=60)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                break
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}, (statuses, server.log_tail(20))


def test_a_daily_pass_run_on_two_hosts_at_once_logs_each_customer_once(
    replicas: Replicas, tmp_path: Path
) -> None:
    """Two schedulers start the same day's pass together against the shared log (each with its own
    snapshot folder, as on two hosts): every active customer is logged once for that day."""
    from churnguard.daily import daily_pass
    from churnguard.predict import Predictor
    from churnguard.store.events import EventStore

    _, last = observed_ids(replicas.world, 1)
    day = pd.Timestamp(last) - pd.Timedelta(days=1)  # not the day the alert test passes
    predictor = Predictor.load(replicas.world.model_dir, "1")
    together = threading.Barrier(2)
    summaries, errors = [], []

    def run(host: str) -> None:
        store, log = EventStore.open(replicas.url), PredictionLog.open(replicas.url)
        try:
            together.wait()
            summaries.append(
                daily_pass(
                    predictor,
                    "churn-crm",
                    store,
                    log,
                    day,
                    tmp_path / host,
                    explain=False,
                    chunk_customers=50,
                    progress=False,
                )
            )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()
            log.close()

    threads = [threading.Thread(target=run, args=(host,)) for host in ("host-a", "host-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert summaries[0].scored == summaries[1].scored > 100 and summaries[0].chunks >= 3
    log = PredictionLog.open(replicas.url)
    try:
        logged = log.read()
    finally:
        log.close()
    logged = logged[logged["request_id"].str.startswith(f"daily-churn-crm-{day:%Y-%m-%d}-")]
    assert len(logged) == summaries[0].scored and logged["customer_id"].is_unique
