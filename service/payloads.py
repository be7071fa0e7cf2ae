"""HTTP payloads: request bodies in, JSON/Parquet bodies out, and the OpenAPI models that document them.

Everything here is generated from the served model's feature schema. Parsing only checks the
envelope and JSON types (fast, with msgspec); what a value may be is decided by
`churnguard.inputs.InputRules`, so a batch is checked the same way as a file scored offline.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import Response

from churnguard.inputs import MAX_ID_LENGTH, MAX_REPORTED_ERRORS, FieldError, InputRules
from churnguard.live import as_of_moment
from churnguard.predict import ScoredBatch
from churnguard.rules import LANGUAGES, Language
from churnguard.schema import ID_COLUMN, SIGNAL_GROUPS, FeatureSpec
from churnguard.score_file import arrow_to_frame, csv_options
from churnguard.worklist import WorklistRequest

PARQUET_TYPES = {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}
CSV_TYPES = {"text/csv", "application/csv"}
JSON_TYPE = "application/json"

_encoder = msgspec.json.Encoder()


class Rejected(Exception):
    """A request answered with a 4xx and a JSON body that says what is wrong."""

    def __init__(
        self, status: int, message: str, errors: list[FieldError] | None = None, total: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.total = total or len(self.errors)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.errors:
            out["errors"] = [error.as_dict() for error in self.errors[:MAX_REPORTED_ERRORS]]
            out["total_errors"] = self.total
        return out

    def response(self, headers: dict[str, str] | None = None) -> Response:
        return json_response(self.body(), self.status, headers)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type=JSON_TYPE, headers=headers)


def invalid_input(errors: list[FieldError], total: int | None = None) -> Rejected:
    total = total if total is not None else len(errors)
    first = errors[0]
    where = f"row {first.row}, " if first.row is not None else ""
    return Rejected(400, f"invalid input: {where}{first.field}: {first.message}", errors, total)


# ------------------------------------------------------------------------------------------- requests


@dataclass
class SingleRequest:
    record: dict[str, Any] | None  # the feature vector; None when the customer is asked for by id
    explain: bool
    language: Language = "en"
    customer_id: str | None = None  # scoring by id: features from the event store
    as_of: pd.Timestamp | None = None  # by id: the moment to score as of (None: now)


@dataclass
class IdsRequest:
    """`/predict_batch` by id: `{"customer_ids": [...], "as_of": ..., "explain": ..., "lang": ...}`."""

    customer_ids: list[str]
    as_of: pd.Timestamp | None
    explain: bool
    language: Language = "en"


@dataclass
class BatchRequest:
    frame: pd.DataFrame  # customer_id + features, as sent
    explain: bool
    body: bytes  # the payload as received, logged as it is for large batches
    source: Literal["json", "parquet", "csv"] = "json"
    parquet_response: bool = False
    language: Language = "en"


def language_of(value: object, errors: list[FieldError], name: str = "lang") -> Language:
    """The `lang` of a request: en (default) or zh; anything else is named in `errors`."""
    if value is None:
        return "en"
    if value not in LANGUAGES:
        errors.append(FieldError(name, f"expected one of {', '.join(LANGUAGES)}, got {value!r}"))
        return "en"
    return value  # type: ignore[return-value]


@dataclass
class RequestCodec:
    """Parses request bodies for one model's schema (rebuilt when a new model is swapped in)."""

    rules: InputRules
    max_batch_rows: int
    _known_decoder: msgspec.json.Decoder = field(init=False)
    _batch_decoder: msgspec.json.Decoder = field(init=False)
    _codes: dict[str, dict[object, int]] = field(init=False)  # known category (or null) -> code

    def __post_init__(self) -> None:
        self._known_decoder = msgspec.json.Decoder(_batch_struct(self.rules, known_categories=True))
        self._batch_decoder = msgspec.json.Decoder(_batch_struct(self.rules, known_categories=False))
        self._codes = {
            spec.name: {**{category: code for code, category in enumerate(spec.categories)}, None: -1}
            for spec in self.rules.specs
            if spec.categorical and spec.categories is not None
        }

    # --------------------------------------------------------------------------------- single

    def single(self, body: bytes) -> SingleRequest:
        payload = _decode_json(body)
        if not isinstance(payload, dict):
            raise Rejected(
                400,
                'the body must be a JSON object: {"customer": {...}} (features) or {"customer_id": "..."}',
            )
        if "customer_id" in payload and "customer" not in payload:
            return self._single_by_id(payload)
        errors = [
            FieldError(name, "unknown field")
            for name in sorted(set(payload) - {"customer", "explain", "lang"})
        ]
        customer = payload.get("customer")
        if not isinstance(customer, dict):
            errors.append(
                FieldError("customer", "missing field" if customer is None else "must be an object")
            )
        explain = payload.get("explain", True)
        if not isinstance(explain, bool):
            errors.append(FieldError("explain", "expected true or false"))
        language = language_of(payload.get("lang"), errors)
        if errors:
            raise invalid_input(errors)
        return SingleRequest(customer, explain, language)

    def _single_by_id(self, payload: dict[str, Any]) -> SingleRequest:
        errors: list[FieldError] = []
        customer_id = _customer_id_of(payload.get("customer_id"), errors)
        as_of, explain, language = _by_id_options(payload, "customer_id", errors)
        if errors:
            raise invalid_input(errors)
        return SingleRequest(None, explain, language, customer_id, as_of)

    def batch_ids(self, body: bytes) -> IdsRequest:
        payload = _decode_json(body)
        if not isinstance(payload, dict):
            raise Rejected(400, 'the body must be a JSON object: {"customer_ids": [...], "as_of": "..."}')
        errors: list[FieldError] = []
        given = payload.get("customer_ids")
        ids: list[str] = []
        if not isinstance(given, list):
            errors.append(FieldError("customer_ids", "missing field" if given is None else "must be a list"))
        else:
            self._check_count(len(given))
            for row, value in enumerate(given):
                found: list[FieldError] = []
                ids.append(_customer_id_of(value, found))
                errors += [FieldError("customer_ids", error.message, row) for error in found]
        as_of, explain, language = _by_id_options(payload, "customer_ids", errors)
        if errors:
            raise invalid_input(errors[:MAX_REPORTED_ERRORS], len(errors))
        return IdsRequest(ids, as_of, explain, language)

    # ---------------------------------------------------------------------------------- batch

    def batch_json(self, body: bytes) -> BatchRequest:
        try:
            try:  # every category one the model knows: decoded without a new string per value
                envelope = self._known_decoder.decode(body)
            except msgspec.ValidationError:  # an unseen category (served and flagged), or a mistake
                envelope = self._batch_decoder.decode(body)
        except msgspec.ValidationError as exc:
            try:
                return self._batch_json_slow(body)  # names every bad field, in every row
            except TooDeep:  # too deep to decode generically: the typed decoder's message names the field
                raise TooDeep(f" ({exc})") from None
        except msgspec.DecodeError as exc:
            raise Rejected(400, f"malformed JSON: {exc}") from None
        except RecursionError:
            raise TooDeep() from None
        customers = envelope.customers
        self._check_count(len(customers))
        columns = list(zip(*map(msgspec.structs.astuple, customers), strict=True))
        data: dict[str, object] = {ID_COLUMN: np.array(columns[0], dtype=object)}
        for spec, values in zip(self.rules.specs, columns[1:], strict=True):
            data[spec.name] = (
                self._categorical(spec, values) if spec.categorical else np.array(values, dtype=float)
            )
        return BatchRequest(pd.DataFrame(data), envelope.explain, body, language=envelope.lang)

    def _categorical(self, spec: FeatureSpec, values: tuple) -> pd.Categorical:
        """A categorical column of text, whole numbers or null (msgspec checked), as codes."""
        codes_of = self._codes.get(spec.name)
        if codes_of is not None:
            try:  # known categories: one dict lookup per value, in C
                codes = np.fromiter(map(codes_of.__getitem__, values), dtype=np.int64, count=len(values))
                return pd.Categorical.from_codes(codes, categories=spec.categories, validate=False)
            except KeyError:  # an unseen category or a whole number: checked as text by InputRules
                pass
        codes, distinct = pd.factorize(np.array(values, dtype=object), use_na_sentinel=True)
        return pd.Categorical.from_codes(codes, categories=distinct, validate=False)

    def _batch_json_slow(self, body: bytes) -> BatchRequest:
        payload = _decode_json(body)
        if not isinstance(payload, dict):
            raise Rejected(400, 'the body must be a JSON object: {"customers": [...], "explain": true}')
        errors = [
            FieldError(name, "unknown field")
            for name in sorted(set(payload) - {"customers", "explain", "lang"})
        ]
        customers = payload.get("customers")
        if not isinstance(customers, list):
            errors.append(FieldError("customers", "missing field" if customers is None else "must be a list"))
        explain = payload.get("explain", True)
        if not isinstance(explain, bool):
            errors.append(FieldError("explain", "expected true or false"))
        language = language_of(payload.get("lang"), errors)
        if errors:
            raise invalid_input(errors)
        self._check_count(len(customers))
        for row, customer in enumerate(customers):
            if not isinstance(customer, dict):
                errors.append(FieldError("customers", "must be an object of feature values", row))
                continue
            errors.extend(self.rules.check_record(customer, row)[3])
        if errors:
            raise invalid_input(errors[:MAX_REPORTED_ERRORS], len(errors))
        # msgspec refused something the rules accept (should not happen): go on with the plain records.
        return BatchRequest(pd.DataFrame.from_records(customers), explain, body, language=language)

    def batch_upload(
        self,
        body: bytes,
        kind: Literal["parquet", "csv"],
        explain: bool,
        parquet_response: bool,
        language: Language = "en",
    ) -> BatchRequest:
        if not body:
            raise Rejected(400, f"the {kind} upload is empty")
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            categorical = self.rules.schema.categorical_names
            try:
                # Text categoricals read as dictionaries: each distinct value is decoded once.
                table = pq.read_table(pa.BufferReader(body), read_dictionary=categorical)
                frame = arrow_to_frame(table, categorical)
            except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: a non-UTF-8 name
                raise Rejected(400, f"not a readable Parquet file: {exc}") from None
        else:
            try:
                frame = pd.read_csv(io.BytesIO(body), **csv_options(self.rules.schema.categorical_names))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
                raise Rejected(400, f"not a readable CSV file: {exc}") from None
        self._check_count(len(frame))
        return BatchRequest(frame, explain, body, kind, parquet_response, language)

    def _check_count(self, rows: int) -> None:
        if rows == 0:
            raise invalid_input([FieldError("customers", "must hold at least one customer")])
        if rows > self.max_batch_rows:
            raise Rejected(
                413,
                f"the batch holds {rows:,} customers; the limit is {self.max_batch_rows:,} per request "
                "(limits.max_batch_rows): split it, or score files offline with `churnguard score`",
            )


