"""The event store: raw CRM events and customers, kept so that features can be computed as of any moment.

Default: SQLite in WAL mode at `<state>/events.db` (`CHURNGUARD_EVENT_STORE`, or a service's
`event_store.url`). Any `postgresql://` URL instead, shared by every replica.

Why SQLite and not DuckDB for the embedded default: the service runs several worker processes that
all write events and read a customer's history; SQLite in WAL mode lets every process read and write
one file (one writer at a time, for milliseconds), while DuckDB lets only one process open a database
for writing. Reading one customer's history is an index range scan in both.

Events are stored as sent: `event_id`, customer, timestamp (int64 nanoseconds, UTC), type and value,
whatever the type. An event is its customer's `event_id`: sending it again changes nothing. Keying the
uniqueness by customer first keeps a bulk load's index inserts local: a global index of random ids
took 135,000 events/s on the simulator's 4.5 M events, this one (and the history index) 300,000.
Late events are simply older timestamps. `seq` keeps the order of arrival, which orders events with
the same timestamp the way the offline table orders them (file order). Customers are one row each:
signup and churn dates and every other attribute in one JSON object, merged on update (a key sent as
null clears it).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from churnguard.schema import ID_COLUMN
from churnguard.settings import state_dir
from churnguard.store.connections import ThreadConnections, open_wal
from churnguard.store.intake import CHURN, SIGNUP, CustomerBatch, EventBatch

log = logging.getLogger(__name__)

STORE_ENV = "CHURNGUARD_EVENT_STORE"


def _store_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is locked, but SQLite needs nothing
        return (sqlite3.Error, OSError)
    return (sqlite3.Error, OSError, psycopg.Error)


# What a store raises when it cannot read or write (locked, full, down): a 503, not a client's mistake.
STORE_ERRORS = _store_errors()
_IDS_PER_QUERY = 500  # customer ids per IN (...) list
CHECKPOINT_PAGES = 100_000  # WAL pages (4 KiB) before a commit copies them into the database file
CACHE_KIB = 256 * 1024  # SQLite page cache per connection, an upper bound (pages are used as needed)

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,          -- order of arrival
    event_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    ts INTEGER NOT NULL,              -- nanoseconds since the epoch, UTC
    type TEXT NOT NULL,
    value REAL,
    received_at INTEGER NOT NULL,     -- nanoseconds since the epoch, UTC
    UNIQUE (customer_id, event_id)    -- an event is its customer's event_id
);
-- A customer's history in time order, read from the index alone (covering).
CREATE INDEX IF NOT EXISTS events_customer_time ON events (customer_id, ts, type, value);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    attributes TEXT NOT NULL,         -- JSON object: signup_date, churn_date, owner, segment, ...
    updated_at INTEGER NOT NULL
);
"""

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    type TEXT NOT NULL,
    value DOUBLE PRECISION,
    received_at BIGINT NOT NULL,
    UNIQUE (customer_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_customer_time ON events (customer_id, ts, seq) INCLUDE (type, value);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    attributes JSONB NOT NULL,
    updated_at BIGINT NOT NULL
);
"""


@dataclass
class IngestResult:
    """What one batch did: events received, newly stored, already there, and types the model does not read."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    unknown_types: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestResult) -> None:
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        for name, count in other.unknown_types.items():
            self.unknown_types[name] = self.unknown_types.get(name, 0) + count

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "unknown_types": self.unknown_types,
        }


def default_url() -> str:
    return os.environ.get(STORE_ENV) or f"sqlite:///{state_dir() / 'events.db'}"


def _now_ns() -> int:
    return time.time_ns()


def _event_rows(frame: pd.DataFrame, received_at: int) -> Iterator[tuple]:
    values = frame["value"].to_numpy(dtype=np.float64)
    # None for a missing value: SQL NULL, not NaN.
    value_list = np.where(np.isnan(values), None, values).tolist()
    return zip(
        frame["event_id"].tolist(),
        frame[ID_COLUMN].tolist(),
        frame["ts"].to_numpy(dtype=np.int64).tolist(),
        frame["type"].tolist(),
        value_list,
        [received_at] * len(frame),
        strict=True,
    )


