"""The event store on its embedded default (SQLite) and on the real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pg_fixtures import fresh_database

from churnguard.store.events import STORE_ERRORS, EventStore
from churnguard.store.intake import check_customers, check_events


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
    else:
        with fresh_database("churnguard_store") as url:
            yield url


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    opened = EventStore.open(store_url)
    yield opened
    opened.close()


def events(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["event_id", "customer_id", "timestamp", "type", "value"])


def test_an_event_sent_again_changes_nothing_and_late_events_keep_time_order(store: EventStore) -> None:
    first = events(
        ("e1", "C1", "2025-03-01T10:00:00Z", "login", None),
        ("e2", "C1", "2025-03-05T10:00:00Z", "order", 120.0),
        ("e3", "C2", "2025-03-02T10:00:00Z", "login", None),
    )
    result = store.add_events(check_events(first, known_types={"login", "order"}))
    assert (result.received, result.stored, result.duplicates) == (3, 3, 0)
    late = events(
        ("e2", "C1", "2025-03-05T10:00:00Z", "order", 120.0),
        ("e4", "C1", "2025-02-01T00:00:00Z", "mystery", 1.0),
    )
    again = store.add_events(check_events(late, known_types={"login", "order"}))
    assert (again.stored, again.duplicates, again.unknown_types) == (1, 1, {"mystery": 1})
    assert store.count_events() == 4
    history = store.events_of(["C1"])
    assert history["type"].tolist() == ["mystery", "login", "order"]  # time order, not arrival order
    assert history["value"].iloc[2] == 120.0 and pd.isna(history["value"].iloc[1])
    before = store.events_of(["C1", "C2"], before_ns=pd.Timestamp("2025-03-03").value)
    assert before["customer_id"].tolist() == ["C1", "C1", "C2"]
    assert str(before["timestamp"].dtype) == "datetime64[ns]"
    assert store.customer_ids() == ["C1", "C2"]


def test_a_batch_is_stored_whole_or_not_at_all(store: EventStore) -> None:
    batch = check_events(
        events(("ok-1", "C1", "2025-03-01", "login", None), ("ok-2", "C1", "2025-03-02", "login", None))
    )
    # Past the checks, the database refuses the second row (NOT NULL) after taking the first.
    batch.frame.loc[1, "type"] = None
    with pytest.raises(STORE_ERRORS):
        store.add_events(batch)
    assert store.count_events() == 0


def test_customers_merge_attributes_and_null_clears_one(store: EventStore) -> None:
    store.upsert_customers(
        check_customers(
            [{"customer_id": "C1", "segment": "SMB", "plan": "basic", "signup_date": "2024-05-01"}]
        )
    )
    store.upsert_customers(
        check_customers([{"customer_id": "C1", "plan": "pro", "segment": None, "contract_value": 1200}])
    )
    store.add_events(check_events(events(("e1", "C2", "2025-01-03T04:05:06Z", "login", None))))
    frame = store.customers().set_index("customer_id")
    assert frame.loc["C1", "plan"] == "pro" and frame.loc["C1", "contract_value"] == 1200
    assert "segment" not in frame.columns  # the only customer with one had it cleared
    assert frame.loc["C1", "signup_date"] == pd.Timestamp("2024-05-01")
    # Known only from events: a customer from the first event on.
    assert frame.loc["C2", "signup_date"] == pd.Timestamp("2025-01-03 04:05:06")
    assert list(store.customers(["C2"])["customer_id"]) == ["C2"]


def test_concurrent_writers_store_each_event_once(store_url: str) -> None:
    def write(worker: int) -> None:
        own = EventStore.open(store_url)
        try:
            for batch in range(10):
                # Every batch overlaps the other worker's: the same ids race.
                rows = [
                    (f"r-{batch}-{n}", f"C{n % 7}", "2025-04-01T00:00:00Z", "login", None) for n in range(200)
                ]
                rows += [
                    (f"w{worker}-{batch}-{n}", "C1", "2025-04-02T00:00:00Z", "login", None) for n in range(50)
                ]
                own.add_events(check_events(events(*rows)))
        finally:
            own.close()

    failures: list[BaseException] = []

    def guarded(worker: int) -> None:
        try:
            write(worker)
        except BaseException as exc:  # a thread's error must fail the test, not just print
            failures.append(exc)

    # Both open the fresh store at the same moment, as two service workers starting together do.
    threads = [threading.Thread(target=guarded, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    store = EventStore.open(store_url)
    try:
        assert store.count_events() == 10 * 200 + 4 * 10 * 50
    finally:
        store.close()


def test_a_range_of_customers_reads_back_as_their_histories(store: EventStore) -> None:
    """The daily pass's read (Arrow, categoricals) gives what the per-customer read gives."""
    rows = [
        (f"e{n}", f"C{n % 5}", f"2025-03-{1 + n % 27:02d}T10:00:00Z", ("login", "order")[n % 2], n or None)
        for n in range(60)
    ]
    store.add_events(check_events(events(*rows)))
    in_range = store.events_in_range("C1", "C3", pd.Timestamp("2025-03-20").value)
    by_customer = store.events_of(["C1", "C2", "C3"], before_ns=pd.Timestamp("2025-03-20").value)
    assert isinstance(in_range["customer_id"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(
        in_range.astype({"customer_id": object, "type": object}), by_customer, check_dtype=True
    )


def test_workers_opening_a_fresh_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock SQLite's busy timeout does not wait for; two service
    workers starting at once once failed CI with "database is locked". The switch is retried."""
    for trial in range(15):
        url = f"sqlite:///{tmp_path / f'fresh-{trial}.db'}"
        barrier = threading.Barrier(8)
        failures: list[BaseException] = []

        def open_and_write(
            worker: int,
            url: str = url,
            barrier: threading.Barrier = barrier,
            failures: list[BaseException] = failures,
        ) -> None:
            barrier.wait()
            try:
                store = EventStore.open(url)
                store.add_events(check_events(events((f"w{worker}", "C1", "2025-01-01", "login", None))))
                store.close()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        check = EventStore.open(url)
        assert check.count_events() == 8
        check.close()