def _by_id_options(
    payload: dict[str, Any], ids_field: str, errors: list[FieldError]
) -> tuple[pd.Timestamp | None, bool, Language]:
    """The rest of a by-id request: unknown fields named, then as_of, explain and lang."""
    errors += [
        FieldError(name, "unknown field")
        for name in sorted(set(payload) - {ids_field, "as_of", "explain", "lang"})
    ]
    as_of = as_of_of(payload.get("as_of"), errors)
    explain = payload.get("explain", True)
    if not isinstance(explain, bool):
        errors.append(FieldError("explain", "expected true or false"))
    return as_of, explain, language_of(payload.get("lang"), errors)


def _customer_id_of(value: object, errors: list[FieldError]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        errors.append(
            FieldError("customer_id", f"expected the customer's id, 1 to {MAX_ID_LENGTH} characters")
        )
        return ""
    return value


def as_of_of(value: object, errors: list[FieldError]) -> pd.Timestamp | None:
    """`as_of`: a date (midnight at its start) or an ISO 8601 timestamp (UTC unless it has an offset)."""
    if value is None:
        return None
    moment = None
    if isinstance(value, str):
        try:
            moment = as_of_moment(value)
        except ValueError:
            moment = None
    if moment is None or pd.isna(moment):
        errors.append(FieldError("as_of", f"expected a date or an ISO 8601 timestamp, got {value!r}"))
        return None
    if moment > as_of_moment(None):
        errors.append(FieldError("as_of", f"{value!r} is in the future: the history cannot tell it yet"))
        return None
    return moment


class TooDeep(Rejected):
    """JSON nested deeper than the decoder's recursion limit (msgspec raises RecursionError)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(400, f"malformed JSON: nested too deeply{detail}")


def _decode_json(body: bytes) -> Any:
    if not body:
        raise Rejected(400, "the request body is empty")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise TooDeep() from None


def query_flag(value: str | None, default: bool = True) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise invalid_input([FieldError("explain", f"query parameter must be true or false, got {value!r}")])


MAX_WORKLIST = 10_000


def worklist_request(body: bytes, default_limit: int) -> WorklistRequest:
    """POST /worklist: `{"owner": text or null, "limit": 1..10000, "lang": "en" | "zh"}`, all optional."""
    payload = _decode_json(body) if body.strip() else {}
    if not isinstance(payload, dict):
        raise Rejected(400, 'the body must be a JSON object: {"owner": "...", "limit": 100, "lang": "en"}')
    errors = [FieldError(name, "unknown field") for name in sorted(set(payload) - {"owner", "limit", "lang"})]
    owner = payload.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner or len(owner) > MAX_ID_LENGTH):
        errors.append(
            FieldError(
                "owner", f"expected the owner's name as text (1 to {MAX_ID_LENGTH} characters) or null"
            )
        )
    limit = payload.get("limit", default_limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_WORKLIST:
        errors.append(
            FieldError("limit", f"expected a whole number from 1 to {MAX_WORKLIST:,}, got {limit!r}")
        )
    language = language_of(payload.get("lang"), errors)
    if errors:
        raise invalid_input(errors)
    return WorklistRequest(owner, limit, language)


def query_language(value: str | None) -> Language:
    errors: list[FieldError] = []
    language = language_of(value, errors)
    if errors:
        raise invalid_input(errors)
    return language


def _batch_struct(rules: InputRules, known_categories: bool) -> type[msgspec.Struct]:
    """msgspec types for the JSON batch: types and required/unknown fields are checked in C. With
    `known_categories`, a categorical takes only the categories the model knows (or a whole number):
    msgspec then hands back its own string per category instead of a new one per value."""
    fields: list[tuple[str, object]] = [("f_id", str | int)]
    rename = {"f_id": ID_COLUMN}
    for position, spec in enumerate(rules.specs):
        kind: object = float
        if spec.categorical:
            known = known_categories and spec.categories
            kind = Literal[tuple(spec.categories)] | int if known else str | int  # type: ignore[misc]
        if spec.nullable:
            kind = kind | None  # type: ignore[operator]
        fields.append((f"f{position}", kind))
        rename[f"f{position}"] = spec.name
    # gc=False: ten thousand decoded customers are not tracked by the cyclic collector.
    customer = msgspec.defstruct("Customer", fields, rename=rename, forbid_unknown_fields=True, gc=False)
    return msgspec.defstruct(
        "BatchEnvelope",
        [("customers", list[customer]), ("explain", bool, True), ("lang", Literal[LANGUAGES], "en")],  # type: ignore[valid-type]
        forbid_unknown_fields=True,
    )


# ------------------------------------------------------------------------------------------ responses


# A model driver, keys as `Explanations.dicts` spells them (rule reasons come as dicts, with severity).


class _Result(msgspec.Struct, gc=False):
    """One result, fields in the order of `ScoredBatch.results`: encoded in C, no dict per customer."""

    customer_id: str
    churn_probability: float
    health_score: int
    alert_tier: str
    model_tier: str
    escalated_by: list
    value_tier: Any
    value_score: Any
    priority: Any
    reasons: Any
    group_scores: Any
    flags: list
    model_version: str


class _Answer(msgspec.Struct, gc=False):
    """A batch answer: encoded into one buffer (no copies of a multi-megabyte body to join it)."""

    model_version: str
    count: int
    results: list[_Result]


@functools.lru_cache(maxsize=16)
def _group_struct(names: tuple[str, ...]) -> type[msgspec.Struct]:
    fields = [(f"g{position}", int) for position in range(len(names))]
    rename = {f"g{position}": name for position, name in enumerate(names)}
    return msgspec.defstruct("GroupScores", fields, rename=rename, gc=False)


def _result_structs(batch: ScoredBatch, language: Language) -> list[_Result]:
    """The results (the documents `ScoredBatch.results` gives), built column by column."""
    rows = len(batch)
    value = batch.value
    value_tier = value_score = priority = reasons = groups = [None] * rows
    if value is not None:
        value_tier, priority = value.tier.tolist(), value.priority.tolist()
        value_score = np.where(np.isnan(value.score), None, value.score).tolist()
    if batch.explanations is not None and batch.group_scores is not None:
        reasons = list(map(msgspec.Raw, batch.reason_lines(language)))  # already JSON
        columns = batch.group_scores.astype(np.int64).T.tolist()
        grouped = _group_struct(tuple(batch.group_names))
        groups = list(map(grouped, *columns)) if columns else [{}] * rows
    model_tier = batch.model_tier if batch.model_tier is not None else batch.tier
    hits = batch.rule_hits
    escalated = batch.escalated_by() if hits is not None and hits.escalating.any() else [[]] * rows
    fields = [
        batch.customer_ids,
        batch.probability.tolist(),
        batch.health.tolist(),
        batch.tier.tolist(),
        model_tier.tolist(),
        escalated,  # one shared [] when no rule escalated anyone: it is only encoded
        value_tier,
        value_score,
        priority,
        reasons,
        groups,
        batch.flags,
        [batch.model_version] * rows,
    ]
    assert all(len(field) == rows for field in fields)  # map() stops at the shortest
    return list(map(_Result, *fields))


def batch_body(batch: ScoredBatch, language: Language = "en") -> bytes:
    return _encoder.encode(_Answer(batch.model_version, len(batch), _result_structs(batch, language)))


def single_body(batch: ScoredBatch, language: Language = "en") -> bytes:
    return _encoder.encode(_result_structs(batch, language)[0])


def parquet_body(batch: ScoredBatch, language: Language = "en") -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(batch.to_frame(language=language), preserve_index=False), sink)
    return sink.getvalue()


# ------------------------------------------------------------------------------------- OpenAPI models


def customer_model(rules: InputRules) -> type[BaseModel]:
    """The request model of one customer, with every feature's type, range and meaning."""
    fields: dict[str, Any] = {
        "customer_id": (
            str,
            Field(min_length=1, max_length=MAX_ID_LENGTH, description="the CRM's id; returned as given"),
        )
    }
    for position, spec in enumerate(rules.specs):
        what = spec.kind if spec.kind != "static" else "attribute"
        if spec.event_type:
            what += f" of {spec.label or spec.event_type}"
            if spec.window_days:
                what += f" over {spec.window_days} days"
        nullable = " May be null." if spec.nullable else " Must not be null."
        if spec.categorical:
            kind: Any = str | int
            known = ", ".join((spec.categories or [])[:30])
            description = (
                f"{spec.group} signal, categorical {what}. Known categories: {known or 'not recorded'}; "
                f"an unseen category is scored and flagged.{nullable}"
            )
            constraints: dict[str, Any] = {}
            example: Any = (spec.categories or ["text"])[0]
        else:
            kind = float
            accepted = rules.ranges.get(spec.name)
            constraints = {"ge": accepted.low, "le": accepted.high} if accepted else {}
            if accepted and math.isinf(accepted.high):  # tenure: no upper bound (JSON has no infinity)
                del constraints["le"]
            description = f"{spec.group} signal, numeric {what}."
            if accepted:
                upper = f"{accepted.high:g}]" if math.isfinite(accepted.high) else "no upper bound)"
                description += (
                    f" Training range [{accepted.train_min:g}, {accepted.train_max:g}]; accepted "
                    f"[{accepted.low:g}, {upper} (outside the training range is flagged"
                    + ("" if math.isfinite(accepted.flag_above) else ", except above it")
                    + ")."
                )
            description += nullable
            example = accepted.train_min if accepted else 0.0
        if spec.nullable:
            kind = kind | None
        fields[f"f{position}"] = (
            kind,
            Field(
                alias=spec.name,
                description=description,
                examples=[example],
                json_schema_extra={"x-signal-group": spec.group},
                **constraints,
            ),
        )
    return create_model("Customer", __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)


class Reason(BaseModel):
    code: str = Field(
        description="raises_risk:<feature> or lowers_risk:<feature> for the model's drivers; "
        "rule:<code> for an early-warning rule hit (listed first, most severe first)"
    )
    feature: str = Field(description="the feature read; health_drop for score-history rules")
    group: str = Field(description=f"signal group, one of {', '.join(SIGNAL_GROUPS)}")
    value: str | float | int | None = Field(description="the value as scored; null when missing")
    impact: float | None = Field(
        description="SHAP contribution to the log-odds of churn; > 0 raises the risk; null for rules"
    )
    message: str = Field(
        description="short human phrasing in the requested `lang` (en or zh), e.g. "
        "'orders down 60% against the previous 90 days'"
    )
    severity: Literal["info", "warning", "critical"] | None = Field(
        None, description="rule hits only: the rule's severity"
    )
    escalated: bool | None = Field(None, description="rule hits only: this rule raised the alert tier")


class Flag(BaseModel):
    code: Literal["unknown_category", "outside_training_range"]
    field: str


class Prediction(BaseModel):
    customer_id: str
    churn_probability: float = Field(
        ge=0, le=1, description="calibrated probability of churn within the horizon"
    )
    health_score: int = Field(ge=0, le=100, description="0-100, higher is healthier (see GET /model)")
    alert_tier: Literal["high", "medium", "low"] = Field(
        description="the model's tier, raised by early-warning rules where they escalate"
    )
    model_tier: Literal["high", "medium", "low"] = Field(description="the tier the probability alone gives")
    escalated_by: list[str] = Field(description="codes of the rules that raised the tier; [] when none")
    value_tier: Literal["high", "medium", "low"] | None = Field(
        description="customer value tier (see GET /model); null when no value feature is known"
    )
    value_score: float | None = Field(description="0..1 weighted value percentile among customers")
    priority: int = Field(ge=1, description="from the alert tier x value tier matrix; 1 is called first")
    reasons: list[Reason] | None = Field(
        description="top drivers by absolute impact; null when explain=false"
    )
    group_scores: dict[str, int] | None = Field(
        description="0-100 health each signal group alone would give (other groups at their average effect)"
    )
    flags: list[Flag]
    model_version: str


class BatchPrediction(BaseModel):
    model_version: str
    count: int
    results: list[Prediction] = Field(description="one result per customer, in input order")
