"""The alert API: GET /alerts, GET /alerts/{id}, POST /alerts/{id}/acknowledge | start | resolve.

Under the same API keys as every route (service.security). The alerts live in the event store's
database (`event_store.url` of configs/service.yaml, else `CHURNGUARD_EVENT_STORE`, else
<state>/events.db). A transition that is not allowed is a 409, an unknown alert a 404, bad input a
400 naming the field; resolving writes the outcome into the outcomes store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
import msgspec
from fastapi import APIRouter
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from alerts.lifecycle import (
    STATES,
    BadResolution,
    TransitionNotAllowed,
    UnknownAlert,
    check_resolution,
    transition,
)
from alerts.store import STORE_ERRORS, AlertStore
from churnguard.settings import state_dir
from churnguard.tiers import TIERS
from service.payloads import Rejected, json_response

log = logging.getLogger("service.alerts")


class _Anything(Convertor):
    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())
router = APIRouter()
MAX_LIMIT = 1000
FILTERS = ("owner", "state", "tier", "customer_id", "limit", "offset")

_lock = threading.Lock()
_store: AlertStore | None = None


def alert_store() -> AlertStore:
    """Opened on first use, in the worker: importing the service opens nothing."""
    global _store
    with _lock:
        if _store is None:
            from service.config import load_service_config

            _store = AlertStore.open(load_service_config().event_store.url)
        return _store


def open_alerts_or_none(customer_ids: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """Open alerts for the worklist; None (unknown) when the alert store is down, rather than fail it."""
    try:
        return alert_store().open_alerts(customer_ids)
    except STORE_ERRORS as exc:
        log.error("alert store unavailable, the worklist goes without open alerts: %s", exc)
        return None


METRICS_SECONDS = 10.0  # a scrape reads every alert: reuse the answer this long
_metrics_lock = threading.Lock()
_metrics: tuple[float, str] | None = None


def alert_metrics() -> str:
    """The alert measures (time to acknowledge and resolve, save rate, open past SLA) as Prometheus text.

    BentoML answers /metrics from the multiprocess files of its workers' prometheus_client metrics,
    so a collector registered in one worker would never reach it. These measures are a view of the
    shared alert store, not of one process, so the service's `__metrics__` hook appends them: any
    worker gives the same answer, and a restarted worker loses nothing."""
    global _metrics
    from alerts.measures import measures_from_store, prometheus_text

    with _metrics_lock:
        if _metrics is not None and time.monotonic() - _metrics[0] < METRICS_SECONDS:
            return _metrics[1]
        try:
            text = prometheus_text(measures_from_store(alert_store()))
        except STORE_ERRORS as exc:
            log.error("alert store unavailable, /metrics goes without the alert measures: %s", exc)
            return "# churnguard: the alert store is unavailable; no alert measures\n"
        _metrics = (time.monotonic(), text)
        return text


def start_delivery(poll_seconds: float, stop: threading.Event) -> threading.Thread:
    """Deliver the outbox in the background of this worker (service.yaml `outbox.deliver_seconds`).

    Every worker of every replica may run one: claims are exclusive (alerts/outbox.py), so each message
    is sent by one of them. A bad configs/alerts.yaml stops the worker's start, saying why."""
    from alerts.outbox import run_sender
    from alerts.routing import load_alerts_config

    config = load_alerts_config()
    sender = threading.Thread(
        target=run_sender, args=(alert_store(), config, stop, poll_seconds), name="outbox", daemon=True
    )
    sender.start()
    return sender


def _bad(field: str, message: str) -> Rejected:
    return Rejected(400, f"invalid input: {field}: {message}")


def _alert_id(raw: str) -> int:
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise _bad("alert_id", f"expected a whole number, got {raw!r}")
    return int(raw)


async def _answer(work: Callable[[], Any]) -> Response:
    try:
        return json_response(await anyio.to_thread.run_sync(work))
    except Rejected as rejected:
        return rejected.response()
    except UnknownAlert as exc:
        return json_response({"error": str(exc)}, 404)
    except TransitionNotAllowed as exc:
        return json_response({"error": str(exc), "state": exc.state}, 409)
    except BadResolution as exc:
        return _bad(exc.field, exc.message).response()
    except STORE_ERRORS as exc:
        log.error("alert store unavailable, answering 503: %s", exc)
        return json_response({"error": "the alert store is unavailable"}, 503, {"Retry-After": "5"})


