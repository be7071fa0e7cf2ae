"""The BentoML service: `bentoml serve service.app:ChurnService`, normally started by `churnguard serve`.

BentoML imports this module in every process and needs the service class at import time, and the
request models shown in the OpenAPI document are generated from the served model's feature schema.
So importing this module resolves the model (`CHURNGUARD_MODEL_DIR` when `churnguard serve` already
fetched it, else the configured model URI) and checks its contract; a model that cannot be served
stops the import with the reason. Nothing else happens at import: each worker loads its predictor,
opens the prediction log and starts polling in `ChurnService.__init__`.

Endpoints: POST /predict, POST /predict_batch (JSON, or a Parquet/CSV upload), GET /model,
POST /admin/reload, and BentoML's /livez, /readyz, /metrics, /docs.json. The HTTP layer only parses,
calls the predictor and logs; it holds no feature logic.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio.to_thread
import bentoml
import pandas as pd
from _bentoml_sdk.io_models import IODescriptor  # the base BentoML gives input specs; see _ParsedInput
from fastapi import FastAPI
from pydantic import ConfigDict, Field, create_model
from starlette.requests import Request
from starlette.responses import Response

from churnguard.artifact import ContractError, ModelArtifact
from churnguard.history import LoggedHistory
from churnguard.inputs import MAX_REPORTED_ERRORS, FieldError, InputError, InputRules
from churnguard.live import UnknownCustomers, as_of_moment
from churnguard.predict import ScoredBatch
from churnguard.prediction_log import COMPRESSED_KINDS, Exchange, PredictionLog, pack_payload
from churnguard.scoring import load_scoring_config
from churnguard.store.events import STORE_ERRORS, EventStore
from churnguard.tracking import RegistryUnavailable, ResolvedModel, resolve_model_for_serving
from churnguard.value import WorklistConfig
from service.alert_routes import alert_metrics, open_alerts_or_none, start_delivery
from service.alert_routes import router as alert_router
from service.config import (
    MODEL_DIR_ENV,
    MODEL_VERSION_ENV,
    ServiceConfig,
    admin_keys,
    api_keys,
    load_service_config,
)
from service.ingest import INGEST
from service.ingest import router as ingest_router
from service.payloads import (
    CSV_TYPES,
    JSON_TYPE,
    PARQUET_TYPES,
    BatchPrediction,
    BatchRequest,
    IdsRequest,
    Prediction,
    Rejected,
    SingleRequest,
    batch_body,
    customer_model,
    invalid_input,
    json_response,
    parquet_body,
    query_flag,
    query_language,
    single_body,
    worklist_request,
)
from service.reload import ALIAS_URI, ModelHolder, ServedModel, build_served
from service.security import SecurityMiddleware

log = logging.getLogger("service.app")

INLINE_ROWS = 64  # batches up to this size are scored on the event loop; larger ones in a thread
THREADED_BODY_BYTES = 256 * 1024  # JSON bodies above this are decoded in a thread
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# ------------------------------------------------------------------------------------ the model at import


def initial_model(config: ServiceConfig) -> ResolvedModel:
    """The model this process starts with: the folder `churnguard serve` fetched, else the URI."""
    uri = config.model_uri()
    local = os.environ.get(MODEL_DIR_ENV)
    if local:
        match = ALIAS_URI.match(uri)
        name = match["name"] if match else None
        return ResolvedModel(uri, Path(local), name, os.environ.get(MODEL_VERSION_ENV, "local"))
    return resolve_model_for_serving(uri, config.model.on_registry_error == "serve_cached")


CONFIG = load_service_config()
try:
    INITIAL = initial_model(CONFIG)
except RegistryUnavailable as exc:  # plain `bentoml serve` without the launcher: the same clear refusal
    raise SystemExit(f"churnguard: {exc}") from None
try:
    _ARTIFACT = ModelArtifact.load(INITIAL.local_dir)
except ContractError as exc:
    raise SystemExit(
        f"churnguard: refusing to serve {INITIAL.uri} (version {INITIAL.version}): {exc}"
    ) from None
CUSTOMER = customer_model(InputRules(_ARTIFACT.schema, CONFIG.limits.range_tolerance))
TOP_REASONS = load_scoring_config().reasons.top
del _ARTIFACT  # workers load their own predictor; the import only needed the schema


@dataclass
class _Parsed:
    """What reaches an API method: the parsed request, or why it was refused, and the model to use."""

    served: ServedModel | None
    request_id: str
    single: SingleRequest | None = None
    batch: BatchRequest | None = None
    ids: IdsRequest | None = None
    rejected: Rejected | None = None


class _State:
    holder: ModelHolder | None = None
    prediction_log: PredictionLog | None = None
    worklist: WorklistConfig = WorklistConfig()


STATE = _State()


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


class _ParsedInput(IODescriptor):
    """BentoML input spec whose parsing is ours: fast JSON, uploads, and 4xx answers that name the field
    and row. The pydantic fields of the subclasses only document the request in the OpenAPI document."""

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> IODescriptor:
        holder = STATE.holder
        parsed = _Parsed(holder.current if holder else None, _request_id(request))
        try:
            if parsed.served is None:
                raise Rejected(503, "the service is starting")
            await cls.parse(request, parsed)
        except Rejected as rejected:
            parsed.rejected = rejected
        return cls.model_construct(**{cls.payload_field: parsed})

    payload_field: ClassVar[str] = "customer"

    @classmethod
    async def parse(cls, request: Request, parsed: _Parsed) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _SingleInput(_ParsedInput):
    model_config = ConfigDict(extra="forbid")
    payload_field: ClassVar[str] = "customer"

    @classmethod
    async def parse(cls, request: Request, parsed: _Parsed) -> None:
        media = _media_type(request)
        if media not in {JSON_TYPE, ""}:
            raise Rejected(415, f"send application/json, not {media}")
        parsed.single = parsed.served.codec.single(await request.body())  # type: ignore[union-attr]


class _BatchInput(_ParsedInput):
    model_config = ConfigDict(extra="forbid")
    payload_field: ClassVar[str] = "customers"

    @classmethod
    async def parse(cls, request: Request, parsed: _Parsed) -> None:
        codec = parsed.served.codec  # type: ignore[union-attr]
        media = _media_type(request)
        explain = query_flag(request.query_params.get("explain"))
        language = query_language(request.query_params.get("lang"))
        parquet_out = PARQUET_TYPES & {
            part.split(";")[0].strip() for part in request.headers.get("accept", "").split(",")
        }
        if media in {JSON_TYPE, ""}:
            body = await request.body()
            if b'"customer_ids"' in body and b'"customers"' not in body:
                parsed.ids = codec.batch_ids(body)
                return
            if len(body) > THREADED_BODY_BYTES:
                parsed.batch = await anyio.to_thread.run_sync(codec.batch_json, body)
            else:
                parsed.batch = codec.batch_json(body)
            parsed.batch.parquet_response = bool(parquet_out)
        elif media in PARQUET_TYPES or media in CSV_TYPES:
            kind = "parquet" if media in PARQUET_TYPES else "csv"
            parsed.batch = await anyio.to_thread.run_sync(
                codec.batch_upload, await request.body(), kind, explain, bool(parquet_out), language
            )
        elif media == "multipart/form-data":
            upload, kind = await _multipart_file(request)
            parsed.batch = await anyio.to_thread.run_sync(
                codec.batch_upload, upload, kind, explain, bool(parquet_out), language
            )
        else:
            raise Rejected(
                415, f"send application/json, a Parquet or CSV body, or multipart/form-data; not {media}"
            )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _multipart_file(request: Request) -> tuple[bytes, str]:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise invalid_input_field("file", "multipart upload needs a `file` part holding Parquet or CSV")
    name = (upload.filename or "").lower()
    media = (upload.content_type or "").split(";")[0].strip().lower()
    if media in PARQUET_TYPES or name.endswith((".parquet", ".pq")):
        kind = "parquet"
    elif media in CSV_TYPES or name.endswith(".csv"):
        kind = "csv"
    else:
        raise invalid_input_field("file", "name the file *.parquet or *.csv, or give its content type")
    return await upload.read(), kind


def invalid_input_field(name: str, message: str) -> Rejected:
    return invalid_input([FieldError(name, message)])


LANG_FIELD = (
    Literal["en", "zh"],
    Field("en", description="language of the reasons' messages: en (English) or zh (Simplified Chinese)"),
)
PredictRequest = create_model(
    "PredictRequest",
    __base__=_SingleInput,
    customer=(CUSTOMER, Field(description="the customer's feature values, named as in the model's schema")),
    explain=(bool, Field(True, description="false skips reasons and group scores (faster)")),
    lang=LANG_FIELD,
)
PredictBatchRequest = create_model(
    "PredictBatchRequest",
    __base__=_BatchInput,
    customers=(
        list[CUSTOMER],  # type: ignore[valid-type]
        Field(
            min_length=1,
            max_length=CONFIG.limits.max_batch_rows,
            description="results come back in this order",
        ),
    ),
    explain=(bool, Field(True, description="false skips reasons and group scores (faster)")),
    lang=LANG_FIELD,
)


# ---------------------------------------------------------------------------------------------- service


def _headers(parsed: _Parsed, version: str | None = None) -> dict[str, str]:
    headers = {"x-request-id": parsed.request_id}
    if version:
        headers["x-model-version"] = version
    return headers


def _plain(value: object) -> object:
    """A feature value as JSON would bring it: None for a missing category, floats as floats."""
    return None if value is None or value is pd.NA else value


def _log_unavailable(exc: Exception) -> Response:
    log.error("prediction log write failed, answering 503: %s", exc)
    # Nothing was scored, so a retry is safe; a locked or full log usually clears within seconds.
    return json_response(
        {"error": "the prediction log is unavailable; nothing was scored"}, 503, {"Retry-After": "5"}
    )


@bentoml.service(
    name="churnguard",
    workers=CONFIG.server.workers,
    traffic={"timeout": CONFIG.server.timeout_seconds, "max_concurrency": CONFIG.server.max_concurrency},
    logging={"access": {"enabled": CONFIG.server.access_log}},
)
class ChurnService:
    """Customer-churn early warning: churn probability, health score, alert tier and reasons."""

    def __init__(self) -> None:
        served = build_served(CONFIG, INITIAL, TOP_REASONS)
        self.holder = ModelHolder(CONFIG, served, TOP_REASONS)
        settings = CONFIG.prediction_log
        self.prediction_log = (
            PredictionLog.open(settings.url, settings.batch_rows, settings.synchronous)
            if settings.enabled
            else None
        )
        # Large request bodies are compressed for the log on this thread while their batch is scored.
        self.packer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-pack")
        # Score-history rules (health drop over 90 days) read the prediction log.
        self.history = LoggedHistory(self.prediction_log) if self.prediction_log is not None else None
        STATE.holder, STATE.prediction_log = self.holder, self.prediction_log
        stored = CONFIG.event_store
        self.event_store = EventStore.open(stored.url) if stored.enabled else None
        INGEST.store, INGEST.holder, INGEST.max_events = self.event_store, self.holder, stored.max_events
        STATE.worklist = load_scoring_config().worklist
        self.outbox_stop = threading.Event()
        if CONFIG.outbox.deliver_seconds > 0 and stored.enabled:
            start_delivery(CONFIG.outbox.deliver_seconds, self.outbox_stop)
        self.holder.start_polling()
        # Everything loaded so far (libraries, the model) lives as long as the worker: keep it out of
        # the cyclic collector's full passes, which a 10,000-row batch's allocations trigger.
        gc.freeze()
        log.info(
            "serving %s version %s (explanations: %s)",
            served.uri,
            served.version,
            served.predictor.explain_method,
        )

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.holder.stop()
        self.outbox_stop.set()
        self.packer.shutdown(wait=True)
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self.event_store is not None:
            self.event_store.close()

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    def __metrics__(self, content: str) -> str:
        """BentoML's /metrics text, with the alert measures of the shared alert store after it."""
        return content + alert_metrics()

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=Prediction)
    async def predict(self, customer: _Parsed, explain: bool = True, lang: str = "en") -> Response:
        """Score one customer: its features, `{"customer": {...}, "explain": true, "lang": "en"}`, or its
        id, `{"customer_id": "C1", "as_of": "2025-09-28"}`: features from its stored history as of that
        moment (a date: midnight at its start; none: now)."""
        parsed = customer
        if parsed.rejected is not None:
            return parsed.rejected.response(_headers(parsed))
        served, request = parsed.served, parsed.single
        try:
            if request.customer_id is not None:
                batch = self._score_ids(served, [request.customer_id], request.as_of, request.explain)
            else:
                batch = served.predictor.score_record(request.record, request.explain, self.history)
        except InputError as exc:
            return invalid_input(exc.errors, exc.total).response(_headers(parsed))
        except Rejected as rejected:
            return rejected.response(_headers(parsed))
        except STORE_ERRORS as exc:  # the log's score history, read by rules (the event store's are Rejected)
            return _log_unavailable(exc)
        try:
            if self.prediction_log is not None:
                self.prediction_log.append(batch, parsed.request_id)
        except STORE_ERRORS as exc:
            return _log_unavailable(exc)
        return Response(
            single_body(batch, request.language),
            media_type=JSON_TYPE,
            headers=_headers(parsed, batch.model_version),
        )

    @bentoml.api(route="/predict_batch", input_spec=PredictBatchRequest, output_spec=BatchPrediction)
    async def predict_batch(self, customers: _Parsed, explain: bool = True, lang: str = "en") -> Response:
        """Score many customers, results in input order: `{"customers": [...]}` as JSON, or a Parquet
        (`application/vnd.apache.parquet`) or CSV (`text/csv`) body or multipart `file` upload with
        `?explain=false` to skip reasons and `?lang=zh` for Chinese messages.
        `Accept: application/vnd.apache.parquet` returns Parquet."""
        parsed = customers
        if parsed.rejected is not None:
            return parsed.rejected.response(_headers(parsed))
        if parsed.ids is not None:
            return await self._predict_ids(parsed)
        request = parsed.batch
        rows = len(request.frame)
        try:
            if rows <= INLINE_ROWS:
                body, version = self._score_batch(parsed)
            else:
                body, version = await anyio.to_thread.run_sync(self._score_batch, parsed)
        except Rejected as rejected:
            return rejected.response(_headers(parsed))
        except STORE_ERRORS as exc:
            return _log_unavailable(exc)
        media = "application/vnd.apache.parquet" if request.parquet_response else JSON_TYPE
        return Response(body, media_type=media, headers=_headers(parsed, version))

    async def _predict_ids(self, parsed: _Parsed) -> Response:
        request, served = parsed.ids, parsed.served

        def score() -> tuple[bytes, str]:
            batch = self._score_ids(served, request.customer_ids, request.as_of, request.explain)
            if self.prediction_log is not None:
                self.prediction_log.append(batch, parsed.request_id)
            return batch_body(batch, request.language), batch.model_version

        try:
            body, version = await anyio.to_thread.run_sync(score)
        except Rejected as rejected:
            return rejected.response(_headers(parsed))
        except STORE_ERRORS as exc:  # the log (the store's own errors are answered first)
            return _log_unavailable(exc)
        return Response(body, media_type=JSON_TYPE, headers=_headers(parsed, version))

    def _score_ids(
        self, served: ServedModel, customer_ids: list[str], as_of: Any, explain: bool
    ) -> ScoredBatch:
        """Customers scored from their stored history as of a moment (now when `as_of` is None)."""
        if served.live is None:
            raise Rejected(
                409,
                "the served model scores feature vectors (it has no event features): send "
                '{"customer": {...features...}}',
            )
        if self.event_store is None:
            raise Rejected(409, "scoring by customer id needs the event store (event_store.enabled)")
        moment = as_of if as_of is not None else as_of_moment(None)
        try:
            frame = served.live.frame(self.event_store, customer_ids, moment)
        except UnknownCustomers as exc:
            raise Rejected(404, str(exc)) from None
        except STORE_ERRORS as exc:
            log.error("event store read failed: %s", exc)
            raise Rejected(503, "the event store is unavailable; nothing was scored") from None
        predictor = served.predictor
        try:
            if len(frame) == 1:  # the fast single-customer path, as for a feature vector
                record = {name: _plain(value) for name, value in frame.iloc[0].items()}
                return predictor.score_record(record, explain, self.history)
            return predictor.score_frame(frame, explain, history=self.history)
        except InputError as exc:
            # The history gave values the model never accepted: not the caller's mistake, so say whose.
            errors = [
                FieldError(error.field, f"{error.message} (computed from the stored history)", error.row)
                for error in exc.errors
            ]
            raise Rejected(
                422,
                f"the stored history of {', '.join(customer_ids[:3])} gives features the served model "
                "does not accept",
                errors,
                exc.total,
            ) from None

    def _score_batch(self, parsed: _Parsed) -> tuple[bytes, str]:
        predictor, request, prediction_log = parsed.served.predictor, parsed.batch, self.prediction_log
        # A batch the log keeps as its compressed request body: compress it while the batch is scored.
        packed = None
        logged_whole = prediction_log is not None and len(request.frame) >= prediction_log.batch_rows
        if logged_whole and request.source in COMPRESSED_KINDS:
            packed = self.packer.submit(pack_payload, request.source, request.body)
        try:
            checked = predictor.rules.check_frame(request.frame)
        except InputError as exc:  # missing or unknown columns
            raise invalid_input(exc.errors, exc.total) from None
        if checked.errors:
            raise invalid_input(checked.errors[:MAX_REPORTED_ERRORS], len(checked.errors))
        batch = predictor.score_checked(checked, request.explain, self.history)
        language = request.language
        body = parquet_body(batch, language) if request.parquet_response else batch_body(batch, language)
        if prediction_log is not None:
            answer = "parquet" if request.parquet_response else "json"
            source, inputs = packed.result() if packed is not None else (request.source, request.body)
            prediction_log.append(batch, parsed.request_id, Exchange(source, inputs, answer, body))
        return body, batch.model_version


