"""The live loop: raw events in, features as of any moment from the store, scoring by id.

The parity tests are the ones that keep training and serving from drifting apart: features computed
from the event store equal the rows of the offline table, and scoring a customer by id equals
scoring that offline row.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from live_fixtures import LiveWorld, build_live_world, offline_rows
from model_fixtures import ServerProcess, start_server

from churnguard.live import LiveFeatures, UnknownCustomers, as_of_moment
from churnguard.predict import Predictor
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN
from churnguard.store.backfill import backfill
from churnguard.store.events import EventStore
from churnguard.store.intake import check_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorld]:
    with pytest.MonkeyPatch.context() as patch:
        state = tmp_path_factory.mktemp("live-state")
        patch.setenv("CHURNGUARD_STATE_DIR", str(state))
        yield build_live_world(state)


@pytest.fixture(scope="module")
def store(world: LiveWorld) -> Iterator[EventStore]:
    opened = EventStore.open(world.store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def predictor(world: LiveWorld) -> Predictor:
    return Predictor.load(world.model_dir, "1")


@pytest.fixture(scope="module")
def live(world: LiveWorld) -> LiveFeatures:
    return LiveFeatures(world.table.schema)


def assert_same_features(got: pd.DataFrame, want: pd.DataFrame, world: LiveWorld) -> None:
    """Every feature of every row equal: numbers exactly (NaN equal to NaN), categories as text."""
    assert got[ID_COLUMN].tolist() == want[ID_COLUMN].tolist()
    for spec in world.table.schema.features:
        a, b = got[spec.name].to_numpy(), want[spec.name].to_numpy()
        if spec.categorical:
            same = np.array([str(x) == str(y) for x, y in zip(a, b, strict=True)])
        else:
            a, b = a.astype(float), b.astype(float)
            same = (a == b) | (np.isnan(a) & np.isnan(b))
        assert same.all(), f"{spec.name}: store {a[~same][:3]} != table {b[~same][:3]}"


# ------------------------------------------------------------------------------------------- ingest


def test_ingest_loads_every_event_once_and_counts_unknown_types(world: LiveWorld, store: EventStore) -> None:
    files = pd.read_parquet(world.state / "sim" / "events.parquet")
    # The contracts file's terms go in as contract events (4 per term, plus one per switch-off).
    contracts = pd.read_parquet(world.state / "sim" / "contracts.parquet")
    contract_events = 4 * len(contracts) + int(contracts["auto_renew_off_date"].notna().sum())
    total = len(files) + contract_events
    assert store.count_events() == total
    assert f"{total:,} read, {total:,} stored" in world.ingest_output
    assert f"{contract_events:,} of them contract events" in world.ingest_output
    assert "events/s" in world.ingest_output  # the progress bar's summary line
    unknown = set(files["type"]) - set(world.config.event_types)
    assert unknown, "the simulator writes a type the dataset does not read (the churn marker)"
    for name in unknown:
        assert name in world.ingest_output  # kept and counted, not dropped silently
    again = backfill(world.config, store, progress=False)  # the same files again: nothing new
    assert (again.events.stored, again.events.duplicates) == (0, total)
    assert store.count_events() == total


# ------------------------------------------------------------------------------------------- parity


def test_features_from_the_store_equal_the_offline_table(
    world: LiveWorld, store: EventStore, live: LiveFeatures
) -> None:
    rows = offline_rows(world.table, 3_000, seed=1)
    assert len(rows) >= 2_500 and rows[OBSERVATION_COLUMN].nunique() >= 5
    for observed, group in rows.groupby(OBSERVATION_COLUMN):
        got = live.frame(store, group[ID_COLUMN].tolist(), pd.Timestamp(observed))
        want = group[[ID_COLUMN, *world.table.schema.names]].reset_index(drop=True)
        assert_same_features(got, want, world)


def test_scoring_by_id_equals_scoring_the_offline_row(
    world: LiveWorld, store: EventStore, live: LiveFeatures, predictor: Predictor
) -> None:
    rows = offline_rows(world.table, 400, seed=2)
    for observed, group in rows.groupby(OBSERVATION_COLUMN):
        offline = predictor.score_frame(group[[ID_COLUMN, *world.table.schema.names]].reset_index(drop=True))
        by_id = predictor.score_frame(live.frame(store, group[ID_COLUMN].tolist(), pd.Timestamp(observed)))
        assert np.array_equal(by_id.probability, offline.probability)
        assert by_id.tier.tolist() == offline.tier.tolist()
        assert by_id.reasons == offline.reasons


def test_as_of_a_date_is_midnight_and_a_timestamp_counts_to_the_second(
    store: EventStore, live: LiveFeatures
) -> None:
    customer = "LIVE-CLOCK-1"
    events = pd.DataFrame(
        {
            "event_id": ["clock-1", "clock-2"],
            "customer_id": [customer, customer],
            "timestamp": ["2025-05-01T08:00:00Z", "2025-06-01T10:00:00+02:00"],  # the second is 08:00 UTC
            "type": ["login", "order"],
            "value": [None, 250.0],
        }
    )
    store.add_events(check_events(events))
    assert as_of_moment("2025-06-01") == pd.Timestamp("2025-06-01 00:00:00")
    before = live.frame(store, [customer], as_of_moment("2025-06-01T07:59:59Z"))
    after = live.frame(store, [customer], as_of_moment("2025-06-01T08:00:01Z"))
    day = live.frame(store, [customer], as_of_moment("2025-06-01"))
    assert before["order__count_7d"].iloc[0] == 0 and after["order__count_7d"].iloc[0] == 1
    assert after["order__last"].iloc[0] == 250.0
    assert after["order__days_since_last"].iloc[0] == pytest.approx(1 / 86_400)
    assert day["order__count_7d"].iloc[0] == 0
    assert day["login__days_since_last"].iloc[0] == pytest.approx(30 + 16 / 24)
    # Signed up at the first event (no customer record): not a customer before it.
    with pytest.raises(UnknownCustomers, match="not yet customers"):
        live.frame(store, [customer], as_of_moment("2025-05-01T07:00:00Z"))
    with pytest.raises(UnknownCustomers, match="no history for customer"):
        live.frame(store, ["NOBODY-AT-ALL"], as_of_moment(None))


# ------------------------------------------------------------------------------------------- service


@pytest.fixture(scope="module")
def server(world: LiveWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("live-service")
    process = start_server(
        str(world.model_dir),
        state,
        env={
            "CHURNGUARD_EVENT_STORE": world.store_url,
            "CHURNGUARD_SERVICE__EVENT_STORE__MAX_EVENTS": "20000",
        },
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as session:
        yield session


def test_predict_by_id_equals_the_offline_row(
    client: httpx.Client, world: LiveWorld, predictor: Predictor
) -> None:
    rows = offline_rows(world.table, 6, seed=3)
    for _, row in rows.iterrows():
        observed = pd.Timestamp(row[OBSERVATION_COLUMN])
        response = client.post(
            "/predict", json={"customer_id": row[ID_COLUMN], "as_of": f"{observed:%Y-%m-%d}"}
        )
        assert response.status_code == 200, response.text
        expected = predictor.score_frame(
            pd.DataFrame([row[[ID_COLUMN, *world.table.schema.names]]])
        ).results()[0]
        answer = response.json()
        assert answer["churn_probability"] == pytest.approx(expected["churn_probability"], abs=1e-12)
        assert answer["alert_tier"] == expected["alert_tier"]
        assert answer["health_score"] == expected["health_score"]
        assert [r["code"] for r in answer["reasons"]] == [r["code"] for r in expected["reasons"]]


def test_predict_batch_by_ids_keeps_order_and_names_the_unknown(
    client: httpx.Client, world: LiveWorld
) -> None:
    last = world.table.frame[OBSERVATION_COLUMN].max()
    rows = world.table.frame[world.table.frame[OBSERVATION_COLUMN] == last]
    ids = rows[ID_COLUMN].sample(30, random_state=4).tolist()
    response = client.post(
        "/predict_batch", json={"customer_ids": ids, "as_of": f"{last:%Y-%m-%d}", "explain": False}
    )
    assert response.status_code == 200, response.text
    assert [r["customer_id"] for r in response.json()["results"]] == ids
    missing = client.post("/predict_batch", json={"customer_ids": [ids[0], "NO-SUCH-CUSTOMER"]})
    assert missing.status_code == 404 and "NO-SUCH-CUSTOMER" in missing.json()["error"]


def test_unknown_customer_and_bad_as_of_get_clear_4xx(client: httpx.Client) -> None:
    unknown = client.post("/predict", json={"customer_id": "NO-SUCH-CUSTOMER"})
    assert unknown.status_code == 404 and "NO-SUCH-CUSTOMER" in unknown.json()["error"]
    for as_of in ("not-a-date", "2999-01-01", 20250101):
        bad = client.post("/predict", json={"customer_id": "C000001", "as_of": as_of})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "as_of", bad.text
    mixed = client.post("/predict", json={"customer_id": "C000001", "plan": "pro"})
    assert mixed.status_code == 400 and mixed.json()["errors"][0]["field"] == "plan"


def test_events_in_then_scored_by_id_as_of_now(
    client: httpx.Client, world: LiveWorld, live: LiveFeatures, predictor: Predictor
) -> None:
    customer = "LIVE-NEW-1"
    now = pd.Timestamp.now(tz="UTC")
    added = client.post(
        "/customers",
        json={
            "customers": [
                {
                    "customer_id": customer,
                    "signup_date": f"{now - pd.Timedelta(days=200):%Y-%m-%d}",
                    "segment": "SMB",
                    "industry": "retail",
                    "region": "EMEA",
                    "plan": "basic",
                    "contract_value": 3000,
                    "account_owner": "Ana Lima",
                }
            ]
        },
    )
    assert added.status_code == 200, added.text
    events = [
        {
            "event_id": f"new-{day}",
            "customer_id": customer,
            "type": "login",
            "timestamp": f"{now - pd.Timedelta(days=day):%Y-%m-%dT%H:%M:%SZ}",
        }
        for day in range(3, 150, 2)
    ] + [
        {
            "event_id": "new-x",
            "customer_id": customer,
            "type": "webinar_signup",
            "timestamp": f"{now:%Y-%m-%d}",
        }
    ]
    # Its contract, as a CRM sends it: an annual term from signup (MRR 250, 5 seats, auto-renew on),
    # auto-renew switched off 10 days ago. The model reads contract features: without them it refuses.
    signup = (now - pd.Timedelta(days=200)).normalize()
    term = [
        ("contract_term", 365.0),
        ("contract_mrr", 250.0),
        ("contract_seats", 5.0),
        ("contract_auto_renew", 1.0),
    ]
    events += [
        {"event_id": f"term-{kind}", "customer_id": customer, "type": kind, "value": value,
         "timestamp": f"{signup:%Y-%m-%d}"}
        for kind, value in term
    ] + [
        {"event_id": "auto-renew-off", "customer_id": customer, "type": "contract_auto_renew", "value": 0,
         "timestamp": f"{now - pd.Timedelta(days=10):%Y-%m-%dT%H:%M:%SZ}"}
    ]  # fmt: skip
    stored = client.post("/events", json={"events": events})
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "received": len(events),
        "stored": len(events),
        "duplicates": 0,
        "unknown_types": {"webinar_signup": 1},
        "stored_whole": True,
    }
    again = client.post("/events", json={"events": events})
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == len(events)
    first = client.post("/predict", json={"customer_id": customer})
    assert first.status_code == 200, first.text
    assert first.json()["customer_id"] == customer and 0 <= first.json()["health_score"] <= 100
    # A late event (a past timestamp) arrives: scoring as of now sees it.
    late = [
        {
            "event_id": "new-late",
            "customer_id": customer,
            "type": "complaint",
            "timestamp": f"{now - pd.Timedelta(days=1):%Y-%m-%d}",
        }
    ]
    assert client.post("/events", json={"events": late}).json()["stored"] == 1
    second = client.post("/predict", json={"customer_id": customer})
    assert second.status_code == 200, second.text
    store = EventStore.open(world.store_url)
    try:
        features = live.frame(store, [customer], as_of_moment(None)).iloc[0]
    finally:
        store.close()
    assert features["complaint__count_7d"] == 1 and features["login__count_30d"] == 14
    as_of = as_of_moment(None)
    assert features["contract__days_to_renewal"] == pytest.approx(
        365 - (as_of - signup.tz_localize(None)) / pd.Timedelta(days=1), abs=0.01
    )
    assert features["contract__mrr"] == 250 and features["contract__auto_renew_off"] == 1
    assert features["contract__days_since_auto_renew_off"] == pytest.approx(10, abs=0.01)
    expected = predictor.score_frame(pd.DataFrame([features])).results()[0]
    assert second.json()["churn_probability"] == pytest.approx(expected["churn_probability"], abs=1e-12)


def test_customers_update_merges_attributes(
    client: httpx.Client, world: LiveWorld, live: LiveFeatures
) -> None:
    customer = "LIVE-MERGE-1"
    record = {"customer_id": customer, "signup_date": "2025-01-15", "segment": "SMB", "plan": "basic"}
    assert client.post("/customers", json={"customers": [record]}).status_code == 200
    login = {
        "event_id": "merge-1",
        "customer_id": customer,
        "type": "login",
        "timestamp": "2025-08-01T09:00:00Z",
    }
    assert client.post("/events", json={"events": [login]}).status_code == 200
    update = {"customer_id": customer, "plan": "enterprise", "contract_value": 9000}
    assert client.post("/customers", json={"customers": [update]}).status_code == 200
    store = EventStore.open(world.store_url)
    try:
        features = live.frame(store, [customer], as_of_moment("2025-09-01")).iloc[0]
        # Cleared with null, the attribute is missing again.
        client.post("/customers", json={"customers": [{"customer_id": customer, "segment": None}]})
        cleared = store.customers([customer]).iloc[0]
    finally:
        store.close()
    assert (features["plan"], features["segment"], features["contract_value"]) == (
        "enterprise",
        "SMB",
        9000.0,
    )
    assert features["tenure_days"] == (pd.Timestamp("2025-09-01") - pd.Timestamp("2025-01-15")).days
    assert pd.isna(cleared.get("segment")) and cleared["plan"] == "enterprise"
    by_id = client.post("/predict", json={"customer_id": customer, "as_of": "2025-09-01"})
    assert by_id.status_code in (200, 422), by_id.text  # 422 only if the model never saw a missing region
    bad = client.post(
        "/customers", json={"customers": [{"plan": "pro"}, {"customer_id": "X", "signup_date": "soon"}]}
    )
    assert bad.status_code == 400
    assert [(e["row"], e["field"]) for e in bad.json()["errors"]] == [(0, "customer_id"), (1, "signup_date")]


def test_bad_events_are_named_by_row_and_field_and_nothing_is_stored(
    client: httpx.Client, world: LiveWorld
) -> None:
    store = EventStore.open(world.store_url)
    count = store.count_events()
    good = {
        "event_id": "bad-batch-0",
        "customer_id": "C000001",
        "type": "login",
        "timestamp": "2025-09-01T10:00:00Z",
    }
    events = [
        good,
        {**good, "event_id": "bad-batch-1", "customer_id": ""},
        {**good, "event_id": "bad-batch-2", "timestamp": "next tuesday"},
        {**good, "event_id": "bad-batch-3", "timestamp": "2999-01-01T00:00:00Z"},
        {**good, "event_id": "bad-batch-4", "type": "order", "value": "a lot"},
        {**good, "event_id": "bad-batch-5", "type": "order", "value": True},
    ]
    response = client.post("/events", json={"events": events})
    assert response.status_code == 400, response.text
    body = response.json()
    assert "nothing was stored" in body["error"]
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (1, "customer_id"),
        (2, "timestamp"),
        (3, "timestamp"),
        (4, "value"),
        (5, "value"),
    ]
    assert store.count_events() == count
    missing_field = client.post("/events", json={"events": [{"customer_id": "C1", "type": "login"}]})
    assert missing_field.status_code == 400
    assert {e["field"] for e in missing_field.json()["errors"]} == {"event_id", "timestamp"}
    assert (
        client.post("/events", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert client.post("/events", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert store.count_events() == count
    store.close()


def test_events_as_csv_and_parquet(client: httpx.Client, world: LiveWorld) -> None:
    frame = pd.DataFrame(
        {
            "event_id": ["file-1", "file-2", "file-3"],
            "customer_id": ["C000002", "C000002", "C000003"],
            "timestamp": ["2025-09-02T10:00:00Z", "2025-09-03T11:00:00Z", "2025-09-03T12:00:00Z"],
            "type": ["order", "payment", "login"],
            "value": [120.5, 3.0, None],
        }
    )
    csv = client.post(
        "/events", content=frame.to_csv(index=False).encode(), headers={"content-type": "text/csv"}
    )
    assert csv.status_code == 200 and csv.json()["stored"] == 3, csv.text
    parquet_frame = frame.assign(
        event_id=lambda f: f["event_id"] + "-pq", timestamp=pd.to_datetime(frame["timestamp"])
    )
    buffer = io.BytesIO()
    parquet_frame.to_parquet(buffer)
    parquet = client.post(
        "/events", content=buffer.getvalue(), headers={"content-type": "application/vnd.apache.parquet"}
    )
    assert parquet.status_code == 200 and parquet.json()["stored"] == 3, parquet.text
    bad_csv = frame.assign(value=["12", "many", ""]).to_csv(index=False).encode()
    rejected = client.post("/events", content=bad_csv, headers={"content-type": "text/csv"})
    assert rejected.status_code == 400 and [(e["row"], e["field"]) for e in rejected.json()["errors"]] == [
        (1, "value")
    ]


def test_feature_vectors_are_still_scored(
    client: httpx.Client, world: LiveWorld, predictor: Predictor
) -> None:
    row = offline_rows(world.table, 1, seed=5)[[ID_COLUMN, *world.table.schema.names]].iloc[0]
    record = json.loads(pd.DataFrame([row]).to_json(orient="records"))[0]
    response = client.post("/predict", json={"customer": record})
    assert response.status_code == 200, response.text
    assert response.json()["churn_probability"] == pytest.approx(
        predictor.score_frame(pd.DataFrame([row])).results()[0]["churn_probability"], abs=1e-12
    )


def test_a_killed_service_loses_no_acknowledged_event(world: LiveWorld, tmp_path: Path) -> None:
    """Clients post batches while the service is SIGKILLed; every batch that got a 200 is stored whole."""
    import threading

    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    server = start_server(
        str(world.model_dir), tmp_path / "state", env={"CHURNGUARD_EVENT_STORE": store_url}, workers=2
    )
    acknowledged: list[list[str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def post_batches(client_number: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as session:
            for batch in range(400):
                if stop.is_set():
                    return
                ids = [f"kill-{client_number}-{batch}-{n}" for n in range(500)]
                events = [
                    {
                        "event_id": i,
                        "customer_id": f"K{client_number}",
                        "type": "login",
                        "timestamp": "2025-08-01T00:00:00Z",
                    }
                    for i in ids
                ]
                try:
                    response = session.post("/events", json={"events": events})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(ids)

    threads = [threading.Thread(target=post_batches, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    deadline = pd.Timestamp.now() + pd.Timedelta(seconds=60)
    while len(acknowledged) < 6 and pd.Timestamp.now() < deadline:
        stop.wait(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 6, server.log_tail()
    store = EventStore.open(store_url)
    try:
        for ids in acknowledged:
            found = store._query(
                f"SELECT COUNT(*) FROM events WHERE event_id IN ({','.join('?' * len(ids))})", ids
            )[0][0]
            assert found == len(ids)
        # Whole batches only: the stored count is a multiple of the batch size.
        assert store.count_events() % 500 == 0
    finally:
        store.close()


def test_postgres_store_gives_the_same_features(
    world: LiveWorld, store: EventStore, live: LiveFeatures
) -> None:
    """`churnguard ingest` into the real PostgreSQL server: the same features as the SQLite store."""
    from pg_fixtures import fresh_database

    rows = offline_rows(world.table, 300, seed=6)
    with fresh_database("churnguard_live") as url:
        postgres = EventStore.open(url)
        try:
            loaded = backfill(world.config, postgres, progress=False)
            assert loaded.events.stored == loaded.events.received > 0
            for observed, group in rows.groupby(OBSERVATION_COLUMN):
                ids = group[ID_COLUMN].tolist()
                got = live.frame(postgres, ids, pd.Timestamp(observed))
                want = group[[ID_COLUMN, *world.table.schema.names]].reset_index(drop=True)
                assert_same_features(got, want, world)
        finally:
            postgres.close()