@router.get("/alerts", summary="Alerts, filtered", response_model=dict[str, Any])
async def list_alerts(request: Request) -> Response:
    """Query: owner, state (open|acknowledged|in_progress|resolved), tier, customer_id, limit, offset."""
    query = request.query_params

    def read() -> dict[str, Any]:
        unknown = sorted(set(query) - set(FILTERS))
        if unknown:
            raise _bad(unknown[0], f"unknown filter; filters: {', '.join(FILTERS)}")
        state, tier = query.get("state"), query.get("tier")
        if state is not None and state not in STATES:
            raise _bad("state", f"expected one of {', '.join(STATES)}, got {state!r}")
        if tier is not None and tier not in TIERS:
            raise _bad("tier", f"expected one of {', '.join(TIERS)}, got {tier!r}")
        numbers = {}
        for name, default, top in (("limit", 100, MAX_LIMIT), ("offset", 0, 10**9)):
            raw = query.get(name, str(default))
            if not raw.isdigit() or int(raw) > top or (name == "limit" and int(raw) < 1):
                raise _bad(name, f"expected a whole number from {1 if name == 'limit' else 0} to {top}")
            numbers[name] = int(raw)
        rows = alert_store().alerts(
            owner=query.get("owner"),
            state=state,
            tier=tier,
            customer_id=query.get("customer_id"),
            **numbers,
        )
        return {"alerts": rows, "count": len(rows)}

    return await _answer(read)


# `:anything`: an id with an encoded slash or newline still reaches the check and gets a 400 naming
# the field, not the router's plain-text 404 (`:path`'s regex stops at a newline).
@router.get("/alerts/{alert_id:anything}", summary="One alert", response_model=dict[str, Any])
async def get_alert(alert_id: str) -> Response:
    def read() -> dict[str, Any]:
        number = _alert_id(alert_id)
        alert = alert_store().alert(number)
        if alert is None:
            raise UnknownAlert(number)
        return alert

    return await _answer(read)


def _body(raw: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Rejected(400, "the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _bad(unknown[0], f"unknown field; expected {', '.join(allowed)}")
    actor = body.get("actor")
    if actor is not None and (not isinstance(actor, str) or len(actor) > 200):
        raise _bad("actor", "expected text of at most 200 characters")
    return body


async def _move(alert_id: str, request: Request, action: str) -> Response:
    raw = await request.body()

    def move() -> dict[str, Any]:
        number = _alert_id(alert_id)
        if action == "resolve":
            body = _body(raw, ("outcome", "churn_reason", "note", "actor"))
            if "outcome" not in body:
                raise _bad("outcome", "required: saved, churned or false_alarm")
            resolution = check_resolution(body["outcome"], body.get("churn_reason"), body.get("note"))
            return transition(
                alert_store(),
                number,
                "resolve",
                actor=body.get("actor"),
                resolution=resolution,
                state_dir=state_dir(),
            )
        body = _body(raw, ("actor",))
        return transition(alert_store(), number, action, actor=body.get("actor"))  # type: ignore[arg-type]

    return await _answer(move)


@router.post(
    "/alerts/{alert_id:anything}/acknowledge",
    summary="Acknowledge an open alert",
    response_model=dict[str, Any],
)
async def acknowledge(alert_id: str, request: Request) -> Response:
    """`{"actor": "Ana Lima"}` (optional). 409 unless the alert is open."""
    return await _move(alert_id, request, "acknowledge")


@router.post(
    "/alerts/{alert_id:anything}/start", summary="Start working on an alert", response_model=dict[str, Any]
)
async def start(alert_id: str, request: Request) -> Response:
    """`{"actor": ...}` (optional). 409 unless the alert is open or acknowledged."""
    return await _move(alert_id, request, "start")


@router.post(
    "/alerts/{alert_id:anything}/resolve",
    summary="Resolve an alert with its outcome",
    response_model=dict[str, Any],
)
async def resolve(alert_id: str, request: Request) -> Response:
    """`{"outcome": "saved|churned|false_alarm", "churn_reason": "price", "note": "...", "actor": ...}`;
    a churn reason only for churned. 409 unless acknowledged or in progress."""
    return await _move(alert_id, request, "resolve")
