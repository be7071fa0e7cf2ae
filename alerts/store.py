"""Alerts and their outbox, in the event store's database: SQLite (WAL) by default, PostgreSQL by URL.

Same database as the events, so one URL (`CHURNGUARD_EVENT_STORE`, `--store`) names everything the
live loop keeps, and an alert and the messages announcing it are written in one transaction: an
alert is never raised without its deliveries queued, nor a delivery queued for an alert that was
rolled back. Plain DB-API, like churnguard/store/events.py.

- `alerts`: one row per alert. A partial unique index keeps at most one unresolved alert per
  customer, whatever two processes try at once.
- `outbox`: one row per message to send (alert, update, digest, escalation) and channel. Its
  `idempotency_key` is unique, so queueing the same message twice stores it once; the receiver gets
  the key too and removes the duplicates an at-least-once sender cannot avoid.
Times are seconds since the epoch (UTC) as floats: the SLA and cool-down arithmetic is plain.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from churnguard.store.connections import ThreadConnections, open_wal
from churnguard.store.events import STORE_ERRORS as STORE_ERRORS  # re-exported for the routes
from churnguard.store.events import default_url

# Columns holding JSON text (decoded when read).
JSON_COLUMNS = ("triggers", "rules", "reasons", "alert_ids", "payload")

_ALERT_COLUMNS = """
    customer_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    raised_day TEXT NOT NULL,           -- observation date of the pass that raised it
    observation_date TEXT NOT NULL,     -- of the latest pass that touched it
    tier TEXT NOT NULL,
    model_tier TEXT,
    previous_tier TEXT,
    health_score INTEGER,
    churn_probability {real},
    value_tier TEXT,
    priority INTEGER,
    triggers TEXT NOT NULL,             -- JSON: why it was raised or last updated
    rules TEXT NOT NULL,                -- JSON: critical rule codes fired
    reasons TEXT NOT NULL,              -- JSON: {"en": [...], "zh": [...]}, the top reasons
    model_version TEXT,
    delivery TEXT NOT NULL,             -- single | digest: over the owner's daily cap
    raised_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    updates INTEGER NOT NULL DEFAULT 0,
    due_at {real} NOT NULL,             -- acknowledge by then, or the manager hears
    acknowledged_at {real},
    started_at {real},
    resolved_at {real},
    actor TEXT,
    outcome TEXT,
    churn_reason TEXT,
    note TEXT,
    escalated_at {real},
    escalated_to TEXT
"""

_OUTBOX_COLUMNS = """
    idempotency_key TEXT NOT NULL UNIQUE,
    alert_id BIGINT,
    alert_ids TEXT NOT NULL,            -- JSON: every alert the message carries (a digest: many)
    kind TEXT NOT NULL,                 -- alert | update | digest | escalation
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    payload TEXT NOT NULL,              -- JSON: the message as it is sent
    state TEXT NOT NULL,                -- pending | sending | sent | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {real} NOT NULL,
    lease_until {real},
    last_error TEXT,
    created_at {real} NOT NULL,
    sent_at {real}
