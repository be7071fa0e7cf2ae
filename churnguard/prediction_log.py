"""The durable prediction log: every scored customer, appended before the answer goes out.

Default store: SQLite in WAL mode at `<state>/predictions.db`; any `postgresql://` URL instead
(`CHURNGUARD_PREDICTION_LOG`, or the service's `prediction_log.url`). One entry per scored customer:
timestamp, request id, model version, customer id, the inputs as scored (JSON), and the outputs
(probability, health score, tier, reasons JSON, group sub-scores JSON, input flags JSON).

How an entry is stored depends on the request's size, not on what it says:
- requests with fewer than `batch_rows` customers: one `predictions` row per customer, inputs as
  scored;
- larger batches: one `prediction_batches` record per request holding the inputs and the outputs as
  two payloads. The service hands over the request and response bodies it already has (JSON, Parquet
  or CSV in; JSON or Parquet out), so logging ten thousand customers costs one blob write instead of
  ten thousand row inserts; other callers get Arrow inputs and JSON outputs. `read_predictions`
  returns both kinds as one row per customer; `compact()` rewrites batch records as `predictions`
  rows, in the same transaction that deletes them, for SQL-only readers.

Durability: `append` returns after the transaction commits. In WAL mode with `synchronous=NORMAL`
(default) a commit survives the server being killed (SIGKILL) but not a power cut or an OS crash;
`synchronous=FULL` also survives those, at the price of an fsync per commit (about 4 ms here).
PostgreSQL commits with its own `synchronous_commit` setting (on by default).

When the log cannot be written (disk full, file locked by another writer for longer than
`lock_timeout`, I/O error), `append` raises and nothing is half-written: the transaction rolls back.
The service answers such a request 503 and acknowledges nothing it did not log; there is no
in-memory buffer that a crash could lose. `sqlite:///PATH?lock_timeout=SECONDS` (default 30) bounds
how long a write waits for a lock held by another process.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic_core import from_json, to_json

from churnguard.settings import state_dir

log = logging.getLogger(__name__)

LOG_ENV = "CHURNGUARD_PREDICTION_LOG"
DEFAULT_BATCH_ROWS = 1_000
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a write waits for another process's lock before failing
_HISTORY_CHUNK = 500  # customer ids per query (SQL parameter limits)
_HISTORY_CACHE = 512  # decoded batch records kept for score-history reads
_FEW_CUSTOMERS = 64  # up to this many, score history is looked up customer by customer
MISSING_CATEGORY = "__missing__"
OUTPUT_COLUMNS = (
    "logged_at",
    "request_id",
    "model_version",
    "customer_id",
    "churn_probability",
    "health_score",
    "alert_tier",
    "reasons",
    "group_scores",
    "flags",
)

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    logged_at TEXT NOT NULL,          -- ISO 8601, UTC, microseconds
    request_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    inputs TEXT NOT NULL,             -- JSON object: feature -> value as scored (null = missing)
    churn_probability REAL NOT NULL,
    health_score INTEGER NOT NULL,
    alert_tier TEXT NOT NULL,
    reasons TEXT,                     -- JSON list, null when the request skipped explanations
    group_scores TEXT,                -- JSON object group -> 0-100, null likewise
    flags TEXT                        -- JSON list of input flags, null when none
);
CREATE INDEX IF NOT EXISTS predictions_logged_at ON predictions (logged_at);
-- Covering: a customer's oldest score in a window is read from the index alone (score history).
CREATE INDEX IF NOT EXISTS predictions_customer_health ON predictions (customer_id, logged_at, health_score);
DROP INDEX IF EXISTS predictions_customer;
CREATE TABLE IF NOT EXISTS prediction_batches (
    id INTEGER PRIMARY KEY,
    logged_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    customers INTEGER NOT NULL,
    inputs_format TEXT NOT NULL,      -- json ({"customers": [...]}), parquet, csv or arrow (+lz4: compressed)
    inputs BLOB NOT NULL,
    outputs_format TEXT NOT NULL,     -- json ({"results": [...]}, the prediction contract) or parquet
    outputs BLOB NOT NULL             -- +lz4 payloads: 8-byte little-endian size, then an LZ4 frame
);
CREATE INDEX IF NOT EXISTS prediction_batches_logged_at ON prediction_batches (logged_at);
"""

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id BIGSERIAL PRIMARY KEY,
    logged_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    inputs TEXT NOT NULL,
    churn_probability DOUBLE PRECISION NOT NULL,
    health_score INTEGER NOT NULL,
    alert_tier TEXT NOT NULL,
    reasons TEXT,
    group_scores TEXT,
    flags TEXT
);
CREATE INDEX IF NOT EXISTS predictions_logged_at ON predictions (logged_at);
-- Covering: a customer's oldest score in a window is read from the index alone (score history).
CREATE INDEX IF NOT EXISTS predictions_customer_health ON predictions (customer_id, logged_at, health_score);
DROP INDEX IF EXISTS predictions_customer;
CREATE TABLE IF NOT EXISTS prediction_batches (
    id BIGSERIAL PRIMARY KEY,
    logged_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    customers INTEGER NOT NULL,
    inputs_format TEXT NOT NULL,
    inputs BYTEA NOT NULL,
    outputs_format TEXT NOT NULL,
    outputs BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS prediction_batches_logged_at ON prediction_batches (logged_at);
"""

_ROW_INSERT = (
    "INSERT INTO predictions (logged_at, request_id, model_version, customer_id, inputs, churn_probability, "
    "health_score, alert_tier, reasons, group_scores, flags) VALUES ({})"
)
_BATCH_INSERT = (
    "INSERT INTO prediction_batches (logged_at, request_id, model_version, customers, inputs_format, inputs, "
    "outputs_format, outputs) VALUES ({})"
)
_BATCH_SELECT = "SELECT logged_at, request_id, model_version, inputs_format, inputs, outputs_format, outputs"

PayloadFormat = Literal["json", "parquet", "csv", "arrow"]
_NEVER = "~"  # sorts after any ISO timestamp: no score seen yet


class _LoggedHealth(msgspec.Struct):
    customer_id: str | int
    health_score: float


class _LoggedResults(msgspec.Struct):
    results: list[_LoggedHealth]


class _HeldHealth:
    """One batch record's health scores by customer: a dict for a few lookups, columns for many."""

    def __init__(self, by_id: dict[str, float]) -> None:
        self.by_id = by_id

    @functools.cached_property
    def index(self) -> pd.Index:
        return pd.Index(list(self.by_id), dtype=object)

    @functools.cached_property
    def scores(self) -> np.ndarray:
        return np.fromiter(self.by_id.values(), dtype=float, count=len(self.by_id))


# Reads only what score history needs from a batch record's JSON outputs (the rest is skipped in C).
_HEALTH_DECODER = msgspec.json.Decoder(_LoggedResults)


@dataclass(frozen=True)
class Exchange:
    """A batch request and its answer as the service already holds them (bytes plus their format)."""

    inputs_format: PayloadFormat
    inputs: bytes
    outputs_format: PayloadFormat
    outputs: bytes


class ScoredRows(Protocol):
    """What the log needs from a scored batch (churnguard.predict.ScoredBatch)."""

    model_version: str
    customer_ids: list[str]
    probability: np.ndarray
    health: np.ndarray
    tier: np.ndarray
    flags: list[list[dict]]
    feature_names: list[str]
    features: pd.DataFrame | None
    reasons: list[list[dict]] | None
    group_names: list[str]
    group_scores: np.ndarray | None

    def __len__(self) -> int: ...

    def input_records(self) -> list[dict]: ...

    def results(self) -> list[dict]: ...


def default_url() -> str:
    return os.environ.get(LOG_ENV) or f"sqlite:///{state_dir() / 'predictions.db'}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _since_text(since: datetime | None) -> str:
    if since is None:
        return ""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------- encoding


def _json_or_none(value: object) -> str | None:
    return to_json(value).decode() if value else None


def _row_entries(batch: ScoredRows, request_id: str, logged_at: str) -> list[tuple]:
    inputs = batch.input_records()
    reasons = batch.reasons or [None] * len(batch)
    if batch.group_scores is not None:
        groups = [dict(zip(batch.group_names, row, strict=True)) for row in batch.group_scores.tolist()]
    else:
        groups = [None] * len(batch)
    return [
        (
            logged_at,
            request_id,
            batch.model_version,
            customer_id,
            to_json(record).decode(),
            probability,
            health,
            tier,
            _json_or_none(reason),
            _json_or_none(group),
            _json_or_none(flags),
        )
        for customer_id, record, probability, health, tier, reason, group, flags in zip(
            batch.customer_ids,
            inputs,
            batch.probability.tolist(),
            batch.health.tolist(),
            batch.tier.tolist(),
            reasons,
            groups,
            batch.flags,
            strict=True,
        )
    ]


def _exchange(batch: ScoredRows) -> Exchange:
    """Arrow inputs (as scored) and JSON outputs (the prediction contract) for callers without bodies."""
    columns: dict[str, object] = {"customer_id": pa.array(batch.customer_ids, pa.string())}
    features = batch.features if batch.features is not None else pd.DataFrame(batch.input_records())
    for name in batch.feature_names:
        values = features[name]
        if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
            text = values.to_numpy(dtype=object)
            columns[name] = pa.array(np.where(text == MISSING_CATEGORY, None, text), pa.string())
        else:
            columns[name] = pa.array(values.to_numpy(dtype=float), pa.float64(), from_pandas=True)
    table = pa.table(columns)
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    outputs = to_json({"results": batch.results()})  # type: ignore[attr-defined]
    return Exchange("arrow", sink.getvalue(), "json", outputs)


def _read_inputs(kind: str, data: bytes) -> pd.DataFrame:
    if kind == "json":
        return pd.DataFrame.from_records(from_json(data)["customers"])
    if kind == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    if kind == "csv":
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    return ipc.open_stream(pa.BufferReader(data)).read_all().to_pandas()


def _json_column(values: list) -> list[str | None]:
    return [to_json(value).decode() if value else None for value in values]


def _read_outputs(kind: str, data: bytes) -> pd.DataFrame:
    if kind == "json":
        results = from_json(data)["results"]
        return pd.DataFrame(
            {
                "customer_id": [r["customer_id"] for r in results],
                "churn_probability": [r["churn_probability"] for r in results],
                "health_score": [r["health_score"] for r in results],
                "alert_tier": [r["alert_tier"] for r in results],
                "reasons": _json_column([r.get("reasons") for r in results]),
                "group_scores": _json_column([r.get("group_scores") for r in results]),
                "flags": _json_column([r.get("flags") for r in results]),
            }
        )
    frame = pd.read_parquet(io.BytesIO(data))
    groups = [c for c in frame.columns if c.startswith("group_score_")]
    if groups:
        names = [c[len("group_score_") :] for c in groups]
        scores = frame[groups].to_numpy().tolist()
        frame["group_scores"] = [to_json(dict(zip(names, row, strict=True))).decode() for row in scores]
    else:
        frame["group_scores"] = None
    if "reasons" not in frame.columns:
        frame["reasons"] = None
    return frame[
        ["customer_id", "churn_probability", "health_score", "alert_tier", "reasons", "group_scores", "flags"]
    ]


COMPRESSED_KINDS = frozenset({"json", "csv"})  # payloads stored LZ4-compressed


def pack_payload(kind: str, data: bytes) -> tuple[str, bytes]:
    """Text payloads are LZ4-compressed (a fraction of the bytes to write, at memory speed); others,
    packed ones included, pass as they are. LZ4 releases the GIL: callers may pack in a thread."""
    if kind not in COMPRESSED_KINDS:
        return kind, data
    return f"{kind}+lz4", len(data).to_bytes(8, "little") + pa.compress(data, codec="lz4", asbytes=True)


def _unpack(kind: str, data: bytes) -> tuple[str, bytes]:
    if not kind.endswith("+lz4"):
        return kind, data
    size = int.from_bytes(data[:8], "little")
    return kind[: -len("+lz4")], pa.decompress(data[8:], decompressed_size=size, codec="lz4", asbytes=True)


def _expand_batch(row: Sequence[object]) -> pd.DataFrame:
    """One prediction_batches record (as _BATCH_SELECT) -> one row per customer."""
    logged_at, request_id, model_version, inputs_format, inputs, outputs_format, outputs = row
    frame = _read_outputs(*_unpack(str(outputs_format), bytes(outputs)))  # type: ignore[arg-type]
    features = _read_inputs(*_unpack(str(inputs_format), bytes(inputs)))  # type: ignore[arg-type]
    features = features.drop(columns=[c for c in ("customer_id",) if c in features.columns])
    frame.insert(0, "logged_at", logged_at)
    frame.insert(1, "request_id", request_id)
    frame.insert(2, "model_version", model_version)
    return pd.concat([frame, features.set_axis(frame.index)], axis=1)


def _expand_rows(rows: Sequence[tuple]) -> pd.DataFrame:
    """predictions rows (the OUTPUT_COLUMNS order plus inputs last) -> one column per input feature."""
    frame = pd.DataFrame.from_records(
        [row[:-1] for row in rows], columns=list(OUTPUT_COLUMNS), coerce_float=True
    )
    inputs = pd.DataFrame.from_records([from_json(row[-1]) for row in rows], index=frame.index)
    return pd.concat([frame, inputs], axis=1)


def _finish(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    # Columns with no value in one part (no reasons, no flags) are left out of that part for the
    # concatenation, as pandas does today (it warns it will stop), then every column is put back.
    columns = list(dict.fromkeys(column for frame in frames for column in frame.columns))
    frames = [frame.dropna(axis=1, how="all") for frame in frames]
    frame = pd.concat(frames, ignore_index=True, sort=False).reindex(columns=columns)
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601")
    frame = frame.sort_values("logged_at", kind="stable").reset_index(drop=True)
    head = [c for c in OUTPUT_COLUMNS if c in frame.columns]
    return frame[head + [c for c in frame.columns if c not in OUTPUT_COLUMNS]]


# ------------------------------------------------------------------------------------------ the logs


class PredictionLog:
    """Appends scored batches durably and reads them back as one row per customer."""

    placeholder = "?"

    def __init__(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.batch_rows = batch_rows
        self._lock = threading.Lock()
        self._health_cache: dict[tuple, _HeldHealth] = {}  # see oldest_health

    @staticmethod
    def open(
        url: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> PredictionLog:
        url = url or default_url()
        if url.startswith(("postgresql://", "postgres://")):
            return PostgresPredictionLog(url, batch_rows)
        if url.startswith("sqlite:///"):
            path, _, query = url[len("sqlite:///") :].partition("?")
            return SqlitePredictionLog(Path(path), batch_rows, synchronous, _lock_timeout(url, query))
        if "://" in url:
            raise ValueError(f"prediction log URL {url!r}: use sqlite:///PATH or postgresql://...")
        return SqlitePredictionLog(Path(url), batch_rows, synchronous)

    # Subclasses provide a DB-API connection in `_transaction` and `_query`.
    @contextmanager
    def _transaction(self) -> Iterator[object]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _binary(self, data: bytes) -> object:
        return data

    def append(
        self,
        batch: ScoredRows,
        request_id: str,
        exchange: Exchange | None = None,
        *,
        unless_logged_since: str | None = None,
    ) -> int:
        """Write the batch and commit; returns the number of customers logged.

        `exchange`: the request and response bodies of a large batch, stored as they are.
        `unless_logged_since` (ISO time): log nothing (return 0) when `request_id` was logged since
        then, checked in the writing transaction after taking a lock on the id, so two processes
        appending the same id at once (a daily pass run on two hosts) log it once."""
        if not len(batch):
            return 0
        if unless_logged_since is not None:
            with self._transaction() as cursor:
                self._lock_request(cursor, request_id)
                mark = self.placeholder
                where = f"WHERE logged_at >= {mark} AND request_id = {mark}"
                cursor.execute(
                    f"SELECT 1 FROM predictions {where} UNION ALL SELECT 1 FROM prediction_batches {where} "
                    "LIMIT 1",
                    [unless_logged_since, request_id, unless_logged_since, request_id],
                )
                if cursor.fetchone() is not None:
                    return 0
                sql, entries = self._entries(batch, request_id, exchange)
                cursor.executemany(sql, entries)
            return len(batch)
        sql, entries = self._entries(batch, request_id, exchange)
        if len(entries) == 1:
            self._write_one(sql, entries[0])
        else:
            with self._transaction() as cursor:
                cursor.executemany(sql, entries)
        return len(batch)

    def _entries(
        self, batch: ScoredRows, request_id: str, exchange: Exchange | None
    ) -> tuple[str, list[Sequence[object]]]:
        """The insert and its rows: one per customer, or one columnar record for a large batch."""
        logged_at = now_iso()
        if len(batch) < self.batch_rows:
            entries = _row_entries(batch, request_id, logged_at)
            return _ROW_INSERT.format(", ".join([self.placeholder] * 11)), entries
        exchange = exchange or _exchange(batch)
        inputs_format, inputs = pack_payload(exchange.inputs_format, exchange.inputs)
        outputs_format, outputs = pack_payload(exchange.outputs_format, exchange.outputs)
        params = (
            logged_at,
            request_id,
            batch.model_version,
            len(batch),
            inputs_format,
            self._binary(inputs),
            outputs_format,
            self._binary(outputs),
        )
        return _BATCH_INSERT.format(", ".join([self.placeholder] * 8)), [params]

    def _lock_request(self, cursor: Any, request_id: str) -> None:
        """Held until the transaction ends. SQLite's BEGIN IMMEDIATE already lets one writer in."""

    def _write_one(self, sql: str, params: Sequence[object]) -> None:
        with self._transaction() as cursor:
            cursor.execute(sql, params)

    def logged_requests(self, prefix: str) -> set[str]:
        """Request ids starting with `prefix` that are in the log (a daily pass's finished chunks)."""
        # LIKE reads "_" and "%" in the prefix as wildcards: a superset, narrowed by startswith below.
        mark, pattern = self.placeholder, prefix + "%"
        rows = self._query(
            f"SELECT DISTINCT request_id FROM predictions WHERE request_id LIKE {mark} "
            f"UNION SELECT request_id FROM prediction_batches WHERE request_id LIKE {mark}",
            [pattern, pattern],
        )
        return {str(row[0]) for row in rows if str(row[0]).startswith(prefix)}

    def read(self, since: datetime | None = None) -> pd.DataFrame:
        """One row per logged customer since `since` (all when None), oldest first.

        Columns: logged_at (UTC), request_id, model_version, customer_id, churn_probability,
        health_score, alert_tier, reasons / group_scores / flags (JSON text or None), then one
        column per input feature (as scored for rows; as sent for batch records)."""
        where, params = (
            ("WHERE logged_at >= " + self.placeholder, [_since_text(since)]) if since else ("", [])
        )
        rows = self._query(
            f"SELECT {', '.join(OUTPUT_COLUMNS)}, inputs FROM predictions {where} ORDER BY id", params
        )
        frames = [_expand_rows(rows)] if rows else []
        batches = self._query(f"{_BATCH_SELECT} FROM prediction_batches {where} ORDER BY id", params)
        frames.extend(_expand_batch(row) for row in batches)
        return _finish(frames)

    # Each customer's oldest logged row since a time: SQLite takes a bare column from the row that
    # MIN() picks, and the (customer_id, logged_at, health_score) index answers it without the table.
    _OLDEST_ROWS = (
        "SELECT customer_id, MIN(logged_at), health_score FROM predictions "
        "WHERE logged_at >= {p} AND customer_id IN ({ids}) GROUP BY customer_id"
    )

    def oldest_health(self, customer_ids: Sequence[str], since: datetime) -> np.ndarray:
        """Per customer (in the order given), the oldest health score logged since `since`; NaN when
        none was.

        For score-history rules, on the prediction path: rows give each customer's oldest row through
        the (customer_id, logged_at, health_score) index, or for many customers from the window's rows
        when those are fewer; batch records are read oldest first (only their outputs)
        until every customer is found, and none at or after a time by which every customer already has
        a row; on a tie the row wins. A decoded batch record is cached by (id, time) as its customers'
        health: it does not change until `compact()` moves it into rows (with the same time). A few
        customers (a single request) are looked up one by one; many, column-wise."""
        ids = list(map(str, customer_ids))
        start = _since_text(since)
        if len(ids) <= _FEW_CUSTOMERS:
            return self._oldest_few(ids, start)
        asked = pd.Index(ids, dtype=object)
        wanted = asked.unique()
        times = np.full(len(wanted), _NEVER, dtype=object)
        health = np.full(len(wanted), np.nan)
        for customers, logged, scores in self._oldest_rows_of_many(wanted.tolist(), start):
            positions = wanted.get_indexer(customers)
            times[positions] = logged
            health[positions] = scores
        complete = len(wanted) > 0 and not np.isnan(health).any()
        remaining = np.arange(len(wanted))
        for key in self._records_since(start, str(times.max()) if complete else None):
            if not remaining.size:
                break  # a later record cannot hold anyone's oldest score
            held = self._batch_health(tuple(key))
            positions = held.index.get_indexer(wanted[remaining])
            hit = positions >= 0
            logged_at = str(key[1])
            older = hit & (times[remaining] > logged_at)
            times[remaining[older]] = logged_at
            health[remaining[older]] = held.scores[positions[older]]
            remaining = remaining[~hit]
        return health[wanted.get_indexer(asked)] if len(wanted) != len(asked) else health

    def _oldest_few(self, ids: list[str], start: str) -> np.ndarray:
        """`oldest_health` for a few customers: plain dict lookups, no column set-up."""
        wanted = list(dict.fromkeys(ids))
        oldest: dict[str, tuple[str, float]] = {}
        for customers, logged, scores in self._oldest_rows(wanted, start):
            oldest.update(zip(customers, zip(logged, scores, strict=True), strict=True))
        complete = bool(wanted) and len(oldest) == len(wanted)
        remaining = wanted
        for key in self._records_since(start, max(t for t, _ in oldest.values()) if complete else None):
            if not remaining:
                break  # a later record cannot hold anyone's oldest score
            held = self._batch_health(tuple(key)).by_id
            logged_at = str(key[1])
            for customer in remaining:
                if customer in held:
                    seen = oldest.get(customer)
                    if seen is None or logged_at < seen[0]:
                        oldest[customer] = (logged_at, held[customer])
            remaining = [c for c in remaining if c not in held]
        return np.array([oldest[c][1] if c in oldest else np.nan for c in ids], dtype=float)

    def _oldest_rows_of_many(
        self, wanted: list[str], start: str
    ) -> Iterator[tuple[list[str], list[str], list]]:
        """`_oldest_rows` reading whichever side is smaller: the rows logged since `start` when there
        are no more of them than customers wanted (none at all when only batches were scored), else
        each customer's rows through the index."""
        p = self.placeholder
        in_window = self._query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM predictions WHERE logged_at >= {p} "
            f"LIMIT {len(wanted) + 1}) AS window_rows",
            [start],
        )[0][0]
        if in_window > len(wanted):
            yield from self._oldest_rows(wanted, start)
        elif in_window:
            yield from self._oldest_in_window(wanted, start)

    def _oldest_rows(self, wanted: list[str], start: str) -> Iterator[tuple[list[str], list[str], list]]:
        """(customers, times, health) of the oldest row of each customer found, chunk by chunk."""
        for offset in range(0, len(wanted), _HISTORY_CHUNK):
            chunk = wanted[offset : offset + _HISTORY_CHUNK]
            sql = self._OLDEST_ROWS.format(p=self.placeholder, ids=", ".join([self.placeholder] * len(chunk)))
            found = self._query(sql, [start, *chunk])
            if found:
                customers, logged, scores = zip(*found, strict=True)
                yield [str(c) for c in customers], [str(t) for t in logged], [float(h) for h in scores]

    def _oldest_in_window(self, wanted: list[str], start: str) -> Iterator[tuple[list[str], list[str], list]]:
        rows = self._query(
            "SELECT customer_id, logged_at, health_score FROM predictions "
            f"WHERE logged_at >= {self.placeholder}",
            [start],
        )
        frame = pd.DataFrame(rows, columns=["customer_id", "logged_at", "health_score"])
        frame = frame[frame["customer_id"].isin(wanted)].sort_values("logged_at", kind="stable")
        oldest = frame.drop_duplicates("customer_id")
        if len(oldest):
            yield (
                oldest["customer_id"].astype(str).tolist(),
                oldest["logged_at"].astype(str).tolist(),
                oldest["health_score"].astype(float).tolist(),
            )

    def _records_since(self, start: str, before: str | None) -> list[tuple]:
        """(id, time) of the batch records logged since `start` (and before `before`), oldest first."""
        where, params = f"logged_at >= {self.placeholder}", [start]
        if before is not None:  # every customer has a row by then: a record is older only before it
            where += f" AND logged_at < {self.placeholder}"
            params.append(before)
        return self._query(
            f"SELECT id, logged_at FROM prediction_batches WHERE {where} ORDER BY logged_at, id", params
        )

    def _batch_health(self, key: tuple) -> _HeldHealth:
        """The customers' health in one batch record (the last score of a repeated id), cached."""
        cache = self._health_cache
        found = cache.get(key)
        if found is None:
            kind, data = self._query(
                f"SELECT outputs_format, outputs FROM prediction_batches WHERE id = {self.placeholder}",
                [key[0]],
            )[0]
            kind, payload = _unpack(str(kind), bytes(data))
            if kind == "json":
                results = _HEALTH_DECODER.decode(payload).results
                ids, scores = [str(r.customer_id) for r in results], [r.health_score for r in results]
            else:
                frame = pd.read_parquet(io.BytesIO(payload), columns=["customer_id", "health_score"])
                ids, scores = frame["customer_id"].astype(str).tolist(), frame["health_score"].tolist()
            found = _HeldHealth(dict(zip(ids, map(float, scores), strict=True)))
            with self._lock:  # workers' threads share the cache
                if len(cache) >= _HISTORY_CACHE:
                    cache.pop(next(iter(cache)))
                cache[key] = found
        return found

    def count(self) -> int:
        """Customers logged (rows plus customers held in batch records)."""
        rows = self._query("SELECT COUNT(*) FROM predictions", [])[0][0]
        held = self._query("SELECT COALESCE(SUM(customers), 0) FROM prediction_batches", [])[0][0]
        return int(rows) + int(held)

    def compact(self) -> int:
        """Rewrite batch records as `predictions` rows (atomically per batch); returns customers moved."""
        moved = 0
        ids = [row[0] for row in self._query("SELECT id FROM prediction_batches ORDER BY id", [])]
        for batch_id in ids:
            found = self._query(
                f"{_BATCH_SELECT} FROM prediction_batches WHERE id = {self.placeholder}", [batch_id]
            )
            if not found:
                continue
            frame = _expand_batch(found[0])
            features = [c for c in frame.columns if c not in OUTPUT_COLUMNS]
            inputs = frame[features].astype(object).where(frame[features].notna(), None).to_dict("records")
            entries = [
                (
                    r.logged_at,
                    r.request_id,
                    r.model_version,
                    r.customer_id,
                    to_json(record).decode(),
                    float(r.churn_probability),
                    int(r.health_score),
                    r.alert_tier,
                    r.reasons,
                    r.group_scores,
                    r.flags,
                )
                for r, record in zip(frame.itertuples(index=False), inputs, strict=True)
            ]
            with self._transaction() as cursor:
                cursor.executemany(_ROW_INSERT.format(", ".join([self.placeholder] * 11)), entries)
                cursor.execute(f"DELETE FROM prediction_batches WHERE id = {self.placeholder}", (batch_id,))
            moved += len(entries)
        return moved

    def close(self) -> None:  # pragma: no cover - overridden
        pass


def _lock_timeout(url: str, query: str) -> float:
    options = urllib.parse.parse_qs(query, strict_parsing=bool(query))
    unknown = set(options) - {"lock_timeout"}
    if unknown:
        raise ValueError(f"prediction log URL {url!r}: unknown option(s) {sorted(unknown)}; use lock_timeout")
    try:
        seconds = float(options.get("lock_timeout", [DEFAULT_LOCK_TIMEOUT])[-1])
    except ValueError:
        raise ValueError(f"prediction log URL {url!r}: lock_timeout must be a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"prediction log URL {url!r}: lock_timeout must be between 0 and 3600 seconds")
    return seconds


class SqlitePredictionLog(PredictionLog):
    def __init__(
        self,
        path: Path,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        synchronous: str = "normal",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        super().__init__(batch_rows)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per log object, guarded by a lock; processes share the file through SQLite's
        # own locking (WAL lets readers go on while one writer commits).
        self._connection = sqlite3.connect(
            self.path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._connection.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        with self._transaction() as cursor:
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    cursor.execute(statement)

    def _write_one(self, sql: str, params: Sequence[object]) -> None:
        # One statement in autocommit mode is its own transaction: a third of the round trips.
        with self._lock:
            self._connection.execute(sql, params)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (disk full, I/O error): do not mask the cause.
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with self._lock:
            return self._connection.execute(sql, list(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class PostgresPredictionLog(PredictionLog):
    """PostgreSQL through psycopg 3 (in the lock): one connection per worker, reopened when it breaks."""

    placeholder = "%s"
    _OLDEST_ROWS = (
        "SELECT DISTINCT ON (customer_id) customer_id, logged_at, health_score FROM predictions "
        "WHERE logged_at >= {p} AND customer_id IN ({ids}) ORDER BY customer_id, logged_at"
    )

    def __init__(self, url: str, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        super().__init__(batch_rows)
        try:
            import psycopg
        except ImportError as exc:
            raise ValueError(
                "a PostgreSQL prediction log needs the psycopg package (psycopg[binary])"
            ) from exc
        self._url = url
        self._connection = psycopg.connect(url, autocommit=False)
        with self._transaction() as cursor:
            for statement in _POSTGRES_SCHEMA.split(";"):
                if statement.strip():
                    cursor.execute(statement)

    def _lock_request(self, cursor: Any, request_id: str) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [request_id])

    def _live(self) -> Any:
        """The connection, opened again when the last one broke (the server restarted or dropped it):
        the request that met the broken one got a 503, the next ones are logged again."""
        if self._connection.closed:
            import psycopg

            self._connection = psycopg.connect(self._url, autocommit=False)
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[object]:
        with self._lock:
            connection = self._live()
            with connection.transaction(), connection.cursor() as cursor:
                yield cursor

    def _query(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with self._lock:
            connection = self._live()
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute(sql, list(params))
                return cursor.fetchall()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def read_predictions(since: datetime | None = None, url: str | None = None) -> pd.DataFrame:
    """The logged predictions since `since` (UTC if naive), one row per scored customer.

    Reads `url`, else `CHURNGUARD_PREDICTION_LOG`, else `<state>/predictions.db`."""
    prediction_log = PredictionLog.open(url)
    try:
        return prediction_log.read(since)
    finally:
        prediction_log.close()