# ------------------------------------------------------------------------------ metadata and admin routes

extras = FastAPI(title="churnguard", openapi_url=None, docs_url=None, redoc_url=None)


@extras.get("/model", summary="The served model", response_model=dict[str, Any])
def model_metadata() -> dict[str, Any]:
    """Version, training date, dataset, metrics, tier thresholds, health mapping and feature schema."""
    holder = STATE.holder
    if holder is None:
        return {}
    served = holder.current
    return {
        **served.predictor.metadata(),
        "model_uri": served.uri,
        "loaded_at": served.loaded_at,
        "reload": holder.status(),
    }


@extras.post("/worklist", summary="Customers to call first, by priority", response_model=dict[str, Any])
async def worklist(request: Request) -> Response:
    """`{"owner": "Ana Lima" | null, "limit": 100, "lang": "en"}`: the customers scored in the last
    `worklist.lookback_days` days, of one owner (or all), re-scored now and ordered by priority, each
    with their top reasons (configs/scoring.yaml, `worklist:`)."""
    from churnguard.worklist import WorklistError, build_worklist

    holder, prediction_log = STATE.holder, STATE.prediction_log
    if holder is None:
        return json_response({"error": "the service is starting"}, 503)
    if prediction_log is None:
        return json_response({"error": "the worklist needs the prediction log (prediction_log.enabled)"}, 409)
    config = STATE.worklist
    try:
        asked = worklist_request(await request.body(), config.limit)
    except Rejected as rejected:
        return rejected.response()
    served = holder.current
    since = datetime.now(UTC) - timedelta(days=config.lookback_days)

    def build() -> dict[str, Any]:
        logged = prediction_log.read(since)
        history = LoggedHistory(prediction_log)
        return build_worklist(served.predictor, logged, config, asked, history, open_alerts_or_none)

    try:
        body = await anyio.to_thread.run_sync(build)
    except WorklistError as exc:
        return invalid_input_field(exc.field, exc.message).response()
    except STORE_ERRORS as exc:
        log.error("prediction log read failed: %s", exc)
        return json_response({"error": "the prediction log is unavailable"}, 503)
    return json_response(body, headers={"x-model-version": served.version})


@extras.post(
    "/admin/reload",
    summary="Check the registry now and switch to the alias's version",
    response_model=dict[str, Any],
    responses={409: {"description": "the new version was refused; the old one keeps serving"}},
)
def reload_model() -> Response:
    """Needs an admin API key. Reloads this worker; other workers follow on their next poll."""
    holder = STATE.holder
    if holder is None:
        return json_response({"error": "the service is starting"}, 503)
    outcome = holder.check(force=True)
    return json_response(outcome.as_dict(), 409 if outcome.status == "refused" else 200)


extras.include_router(ingest_router)
extras.include_router(alert_router)
ChurnService.mount_asgi_app(extras, path="/")
ChurnService.add_asgi_middleware(
    SecurityMiddleware,
    api_keys=api_keys(),
    admin_keys=admin_keys(),
    behind_proxy=CONFIG.server.behind_proxy,
    max_body_bytes=CONFIG.limits.max_body_bytes,
)