"""

_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (customer_id) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_customer ON alerts (customer_id, resolved_at);
CREATE INDEX IF NOT EXISTS alerts_owner_day ON alerts (owner, raised_day);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""

_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alerts (alert_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    + _ALERT_COLUMNS.replace("{real}", "REAL")
    + ");\nCREATE TABLE IF NOT EXISTS outbox (delivery_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    + _OUTBOX_COLUMNS.replace("{real}", "REAL")
    + ");\n"
    + _INDEXES
)
_POSTGRES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alerts (alert_id BIGSERIAL PRIMARY KEY,"
    + _ALERT_COLUMNS.replace("{real}", "DOUBLE PRECISION")
    + ");\nCREATE TABLE IF NOT EXISTS outbox (delivery_id BIGSERIAL PRIMARY KEY,"
    + _OUTBOX_COLUMNS.replace("{real}", "DOUBLE PRECISION")
    + ");\n"
    + _INDEXES
)
_IDS_PER_QUERY = 500


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


class Cursor:
    """A DB-API cursor that takes `?` marks on either engine and hands rows back as dicts."""

    def __init__(self, raw: Any, mark: str) -> None:
        self.raw = raw
        self.mark = mark

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        self.raw.execute(sql.replace("?", self.mark) if self.mark != "?" else sql, list(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.raw.executemany(sql.replace("?", self.mark) if self.mark != "?" else sql, rows)

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)

    def dicts(self) -> list[dict[str, Any]]:
        names = [column[0] for column in self.raw.description or []]
        return [_decode(dict(zip(names, row, strict=True))) for row in self.raw.fetchall()]

    def scalar(self) -> Any:
        row = self.raw.fetchone()
        return None if row is None else row[0]


class AlertStore:
    """`AlertStore.open(url)`: SQLite or PostgreSQL, the event store's URL by default."""

    url: str
    mark = "?"

    @staticmethod
    def open(url: str | None = None) -> AlertStore:
        url = url or default_url()
        if url.startswith(("postgresql://", "postgres://")):
            return PostgresAlertStore(url)
        if url.startswith("sqlite:///"):
            return SqliteAlertStore(Path(url.removeprefix("sqlite:///").split("?")[0]))
        raise ValueError(f"alert store URL must be sqlite:///PATH or postgresql://..., got {url!r}")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:  # pragma: no cover - per engine
        raise NotImplementedError
        yield

    def close(self) -> None:  # pragma: no cover - per engine
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        with self.transaction() as cursor:
            return cursor.execute(sql, params).dicts()

    # ------------------------------------------------------------------------------------- alerts

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM alerts WHERE alert_id = ?", [alert_id])
        return rows[0] if rows else None

    def alerts(
        self,
        *,
        owner: str | None = None,
        state: str | None = None,
        tier: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for column, value in (
            ("owner", owner),
            ("state", state),
            ("tier", tier),
            ("customer_id", customer_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.query(
            f"SELECT * FROM alerts{clause} ORDER BY priority, alert_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    def open_alerts(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each customer's unresolved alert (at most one), by customer id (the worklist shows them)."""
        with self.transaction() as cursor:
            return self.unresolved_by_customer(cursor, customer_ids)

    def unresolved_by_customer(self, cursor: Cursor, customer_ids: Sequence[str]) -> dict[str, dict]:
        return {row["customer_id"]: row for row in self._in(cursor, "state <> 'resolved'", customer_ids)}

    def last_resolved(self, cursor: Cursor, customer_ids: Sequence[str]) -> dict[str, float]:
        latest: dict[str, float] = {}
        for row in self._in(cursor, "state = 'resolved'", customer_ids):
            latest[row["customer_id"]] = max(latest.get(row["customer_id"], 0.0), row["resolved_at"] or 0.0)
        return latest

    def _in(self, cursor: Cursor, condition: str, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        ids = sorted(set(customer_ids))
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(part))
            rows += cursor.execute(
                f"SELECT * FROM alerts WHERE {condition} AND customer_id IN ({marks})", part
            ).dicts()
        return rows

    def singles_on_day(self, cursor: Cursor, owner: str, day: str) -> int:
        """Alerts this owner got one by one on a day: what counts against the daily cap."""
        return int(
            cursor.execute(
                "SELECT COUNT(*) FROM alerts WHERE owner = ? AND raised_day = ? AND delivery = 'single'",
                [owner, day],
            ).scalar()
        )

    def insert_alert(self, cursor: Cursor, fields: dict[str, Any]) -> int:
        names = list(fields)
        values = [_encode(fields[name]) for name in names]
        cursor.execute(
            f"INSERT INTO alerts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            "RETURNING alert_id",
            values,
        )
        return int(cursor.scalar())

    def update_alert(self, cursor: Cursor, alert_id: int, fields: dict[str, Any]) -> None:
        names = list(fields)
        cursor.execute(
            f"UPDATE alerts SET {', '.join(f'{name} = ?' for name in names)} WHERE alert_id = ?",
            [*(_encode(fields[name]) for name in names), alert_id],
        )

    def locked_alert(self, cursor: Cursor, alert_id: int) -> dict[str, Any] | None:
        """The alert, locked until the transaction ends (SQLite's write transaction already is)."""
        rows = cursor.execute(
            f"SELECT * FROM alerts WHERE alert_id = ?{self._for_update}", [alert_id]
        ).dicts()
        return rows[0] if rows else None

    _for_update = ""
    # Claiming due messages: on PostgreSQL a sender skips the rows another sender is claiming instead
    # of waiting for them (SQLite's BEGIN IMMEDIATE already lets one writer in at a time).
    claim_lock = ""

    def lock_for_raising(self, cursor: Cursor) -> None:
        """Serialize raising passes: a second pass (another host's daily run) waits for the first to
        commit, then sees its alerts. SQLite's BEGIN IMMEDIATE already does."""

    # ------------------------------------------------------------------------------------- outbox

    def enqueue(self, cursor: Cursor, messages: Sequence[dict[str, Any]], now: float) -> int:
        """Queue messages; one already queued under the same idempotency key is not queued again."""
        before = 0
        for message in messages:
            cursor.execute(
                "INSERT INTO outbox (idempotency_key, alert_id, alert_ids, kind, channel, recipient, "
                "payload, state, attempts, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                [
                    message["idempotency_key"],
                    message.get("alert_id"),
                    json.dumps(message["alert_ids"]),
                    message["kind"],
                    message["channel"],
                    message["recipient"],
                    json.dumps(message["payload"], ensure_ascii=False),
                    now,
                    now,
                ],
            )
            before += max(cursor.rowcount, 0)
        return before

    def deliveries(self, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        clause = " WHERE state = ?" if state else ""
        return self.query(
            f"SELECT * FROM outbox{clause} ORDER BY delivery_id LIMIT ?", [*([state] if state else []), limit]
        )

    def outbox_counts(self) -> dict[str, int]:
        rows = self.query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}


def _encode(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


# ---------------------------------------------------------------------------------------------- SQLite


class SqliteAlertStore(AlertStore):
    mark = "?"

    def __init__(self, path: Path, lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._connections = ThreadConnections(lambda: open_wal(self.path, self.lock_timeout))
        connection = self._connection()
        connection.executescript(_SQLITE_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        connection = self._connection()
        cursor = connection.cursor()
        # IMMEDIATE: take the write lock first, so a read-then-write (a transition) cannot interleave.
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield Cursor(cursor, "?")
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    def close(self) -> None:
        self._connections.close()


# ------------------------------------------------------------------------------------------ PostgreSQL


class PostgresAlertStore(AlertStore):
    mark = "%s"
    _for_update = " FOR UPDATE"
    claim_lock = " FOR UPDATE SKIP LOCKED"

    def lock_for_raising(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(727003)")

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._connections = ThreadConnections(lambda: psycopg.connect(url))
        with self.transaction() as cursor:
            # Replicas creating the tables at once: one waits for the other.
            cursor.execute("SELECT pg_advisory_xact_lock(727002)")
            cursor.raw.execute(_POSTGRES_SCHEMA)

    def _connection(self) -> Any:
        return self._connections.get()

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor:
            yield Cursor(cursor, "%s")

    def close(self) -> None:
        self._connections.close()
