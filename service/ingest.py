"""POST /events and POST /customers: the CRM's raw records into the event store.

A batch is checked whole and stored in one transaction: the answer says how many events were new and
how many were already there (same `event_id`), or names every bad row and field and stores nothing.
A 200 is sent only after the transaction commits, so a service killed mid-request loses nothing it
acknowledged; the CRM resends what got no answer, and the event ids make that safe.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import msgspec
import pandas as pd
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from churnguard.inputs import MAX_REPORTED_ERRORS, InputError
from churnguard.store.events import STORE_ERRORS, EventStore
from churnguard.store.intake import check_customers, check_events
from service.payloads import CSV_TYPES, JSON_TYPE, PARQUET_TYPES, Rejected, json_response
from service.reload import ModelHolder

log = logging.getLogger("service.ingest")
router = APIRouter()


@dataclass
class IngestState:
    store: EventStore | None = None
    holder: ModelHolder | None = None
    max_events: int = 100_000


INGEST = IngestState()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _decode(body: bytes) -> Any:
    if not body:
        raise Rejected(400, "the request body is empty")
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from None


def events_frame(body: bytes, media: str) -> tuple[pd.DataFrame, bool]:
    """The events of a request body as a frame, and whether values may be numbers written as text."""
    if media in {JSON_TYPE, ""}:
        payload = _decode(body)
        events = payload.get("events") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or set(payload) - {"events"} or not isinstance(events, list):
            raise Rejected(400, 'the body must be a JSON object {"events": [{...}, ...]}')
        bad = [row for row, event in enumerate(events) if not isinstance(event, dict)]
        if bad:
            raise Rejected(400, f"each event must be a JSON object; rows {bad[:10]} are not")
        if not events:
            raise Rejected(400, "invalid input: events: must hold at least one event")
        return pd.DataFrame.from_records(events), False
    if media in CSV_TYPES:
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            raise Rejected(400, f"not a readable CSV file: {exc}") from None
        return frame, True
    if media in PARQUET_TYPES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pa.BufferReader(body)).to_pandas(), False
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise Rejected(400, f"not a readable Parquet file: {exc}") from None
    raise Rejected(415, f"send application/json, text/csv or application/vnd.apache.parquet, not {media}")


def _nothing_stored(exc: InputError, what: str) -> Rejected:
    first = exc.errors[0]
    where = f"row {first.row}, " if first.row is not None else ""
    return Rejected(
        400,
        f"{exc.total} problem(s) in the {what}; nothing was stored: {where}{first.field}: {first.message}",
        exc.errors[:MAX_REPORTED_ERRORS],
        exc.total,
    )


async def _answer(work: Callable[[], dict[str, object]]) -> Response:
    """Run a store write off the event loop; a 4xx names what is wrong, a 503 says the store is down."""
    try:
        answer = await anyio.to_thread.run_sync(work)
    except Rejected as rejected:
        return rejected.response()
    except STORE_ERRORS as exc:
        log.error("event store write failed, answering 503: %s", exc)
        return json_response(
            {"error": "the event store is unavailable; nothing was stored"}, 503, {"Retry-After": "5"}
        )
    return json_response(answer)


def _known_types() -> set[str] | None:
    holder = INGEST.holder
    live = holder.current.live if holder is not None else None
    return live.event_types if live is not None else None


@router.post("/events", summary="Store raw CRM events (JSON, CSV or Parquet)", response_model=dict[str, Any])
async def post_events(request: Request) -> Response:
    """`{"events": [{"event_id", "customer_id", "timestamp", "type", "value"}, ...]}`, or the same
    columns as a CSV or Parquet body. An event_id already stored is not stored again; event types the
    served model does not read are stored and counted in `unknown_types`."""
    store = INGEST.store
    if store is None:
        return json_response({"error": "the event store is turned off (event_store.enabled)"}, 409)
    media = _media_type(request)
    body = await request.body()

    def ingest() -> dict[str, object]:
        frame, text_numbers = events_frame(body, media)
        if len(frame) > INGEST.max_events:
            raise Rejected(
                413,
                f"the batch holds {len(frame):,} events; the limit is {INGEST.max_events:,} per request "
                "(event_store.max_events): split it, or load files with `churnguard ingest`",
            )
        try:
            batch = check_events(frame, _known_types(), text_numbers=text_numbers)
        except InputError as exc:
            raise _nothing_stored(exc, "events") from None
        return {**store.add_events(batch).as_dict(), "stored_whole": True}

    return await _answer(ingest)


@router.post("/customers", summary="Insert or update customers", response_model=dict[str, Any])
async def post_customers(request: Request) -> Response:
    """`{"customers": [{"customer_id": "C1", "segment": "SMB", "plan": "pro", "account_owner": "Ana",
    "contract_value": 1200, "signup_date": "2024-03-01", "churn_date": null, ...}, ...]}`. Attributes
    given replace the stored ones; attributes not given are kept; null clears one."""
    store = INGEST.store
    if store is None:
        return json_response({"error": "the event store is turned off (event_store.enabled)"}, 409)
    body = await request.body()

    def upsert() -> dict[str, object]:
        payload = _decode(body)
        records = payload.get("customers") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or set(payload) - {"customers"} or not isinstance(records, list):
            raise Rejected(400, 'the body must be a JSON object {"customers": [{"customer_id": ...}, ...]}')
        try:
            batch = check_customers(records)
        except InputError as exc:
            raise _nothing_stored(exc, "customers") from None
        return {"upserted": store.upsert_customers(batch), "stored_whole": True}

    return await _answer(upsert)