class EventStore:
    """Raw events and customers; `EventStore.open(url)` picks SQLite or PostgreSQL."""

    url: str

    @staticmethod
    def open(url: str | None = None) -> EventStore:
        url = url or default_url()
        if url.startswith(("postgresql://", "postgres://")):
            return PostgresEventStore(url)
        if url.startswith("sqlite:///"):
            return SqliteEventStore(Path(url.removeprefix("sqlite:///").split("?")[0]))
        raise ValueError(f"event store URL must be sqlite:///PATH or postgresql://..., got {url!r}")

    # ------------------------------------------------------------------------------------- writing

    def add_events(self, batch: EventBatch) -> IngestResult:
        """Store a checked batch in one transaction: all of it or, on an error, none of it."""
        # In index order: both indexes lead with the customer, so the inserts walk each B-tree once.
        # A stable sort keeps the order of arrival among a customer's events at the same moment.
        frame = batch.frame.sort_values([ID_COLUMN, "ts"], kind="stable")
        with self._transaction() as cursor:
            stored = self._insert_events(cursor, frame)
        return IngestResult(len(batch), stored, len(batch) - stored, dict(batch.unknown_types))

    def upsert_customers(self, batch: CustomerBatch) -> int:
        """Insert new customers and merge the given attributes into known ones, in one transaction."""
        now = _now_ns()
        with self._transaction() as cursor:
            cursor.executemany(
                self._upsert_sql,
                [(i, a, now) for i, a in zip(batch.customer_ids, batch.attributes, strict=True)],
            )
        return len(batch)

    # ------------------------------------------------------------------------------------- reading

    def events_of(self, customer_ids: Sequence[str], before_ns: int | None = None) -> pd.DataFrame:
        """Events of these customers (before a moment), ordered by customer, time and arrival:
        customer_id, timestamp (datetime64[ns]), type, value, as `load_events` gives them."""
        rows: list[tuple] = []
        ids = sorted(set(customer_ids))
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start : start + _IDS_PER_QUERY]
            marks = ",".join([self._mark] * len(part))
            sql = (
                f"SELECT customer_id, ts, type, value FROM events WHERE customer_id IN ({marks})"
                + (f" AND ts < {self._mark}" if before_ns is not None else "")
                + " ORDER BY customer_id, ts, seq"
            )
            rows.extend(self._query(sql, [*part, *([before_ns] if before_ns is not None else [])]))
        return _events_frame(rows)

    def events_in_range(self, first_id: str, last_id: str, before_ns: int) -> pd.DataFrame:
        """Events of the customers whose ids sort between `first_id` and `last_id` (inclusive): the
        daily pass's chunk, millions of rows at a time. Customer ids and types come as categoricals."""
        mark = self._mark
        sql = (
            f"SELECT customer_id, ts, type, value FROM events WHERE customer_id >= {mark} "
            f"AND customer_id <= {mark} AND ts < {mark} ORDER BY customer_id, ts, seq"
        )
        return _arrow_events(self._arrow_query(sql, [first_id, last_id, before_ns]))

    def customers(
        self, customer_ids: Sequence[str] | None = None, *, records_only: bool = False
    ) -> pd.DataFrame:
        """customer_id, signup_date, churn_date (datetime64[ns], NaT unknown) and every other attribute.

        A customer known only from events (no record) gets a row too, signed up at their first event,
        as a dataset without a customers file has it; `records_only` skips that (reading every
        customer's first event scans the whole events index: seconds at 20 M events)."""
        return pd.DataFrame(self.customer_columns(customer_ids, records_only=records_only))

    def customer_columns(
        self, customer_ids: Sequence[str] | None = None, *, records_only: bool = False
    ) -> dict[str, np.ndarray]:
        """`customers()` as arrays by column, sorted by id (no frame: a request builds its own)."""
        if customer_ids is None:
            records = self._query("SELECT customer_id, attributes FROM customers ORDER BY customer_id", [])
            first = (
                []
                if records_only
                else self._query("SELECT customer_id, MIN(ts) FROM events GROUP BY customer_id", [])
            )
        else:
            ids = sorted(set(customer_ids))
            records = self._in_chunks(
                "SELECT customer_id, attributes FROM customers WHERE customer_id IN ({})", ids
            )
            # The first event stands in only for a missing signup date: usually no second query.
            signed_up = {customer for customer, attributes in records if _has_signup(attributes)}
            unsigned = [customer for customer in ids if customer not in signed_up]
            first = self._in_chunks(
                "SELECT customer_id, MIN(ts) FROM events WHERE customer_id IN ({}) GROUP BY customer_id",
                unsigned,
            )
        return _customer_columns(records, first)

    def _in_chunks(self, sql: str, ids: list[str]) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start : start + _IDS_PER_QUERY]
            rows += self._query(sql.format(",".join([self._mark] * len(part))), part)
        return rows

    def customer_ids(self) -> list[str]:
        """Every customer with a record or an event, sorted."""
        rows = self._query(
            "SELECT customer_id FROM customers UNION SELECT DISTINCT customer_id FROM events ORDER BY 1", []
        )
        return [row[0] for row in rows]

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events", [])[0][0])

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # ------------------------------------------------------------------------------- per engine

    _mark = "?"
    _upsert_sql = ""

    @contextmanager
    def _transaction(self) -> Iterator[object]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def _insert_events(self, cursor: object, frame: pd.DataFrame) -> int:  # pragma: no cover
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:  # pragma: no cover
        raise NotImplementedError

    def _arrow_query(self, sql: str, params: Sequence[object]) -> pa.Table:
        """A large result as Arrow; by default from the row query (engines override it)."""
        rows = self._query(sql, params)
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(4)]
        return pa.table(
            {
                ID_COLUMN: pa.array(columns[0], pa.string()),
                "ts": pa.array(columns[1], pa.int64()),
                "type": pa.array(columns[2], pa.string()),
                "value": pa.array(columns[3], pa.float64()),
            }
        )


def _events_frame(rows: list[tuple]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(
            {
                ID_COLUMN: pd.Series([], dtype=object),
                "timestamp": pd.Series([], dtype="datetime64[ns]"),
                "type": pd.Series([], dtype=object),
                "value": pd.Series([], dtype=np.float64),
            }
        )
    customer_ids, ts, types, values = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            ID_COLUMN: np.array(customer_ids, dtype=object),
            "timestamp": np.array(ts, dtype=np.int64).view("datetime64[ns]"),
            "type": np.array(types, dtype=object),
            "value": np.array(values, dtype=np.float64),  # None (SQL NULL) becomes NaN
        }
    )


def _arrow_events(table: pa.Table) -> pd.DataFrame:
    """Events as `load_events` gives them, from an Arrow table: customer and type dictionary-encoded
    (one string per distinct value, not per event), times as datetime64[ns]."""
    import pyarrow.compute as pc

    for name in (ID_COLUMN, "type"):
        position = table.column_names.index(name)
        table = table.set_column(position, name, pc.dictionary_encode(table.column(name)))
    frame = table.to_pandas()
    frame["timestamp"] = frame.pop("ts").to_numpy(dtype=np.int64).view("datetime64[ns]")
    return frame[[ID_COLUMN, "timestamp", "type", "value"]]


def _has_signup(attributes: str | dict) -> bool:
    if isinstance(attributes, dict):  # PostgreSQL hands JSONB over decoded
        return attributes.get(SIGNUP) is not None
    # As json.dumps writes it, or as SQLite's json_patch rewrites it; null or absent otherwise.
    return f'"{SIGNUP}": "' in attributes or f'"{SIGNUP}":"' in attributes


def _customer_columns(records: list[tuple], first_events: list[tuple]) -> dict[str, np.ndarray]:
    first = dict(first_events)
    rows: dict[str, dict] = {}
    for customer_id, attributes in records:
        rows[customer_id] = attributes if isinstance(attributes, dict) else json.loads(attributes)
    for customer_id in first:
        rows.setdefault(customer_id, {})
    ids = sorted(rows)
    keys = dict.fromkeys(key for customer_id in ids for key in rows[customer_id])
    # Column by column from plain lists: DataFrame.from_records costs milliseconds per request.
    data: dict[str, object] = {ID_COLUMN: np.array(ids, dtype=object)}
    for key in keys:
        data[key] = np.array([rows[customer_id].get(key) for customer_id in ids], dtype=object)
    for column in (SIGNUP, CHURN):
        data[column] = _moments(data.get(column, np.full(len(ids), None, dtype=object)))
    # No signup date given: the customer exists from their first event.
    missing = np.isnat(data[SIGNUP])  # type: ignore[arg-type]
    if missing.any():
        first_ns = np.array([first.get(ids[i], NAT_NS) for i in np.flatnonzero(missing)], dtype=np.int64)
        data[SIGNUP][missing] = first_ns.view("datetime64[ns]")  # type: ignore[index]
    return data  # type: ignore[return-value]


NAT_NS = np.iinfo(np.int64).min  # datetime64's NaT as int64


def _moments(values: np.ndarray) -> np.ndarray:
    """datetime64[ns] of stored ISO dates (the intake writes them timezone-free); NaT when absent."""
    try:  # numpy reads its own ISO form in C: much cheaper than pandas for a request's few values
        return values.astype("datetime64[ns]")
    except ValueError:
        return pd.to_datetime(values, format="ISO8601", errors="coerce").to_numpy(dtype="datetime64[ns]")


# ---------------------------------------------------------------------------------------------- SQLite


class SqliteEventStore(EventStore):
    _mark = "?"
    _upsert_sql = (
        "INSERT INTO customers (customer_id, attributes, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (customer_id) DO UPDATE SET "
        "attributes = json_patch(customers.attributes, excluded.attributes), updated_at = excluded.updated_at"
    )

    def __init__(self, path: Path, lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._connections = ThreadConnections(self._open)
        self._arrow_connections = ThreadConnections(self._open_arrow)
        with self._transaction() as cursor:
            cursor.executescript(_SQLITE_SCHEMA)

    def _open(self) -> sqlite3.Connection:
        connection = open_wal(self.path, self.lock_timeout)
        # The event_id index takes random keys: a page cache that holds it keeps inserts in memory.
        connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        # A batch of events for random customers dirties a page per index entry: checkpointing
        # every 1,000 pages (the default) made each 10,000-event commit copy them twice.
        connection.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        return connection

    def _open_arrow(self) -> object:
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(str(self.path))

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        connection = self._connection()
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    def _insert_events(self, cursor: sqlite3.Cursor, frame: pd.DataFrame) -> int:
        before = self._connection().total_changes
        cursor.executemany(
            # Only a repeated event is skipped (OR IGNORE would also skip a NOT NULL violation).
            "INSERT INTO events (event_id, customer_id, ts, type, value, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id, event_id) DO NOTHING",
            _event_rows(frame, _now_ns()),
        )
        return self._connection().total_changes - before

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:
        return self._connection().execute(sql, list(params)).fetchall()

    def _arrow_query(self, sql: str, params: Sequence[object]) -> pa.Table:
        # ADBC's SQLite driver hands rows over as Arrow columns from C: 2.75 s for 3.7 M events, where
        # building Python tuples and then arrays from them took 7 s.
        connection = self._arrow_connections.get()
        with connection.cursor() as cursor:
            cursor.execute(sql, tuple(params))
            table = cursor.fetch_arrow_table()
        connection.rollback()  # end the read transaction: a long-lived one would pin the WAL
        return table

    def close(self) -> None:
        self._connections.close()
        self._arrow_connections.close()


# ------------------------------------------------------------------------------------------ PostgreSQL


class PostgresEventStore(EventStore):
    _mark = "%s"
    _upsert_sql = (
        "INSERT INTO customers (customer_id, attributes, updated_at) VALUES (%s, %s::jsonb, %s) "
        "ON CONFLICT (customer_id) DO UPDATE SET "
        "attributes = jsonb_strip_nulls(customers.attributes || excluded.attributes), "
        "updated_at = excluded.updated_at"
    )

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._connections = ThreadConnections(lambda: psycopg.connect(url))
        with self._transaction() as cursor:
            # Two replicas creating the tables at once must not both try: one waits for the other.
            cursor.execute("SELECT pg_advisory_xact_lock(727001)")
            cursor.execute(_POSTGRES_SCHEMA)

    def _connection(self):
        return self._connections.get()

    @contextmanager
    def _transaction(self) -> Iterator[object]:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor:
            yield cursor

    def _insert_events(self, cursor, frame: pd.DataFrame) -> int:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming (n BIGINT, event_id TEXT, customer_id TEXT, "
            "ts BIGINT, type TEXT, value DOUBLE PRECISION, received_at BIGINT) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(
            "COPY incoming (n, event_id, customer_id, ts, type, value, received_at) FROM STDIN"
        ) as copy:
            for number, row in enumerate(_event_rows(frame, _now_ns())):
                copy.write_row((number, *row))
        cursor.execute(
            "INSERT INTO events (event_id, customer_id, ts, type, value, received_at) "
            "SELECT event_id, customer_id, ts, type, value, received_at FROM incoming ORDER BY n "
            "ON CONFLICT (customer_id, event_id) DO NOTHING"
        )
        return int(cursor.rowcount)

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            return cursor.fetchall()

    def close(self) -> None:
        self._connections.close()
