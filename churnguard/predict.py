"""The one scoring path: checked inputs in, prediction-contract results out.

The HTTP service, the offline `churnguard score` command and the monitors all score through
`Predictor`, so a customer gets the same probability, health, tier and reasons wherever they are
scored. The HTTP layer parses requests into records or frames; everything about what an input may be
(types, missing values, ranges, categories) is decided here, from the model's feature schema.

Input rules (the same for JSON, Parquet, CSV and files):
- every feature of the schema and `customer_id` must be present; unknown fields are errors (files
  scored offline may carry extra columns, which are ignored);
- numeric features take numbers (not booleans, not text); categorical features take text, and
  integers are read as their decimal text (codes such as 0/1);
- a missing value (JSON null, empty CSV cell, NaN) is accepted only for features that had missing
  values in training (`FeatureSpec.nullable`); infinities never are;
- a numeric value must lie in the accepted range: the training range [min, max] widened by
  `range_tolerance` (default 3) times its span on each side, and never below 0 for a feature that was
  never negative in training. Values outside the training range but inside the accepted range are
  scored and flagged `outside_training_range`. The margin is wide on purpose: recency and counts
  grow past anything seen in training as soon as a customer's history is longer, and such customers
  must be scored and seen by the drift monitor, not refused; only implausible values are refused;
- an unseen category is scored (CatBoost treats it as rare) and flagged `unknown_category`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import Pool

from churnguard.artifact import ModelArtifact
from churnguard.config import UsageError
from churnguard.explain import MISSING_CATEGORY, Explanations, ReasonBuilder, ReferenceRanks, ShapExplainer
from churnguard.history import ScoreHistory
from churnguard.rules import Language, RuleBook, RuleHits
from churnguard.schema import ID_COLUMN, FeatureSchema, FeatureSpec
from churnguard.scoring import ScoringConfig, load_scoring_config
from churnguard.value import ValueAssessment, ValueModel

log = logging.getLogger(__name__)

DEFAULT_RANGE_TOLERANCE = 3.0
MAX_ID_LENGTH = 256
MAX_CATEGORY_LENGTH = 256  # categories are echoed and logged: a megabyte of one is an attack, not a value
MAX_REPORTED_ERRORS = 50  # per request; files list every bad row in their error report
PARALLEL_ROWS = 2_000  # below this many rows CatBoost scores on one thread
RESULT_COLUMNS = (
    "customer_id", "churn_probability", "health_score", "alert_tier", "model_tier", "escalated_by",
    "value_tier", "value_score", "priority", "model_version",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FieldError:
    """One problem with one input: the field and, in a batch or file, the row."""

    field: str
    message: str
    row: int | None = None  # position in a request batch (0-based) or data row in a file (1-based)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.row is not None:
            out["row"] = self.row
        return out

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row is not None else ""
        return f"{where}{self.field}: {self.message}"


class InputError(UsageError):
    """Inputs that cannot be scored; `errors` names every field (and row) found wrong."""

    def __init__(self, errors: Sequence[FieldError], total: int | None = None) -> None:
        self.errors = list(errors)
        self.total = total if total is not None else len(self.errors)
        shown = "; ".join(str(error) for error in self.errors[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{self.total} invalid input value(s): {shown}{more}")


# ----------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class AcceptedRange:
    low: float
    high: float
    train_min: float
    train_max: float

    @classmethod
    def for_spec(cls, spec: FeatureSpec, tolerance: float) -> AcceptedRange | None:
        if spec.categorical or spec.min is None or spec.max is None:
            return None
        span = spec.max - spec.min or max(abs(spec.max), 1.0)
        low, high = spec.min - tolerance * span, spec.max + tolerance * span
        if spec.min >= 0:
            low = max(low, 0.0)
        return cls(low, high, spec.min, spec.max)

    def describe(self) -> str:
        training = f"[{_fmt(self.train_min)}, {_fmt(self.train_max)}]"
        return f"[{_fmt(self.low)}, {_fmt(self.high)}] (training range {training})"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _type_name(value: object) -> str:
    return {bool: "a boolean", str: "text", dict: "an object", list: "a list"}.get(
        type(value), type(value).__name__
    )


class InputRules:
    """What a customer's inputs may be, derived from the model's feature schema (module docstring)."""

    def __init__(self, schema: FeatureSchema, range_tolerance: float = DEFAULT_RANGE_TOLERANCE) -> None:
        self.schema = schema
        self.tolerance = range_tolerance
        self.specs = schema.features
        self.names = schema.names
        self.ranges = {spec.name: AcceptedRange.for_spec(spec, range_tolerance) for spec in self.specs}
        self.categories = {
            spec.name: frozenset(spec.categories) if spec.categories is not None else None
            for spec in self.specs
            if spec.categorical
        }
        self.allowed_fields = frozenset([ID_COLUMN, *self.names])

    # -------------------------------------------------------------------------------- one record

    def check_record(
        self, record: Mapping[str, object], row: int | None = None
    ) -> tuple[list[object], str, list[dict], list[FieldError]]:
        """(values in schema order as scored, customer_id, flags, errors) for one JSON-like record."""
        errors: list[FieldError] = []
        flags: list[dict] = []
        customer_id = self._customer_id(record.get(ID_COLUMN, _ABSENT), row, errors)
        values: list[object] = []
        for spec in self.specs:
            value = record.get(spec.name, _ABSENT)
            if value is _ABSENT:
                errors.append(FieldError(spec.name, "missing field", row))
                values.append(None)
                continue
            if spec.categorical:
                values.append(self._category(spec, value, row, errors, flags))
            else:
                values.append(self._number(spec, value, row, errors, flags))
        if errors or len(record) != len(values) + 1:
            for name in record:
                if name not in self.allowed_fields:
                    errors.append(FieldError(str(name), "unknown field", row))
        return values, customer_id, flags, errors

    def _customer_id(self, value: object, row: int | None, errors: list[FieldError]) -> str:
        if value is _ABSENT:
            errors.append(FieldError(ID_COLUMN, "missing field", row))
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            errors.append(FieldError(ID_COLUMN, f"expected text, got {_type_name(value)}", row))
            return ""
        text = str(value)
        if not text or len(text) > MAX_ID_LENGTH:
            errors.append(FieldError(ID_COLUMN, f"must be 1 to {MAX_ID_LENGTH} characters", row))
        return text

    def _category(
        self, spec: FeatureSpec, value: object, row: int | None, errors: list[FieldError], flags: list[dict]
    ) -> str:
        if value is None:
            if not spec.nullable:
                errors.append(
                    FieldError(spec.name, "must not be null (it was never missing in training)", row)
                )
            return MISSING_CATEGORY
        if isinstance(value, bool) or not isinstance(value, str | int):
            errors.append(FieldError(spec.name, f"expected text, got {_type_name(value)}", row))
            return MISSING_CATEGORY
        text = str(value)
        if len(text) > MAX_CATEGORY_LENGTH:
            errors.append(FieldError(spec.name, f"must be at most {MAX_CATEGORY_LENGTH} characters", row))
            return MISSING_CATEGORY
        known = self.categories.get(spec.name)
        if known is not None and text not in known:
            flags.append({"code": "unknown_category", "field": spec.name})
        return text

    def _number(
        self, spec: FeatureSpec, value: object, row: int | None, errors: list[FieldError], flags: list[dict]
    ) -> float:
        if value is None:
            if not spec.nullable:
                errors.append(
                    FieldError(spec.name, "must not be null (it was never missing in training)", row)
                )
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(FieldError(spec.name, f"expected a number, got {_type_name(value)}", row))
            return math.nan
        number = float(value)
        if math.isnan(number):
            if not spec.nullable:
                errors.append(
                    FieldError(spec.name, "must not be NaN (it was never missing in training)", row)
                )
            return number
        accepted = self.ranges[spec.name]
        if not math.isfinite(number):
            errors.append(FieldError(spec.name, "must be finite", row))
        elif accepted is not None:
            if number < accepted.low or number > accepted.high:
                errors.append(
                    FieldError(
                        spec.name, f"{_fmt(number)} is outside the accepted range {accepted.describe()}", row
                    )
                )
            elif number < accepted.train_min or number > accepted.train_max:
                flags.append({"code": "outside_training_range", "field": spec.name})
        return number

    # ------------------------------------------------------------------------------------ frames

    def check_frame(self, frame: pd.DataFrame, first_row: int = 0, allow_extra: bool = False) -> CheckedFrame:
        """Vectorised checks of a frame (Parquet, CSV or columns); rows are numbered from `first_row`."""
        missing = [name for name in (ID_COLUMN, *self.names) if name not in frame.columns]
        if missing:
            raise InputError([FieldError(name, "missing column") for name in missing])
        if not allow_extra:
            extra = [str(name) for name in frame.columns if name not in self.allowed_fields]
            if extra:
                raise InputError([FieldError(name, "unknown column") for name in extra])
        rows = len(frame)
        row_numbers = np.arange(first_row, first_row + rows)
        bad = np.zeros(rows, dtype=bool)
        errors: list[FieldError] = []
        flag_codes: list[tuple[np.ndarray, dict]] = []

        def fail(mask: np.ndarray, name: str, message: str | Sequence[str]) -> None:
            nonlocal bad
            positions = np.flatnonzero(mask)
            if not positions.size:
                return
            bad |= mask
            for k, position in enumerate(positions.tolist()):
                text = message if isinstance(message, str) else message[k]
                errors.append(FieldError(name, text, int(row_numbers[position])))

        customer_ids, not_an_id = _id_column(frame[ID_COLUMN])
        fail(not_an_id, ID_COLUMN, "missing or not an id (text or integer)")
        lengths = np.fromiter(map(len, customer_ids), dtype=np.int64, count=rows)
        fail((lengths > MAX_ID_LENGTH) & ~not_an_id, ID_COLUMN, f"must be 1 to {MAX_ID_LENGTH} characters")

        features: dict[str, object] = {}
        for spec in self.specs:
            column = frame[spec.name]
            if spec.categorical:
                categories, codes, wrong = _category_codes(column)
                missing_mask = codes == -1
                fail(wrong, spec.name, "expected text")
                too_long = [code for code, text in enumerate(categories) if len(text) > MAX_CATEGORY_LENGTH]
                if too_long:
                    long_rows = np.isin(codes, too_long)
                    fail(long_rows, spec.name, f"must be at most {MAX_CATEGORY_LENGTH} characters")
                    wrong = wrong | long_rows
                if not spec.nullable:
                    fail(missing_mask, spec.name, "must not be missing (it was never missing in training)")
                known = self.categories.get(spec.name)
                if known is not None:
                    unseen = [position for position, value in enumerate(categories) if value not in known]
                    unknown = (np.isin(codes, unseen) & ~wrong) if unseen else np.zeros(rows, dtype=bool)
                    if unknown.any():
                        flag_codes.append((unknown, {"code": "unknown_category", "field": spec.name}))
                features[spec.name] = _scored_categories(categories, codes, wrong)
            else:
                numbers, wrong, shown = _number_column(column)
                fail(wrong, spec.name, [f"expected a number, got {value!r}" for value in shown])
                missing_mask = np.isnan(numbers) & ~wrong
                if not spec.nullable:
                    fail(missing_mask, spec.name, "must not be missing (it was never missing in training)")
                infinite = np.isinf(numbers)
                fail(infinite, spec.name, "must be finite")
                accepted = self.ranges[spec.name]
                if accepted is not None:
                    with np.errstate(invalid="ignore"):
                        outside = ((numbers < accepted.low) | (numbers > accepted.high)) & ~infinite
                        fail(
                            outside,
                            spec.name,
                            [
                                f"{_fmt(value)} is outside the accepted range {accepted.describe()}"
                                for value in numbers[outside].tolist()
                            ],
                        )
                        beyond = (numbers < accepted.train_min) | (numbers > accepted.train_max)
                    beyond &= ~outside & ~infinite
                    if beyond.any():
                        flag_codes.append((beyond, {"code": "outside_training_range", "field": spec.name}))
                features[spec.name] = numbers
        flags: list[list[dict]] = [[] for _ in range(rows)] if flag_codes else [_NO_FLAGS] * rows
        for mask, flag in flag_codes:
            for position in np.flatnonzero(mask).tolist():
                flags[position].append(flag)
        errors.sort(key=lambda error: error.row if error.row is not None else -1)
        coerced = pd.DataFrame(features, index=pd.RangeIndex(rows), columns=self.names)
        return CheckedFrame(coerced, customer_ids, row_numbers, ~bad, errors, flags)


_ABSENT = object()
_NO_FLAGS: list[dict] = []


def _id_column(column: pd.Series) -> tuple[list[str], np.ndarray]:
    """(ids as text, not-an-id mask): text and integers are ids; missing, empty and anything else not."""
    values = column.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string":
        ids = values.tolist()
        return ids, np.array([not value for value in ids], dtype=bool)
    if kind == "integer":
        return [str(value) for value in values.tolist()], np.zeros(len(values), dtype=bool)
    ids, wrong = [], np.zeros(len(values), dtype=bool)
    for position, value in enumerate(values.tolist()):
        text = _id_text(value)
        wrong[position] = text is None
        ids.append(text or "")
    return ids, wrong


def _id_text(value: object) -> str | None:
    if value is None or isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else None
    if isinstance(value, str | int | np.integer):
        return str(value) or None
    return None


class _NotAScalar:
    """Stands in for a list, dict or other object in a column, so the column can be hashed and the
    value reported as the wrong type instead of failing the whole request."""

    def __repr__(self) -> str:
        return "a non-scalar value"


_NOT_A_SCALAR = _NotAScalar()
_SCALARS = (str, int, float, bool, np.integer, np.floating, np.bool_, type(None))


def _scalars(values: np.ndarray) -> np.ndarray:
    if pd.api.types.infer_dtype(values, skipna=True) not in {"mixed", "unknown-array"}:
        return values
    return np.array([v if isinstance(v, _SCALARS) else _NOT_A_SCALAR for v in values.tolist()], dtype=object)


def _category_codes(column: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories as text, codes with -1 for missing, wrong-type mask) of a categorical column.

    Works on the distinct values only (pandas factorize), so a 10,000-row batch costs one hash
    pass; integers become their decimal text (codes such as 0/1), booleans and non-integral numbers
    are the wrong type."""
    rows = len(column)
    if pd.api.types.is_bool_dtype(column):
        return [], np.full(rows, -1), np.ones(rows, dtype=bool)
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = np.asarray(column.array.codes, dtype=np.int64)
        distinct = column.array.categories.tolist()
    else:
        # factorize, not a Categorical: the categories need no sorting (codes only index them).
        found, uniques = pd.factorize(_scalars(column.to_numpy(dtype=object)), use_na_sentinel=True)
        codes, distinct = np.asarray(found, dtype=np.int64), list(uniques)
    texts: list[str] = []
    bad: list[int] = []
    for position, value in enumerate(distinct):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            texts.append(str(value))
        elif isinstance(value, float | np.floating) and float(value).is_integer():
            texts.append(str(int(value)))
        else:
            texts.append("")
            bad.append(position)
    wrong = np.isin(codes, bad) if bad else np.zeros(rows, dtype=bool)
    if len(set(texts)) < len(texts):  # 1 and "1" are one category once read as text
        merged = sorted(set(texts))
        remap = np.array([merged.index(text) for text in texts] + [-1])
        codes = remap[codes]  # code -1 picks the trailing -1
        texts = merged
    return texts, codes, wrong


def _scored_categories(categories: list[str], codes: np.ndarray, wrong: np.ndarray) -> pd.Categorical:
    """The column CatBoost scores: a Categorical (it hashes each distinct value once), with missing
    and wrong values spelled as the schema's missing category."""
    if MISSING_CATEGORY in categories:
        missing_code = categories.index(MISSING_CATEGORY)
    else:
        categories = [*categories, MISSING_CATEGORY]
        missing_code = len(categories) - 1
    codes = np.where((codes == -1) | wrong, missing_code, codes)
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object), validate=False)


def _number_column(column: pd.Series) -> tuple[np.ndarray, np.ndarray, list[object]]:
    """(float64 values, wrong type mask, the wrong values) of a numeric column.

    Text (CSV cells) is parsed; blank text and "nan" mean missing, anything else unparseable is wrong."""
    rows = len(column)
    if (
        pd.api.types.is_bool_dtype(column)
        or pd.api.types.is_datetime64_any_dtype(column)
        or pd.api.types.is_timedelta64_dtype(column)
    ):
        return np.full(rows, np.nan), np.ones(rows, dtype=bool), column.astype(str).tolist()
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float, na_value=np.nan), np.zeros(rows, dtype=bool), []
    values = _scalars(column.to_numpy(dtype=object))
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in {"floating", "integer", "mixed-integer-float", "empty"}:
        return pd.to_numeric(column).to_numpy(dtype=float, na_value=np.nan), np.zeros(rows, dtype=bool), []
    # Object dtype even when no value is text: .str needs it, and timestamps would become NaT.
    text = pd.Series([v if isinstance(v, str) else None for v in values.tolist()], dtype=object)
    stripped = text.str.strip()
    blank = stripped.fillna("").eq("") | stripped.str.lower().eq("nan")
    candidates = pd.Series(values).where(~(text.notna() & blank), None)
    is_bool = candidates.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    numbers = pd.to_numeric(candidates.where(~is_bool, None), errors="coerce").to_numpy(dtype=float)
    wrong = (np.isnan(numbers) & candidates.notna().to_numpy()) | is_bool
    return numbers, wrong, values[wrong].tolist()


def _json_value(value: object) -> object:
    if value == MISSING_CATEGORY or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@dataclass
class CheckedFrame:
    """Inputs after the checks: coerced features (CatBoost-ready) and what was wrong, row by row."""

    features: pd.DataFrame  # schema order; numerics float64, categoricals text with missing spelled out
    customer_ids: list[str]
    row_numbers: np.ndarray
    valid: np.ndarray  # bool per row
    errors: list[FieldError]
    flags: list[list[dict]]

    def __len__(self) -> int:
        return len(self.customer_ids)

    def only_valid(self) -> CheckedFrame:
        if self.valid.all():
            return self
        keep = np.flatnonzero(self.valid)
        return CheckedFrame(
            self.features.iloc[keep].reset_index(drop=True),
            [self.customer_ids[i] for i in keep],
            self.row_numbers[keep],
            np.ones(len(keep), dtype=bool),
            [],
            [self.flags[i] for i in keep],
        )


# ---------------------------------------------------------------------------------------------- results


@dataclass
class ScoredBatch:
    """Results for a batch of customers, in input order (the prediction contract, column by column)."""

    model_version: str
    customer_ids: list[str]
    probability: np.ndarray
    health: np.ndarray
    tier: np.ndarray
    flags: list[list[dict]]
    feature_names: list[str]
    # What was scored, in schema order (missing categories spelled out): a frame for batches, plain
    # rows for single records (building a one-row frame would cost more than scoring it).
    features: pd.DataFrame | None = None
    feature_rows: list[list[object]] | None = None
    explanations: Explanations | None = None
    group_names: list[str] = field(default_factory=list)
    group_scores: np.ndarray | None = None  # (rows, groups)
    # Early warning: `tier` above is the alert tier after rule escalation; these say how it came about.
    model_tier: np.ndarray | None = None  # the tier the probability alone gives
    rule_hits: RuleHits | None = None
    value: ValueAssessment | None = None

    def __len__(self) -> int:
        return len(self.customer_ids)

    @functools.cached_property
    def reasons(self) -> list[list[dict]] | None:
        """Rule hits then the model's top drivers, per customer, in English (None without explanations)."""
        return self.reasons_in("en")

    def reasons_in(self, language: Language) -> list[list[dict]] | None:
        if self.explanations is None:
            return None
        drivers = self.explanations.dicts(language)
        if self.rule_hits is None:
            return drivers
        return [rules + row for rules, row in zip(self.rule_hits.reasons(language), drivers, strict=True)]

    def escalated_by(self) -> list[list[str]]:
        return (
            self.rule_hits.escalated_by() if self.rule_hits is not None else [[] for _ in self.customer_ids]
        )

    def results(self, language: Language = "en") -> list[dict]:
        """One prediction-contract dict per customer (the service encodes the same documents
        column-wise: service.payloads)."""
        rows = len(self)
        reasons = groups = None
        if self.explanations is not None:
            reasons = self.reasons if language == "en" else self.reasons_in(language)
            names = self.group_names
            groups = [dict(zip(names, g, strict=True)) for g in self.group_scores.tolist()]  # type: ignore[union-attr]
        version = self.model_version
        model_tier = self.model_tier if self.model_tier is not None else self.tier
        value = self.value
        value_tier = value.tier.tolist() if value is not None else [None] * rows
        value_score = (
            [None if math.isnan(v) else v for v in value.score.tolist()]
            if value is not None
            else [None] * rows
        )
        priority = value.priority.tolist() if value is not None else [None] * rows
        return [
            {
                "customer_id": customer_id,
                "churn_probability": p,
                "health_score": h,
                "alert_tier": t,
                "model_tier": mt,
                "escalated_by": e,
                "value_tier": vt,
                "value_score": vs,
                "priority": pr,
                "reasons": r,
                "group_scores": g,
                "flags": f,
                "model_version": version,
            }
            for customer_id, p, h, t, mt, e, vt, vs, pr, r, g, f in zip(
                self.customer_ids,
                self.probability.tolist(),
                self.health.tolist(),
                self.tier.tolist(),
                model_tier.tolist(),
                self.escalated_by(),
                value_tier,
                value_score,
                priority,
                reasons if reasons is not None else [None] * rows,
                groups if groups is not None else [None] * rows,
                self.flags,
                strict=True,
            )
        ]

    def input_records(self) -> list[dict]:
        """What was scored, per customer, as JSON-ready dicts (missing values as null)."""
        if self.feature_rows is not None:
            rows = self.feature_rows
        elif self.features is not None:
            rows = self.features.to_numpy(dtype=object).tolist()
        else:
            return [{} for _ in self.customer_ids]
        names = self.feature_names
        return [dict(zip(names, map(_json_value, row), strict=True)) for row in rows]

    def to_frame(self, explain_columns: bool = True, language: Language = "en") -> pd.DataFrame:
        """Results as a frame: the contract's columns, reasons/flags as JSON text, one column per group."""
        out = pd.DataFrame(
            {
                "customer_id": self.customer_ids,
                "churn_probability": self.probability,
                "health_score": self.health.astype("int64"),
                "alert_tier": self.tier.astype(object),
                "model_tier": (self.model_tier if self.model_tier is not None else self.tier).astype(object),
                "escalated_by": [json.dumps(codes) if codes else None for codes in self.escalated_by()],
                "value_tier": self.value.tier if self.value is not None else None,
                "value_score": self.value.score if self.value is not None else np.nan,
                "priority": self.value.priority if self.value is not None else None,
                "model_version": self.model_version,
            }
        )
        if explain_columns and self.reasons is not None and self.group_scores is not None:
            reasons = self.reasons if language == "en" else self.reasons_in(language)
            out["reasons"] = [json.dumps(r, ensure_ascii=False) for r in reasons]  # type: ignore[union-attr]
            for column, name in enumerate(self.group_names):
                out[f"group_score_{name}"] = self.group_scores[:, column].astype("int64")
        out["flags"] = [json.dumps(f) if f else None for f in self.flags]
        return out


# --------------------------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded model that scores checked inputs: probability, health, tier, reasons, group scores."""

    def __init__(
        self,
        artifact: ModelArtifact,
        model_version: str,
        *,
        top_reasons: int = 3,
        range_tolerance: float = DEFAULT_RANGE_TOLERANCE,
        thread_count: int = -1,
        scoring: ScoringConfig | None = None,
    ) -> None:
        """`scoring`: the early-warning rules and value weights (default: configs/scoring.yaml)."""
        scoring = scoring if scoring is not None else load_scoring_config()
        self.artifact = artifact
        self.model_version = str(model_version)
        self.schema = artifact.schema
        self.contract = artifact.contract
        self.thread_count = thread_count
        self.rules = InputRules(self.schema, range_tolerance)
        self.cat_indices = [i for i, spec in enumerate(self.schema.features) if spec.categorical]
        reference = self.rules.check_frame(_reference_frame(artifact), allow_extra=True).only_valid()
        self.explainer = ShapExplainer(artifact.model, self.cat_indices, thread_count).prepare(
            reference.features
        )
        self.reasons = ReasonBuilder(
            self.schema,
            top_reasons,
            self.explainer.expected_value,
            self.health_from_raw,
            ReferenceRanks.from_frame(self.schema, artifact.reference),
        )
        self.rule_book = RuleBook(scoring.rules, scoring.escalation, self.schema)
        self.value_model = ValueModel(scoring.value, self.schema, artifact.reference)
        self._position = {name: j for j, name in enumerate(self.schema.names)}

    @classmethod
    def load(cls, directory: Path, model_version: str, **options: object) -> Predictor:
        """Load and check an artifact folder (raises churnguard.artifact.ContractError)."""
        return cls(ModelArtifact.load(Path(directory)), model_version, **options)  # type: ignore[arg-type]

    @property
    def explain_method(self) -> str:
        return self.explainer.method

    # ------------------------------------------------------------------------------ probability

    def probability_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.contract.calibration.apply(1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=float))))

    def health_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.artifact.health(self.probability_from_raw(raw))

    # ---------------------------------------------------------------------------------- scoring

    def score_record(
        self, record: Mapping[str, object], explain: bool = True, history: ScoreHistory | None = None
    ) -> ScoredBatch:
        """One customer from a JSON-like record (the fast single-request path); raises InputError.

        `history`: past health scores for history rules (none given: those rules cannot fire)."""
        values, customer_id, flags, errors = self.rules.check_record(record)
        if errors:
            raise InputError(errors)
        # An array is cheaper than a list; one thread: a pool of one row has nothing to share out.
        pool = Pool(np.array([values], dtype=object), cat_features=self.cat_indices, thread_count=1)
        batch = self._score_pool(pool, [customer_id], [flags], lambda j: [values[j]], explain, history)
        batch.feature_rows = [values]
        return batch

    def score_frame(
        self,
        frame: pd.DataFrame,
        explain: bool = True,
        allow_extra: bool = False,
        history: ScoreHistory | None = None,
    ) -> ScoredBatch:
        """Score a whole frame; raises InputError naming every bad row (0-based) and field."""
        checked = self.rules.check_frame(frame, allow_extra=allow_extra)
        if checked.errors:
            raise InputError(checked.errors[:MAX_REPORTED_ERRORS], total=len(checked.errors))
        return self.score_checked(checked, explain, history)

    def score_checked(
        self, checked: CheckedFrame, explain: bool = True, history: ScoreHistory | None = None
    ) -> ScoredBatch:
        """Score the valid rows of a checked frame (the caller decides what to do with the others)."""
        checked = checked.only_valid()
        features = checked.features
        pool = Pool(features, cat_features=self.cat_indices)
        names = self.schema.names
        batch = self._score_pool(
            pool,
            checked.customer_ids,
            checked.flags,
            lambda j: features[names[j]].to_numpy(dtype=object),
            explain,
            history,
            numbers=lambda name: features[name].to_numpy(dtype=float),  # float64 already: no copy
        )
        batch.features = features
        return batch

    def _threads(self, rows: int) -> int:
        # Spinning up CatBoost's thread pool costs more than a small batch takes on one thread.
        return 1 if rows < PARALLEL_ROWS else self.thread_count

    def _score_pool(
        self,
        pool: Pool,
        customer_ids: list[str],
        flags: list[list[dict]],
        column: Callable[[int], Sequence[object]],
        explain: bool,
        history: ScoreHistory | None = None,
        numbers: Callable[[str], np.ndarray] | None = None,
    ) -> ScoredBatch:
        """`column(j)`: feature j's values as scored, for reasons; `numbers(name)`: a numeric feature's
        values as floats, for rules and value (default: from `column`)."""
        threads = self._threads(len(customer_ids))
        if explain:
            raw, contributions = self.explainer.explain(pool, threads)
        else:
            raw, contributions = self.explainer.raw(pool, len(customer_ids), threads), None
        probability = self.probability_from_raw(raw)
        health = self.artifact.health(probability)
        model_tier = self.artifact.tiers(probability)

        if numbers is None:
            position = self._position
            numbers = lambda name: np.asarray(column(position[name]), dtype=float)  # noqa: E731

        past = None
        if history is not None:
            past = lambda window, rows: history.reference_health([customer_ids[i] for i in rows], window)  # noqa: E731
        hits = self.rule_book.evaluate(numbers, health, model_tier, past)
        batch = ScoredBatch(
            model_version=self.model_version,
            customer_ids=customer_ids,
            probability=probability,
            health=health,
            tier=hits.tier,
            flags=flags,
            feature_names=self.schema.names,
            model_tier=model_tier,
            rule_hits=hits,
            value=self.value_model.assess(numbers, hits.tier),
        )
        if contributions is not None:
            batch.explanations = self.reasons.explain(contributions, column)
            batch.group_names = self.reasons.group_names
            batch.group_scores = self.reasons.group_scores(contributions)
        return batch

    def warm_up(self) -> None:
        """Score a few reference rows so the first real request does not pay one-off costs."""
        sample = self.rules.check_frame(
            _reference_frame(self.artifact).head(8), allow_extra=True
        ).only_valid()
        if len(sample):
            self.score_checked(sample, explain=True)
            self.score_checked(sample, explain=False)

    def metadata(self) -> dict[str, object]:
        """What the service says about the model it serves."""
        contract = self.contract
        return {
            "model_name": contract.model_name,
            "model_version": self.model_version,
            "created_at": contract.created_at,
            "dataset": contract.dataset,
            "dataset_kind": contract.dataset_kind,
            "dataset_hash": contract.dataset_hash,
            "horizon_days": contract.horizon_days,
            "training_window": contract.training_window,
            "metrics": contract.metrics,
            "thresholds": contract.thresholds.model_dump(),
            "health_mapping": contract.health.model_dump(),
            "calibration": contract.calibration.method,
            "code_version": contract.code_version,
            "explain_method": self.explain_method,
            "reasons_top": self.reasons.top,
            "rules": self.rule_book.describe(),
            "value": self.value_model.describe(),
            "range_tolerance": self.rules.tolerance,
            "feature_schema": [
                {
                    **spec.model_dump(),
                    "accepted_range": (
                        [accepted.low, accepted.high]
                        if (accepted := self.rules.ranges.get(spec.name))
                        else None
                    ),
                }
                for spec in self.schema.features
            ],
        }


def _reference_frame(artifact: ModelArtifact) -> pd.DataFrame:
    reference = artifact.reference
    frame = reference[[name for name in artifact.schema.names if name in reference.columns]].copy()
    frame[ID_COLUMN] = (
        reference[ID_COLUMN].astype(str)
        if ID_COLUMN in reference.columns
        else [str(i) for i in range(len(frame))]
    )
    return frame


# ------------------------------------------------------------------------------------------ offline scoring


@dataclass
class ScoreSummary:
    model_uri: str
    model_version: str
    input_path: Path
    output_path: Path
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    errors_path: Path | None = None
    tiers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def format(self) -> str:
        rate = self.rows_scored / self.seconds if self.seconds else 0.0
        lines = [
            f"scored {self.rows_scored:,} of {self.rows_read:,} rows with model version {self.model_version} "
            f"into {self.output_path} ({self.seconds:.1f}s, {rate:,.0f} rows/s)",
            "  tiers: " + ", ".join(f"{tier} {count:,}" for tier, count in sorted(self.tiers.items())),
        ]
        if self.rows_rejected:
            lines.append(
                f"  {self.rows_rejected:,} rows could not be scored; each is listed in {self.errors_path}"
            )
        return "\n".join(lines)


def arrow_to_frame(table: object, categorical: Sequence[str]) -> pd.DataFrame:
    """An Arrow table as a frame, text categoricals as pandas Categoricals (hashed once per value)."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    for name in categorical:
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                table = table.set_column(table.column_names.index(name), name, column.dictionary_encode())
    try:
        return table.to_pandas()
    except (KeyError, TypeError, ValueError):  # corrupt pandas metadata: the columns themselves still read
        return table.replace_schema_metadata(None).to_pandas()


def csv_options(categorical: Sequence[str]) -> dict[str, object]:
    """pandas.read_csv options: every cell as text (a bad cell is reported for its row), categoricals
    as Categoricals, and only empty cells missing."""
    from collections import defaultdict

    dtypes: defaultdict[str, str] = defaultdict(lambda: "str")
    dtypes.update(dict.fromkeys(categorical, "category"))
    return {"dtype": dtypes, "keep_default_na": False, "na_values": [""], "low_memory": False}


def read_chunks(path: Path, chunk_rows: int, categorical: Sequence[str]) -> Iterator[pd.DataFrame]:
    """Stream a Parquet or CSV file in chunks (see `csv_options` for how CSV cells are read)."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield arrow_to_frame(pa.Table.from_batches([batch]), categorical)
    elif suffix in {".csv", ".txt"} or suffix.endswith(".gz"):
        yield from pd.read_csv(path, chunksize=chunk_rows, **csv_options(categorical))  # type: ignore[call-overload]
    else:
        raise ValueError(f"{path}: unsupported input format '{suffix}' (use .parquet or .csv)")


def count_rows(path: Path) -> int | None:
    if path.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


class _ResultWriter:
    """Appends result chunks to Parquet or CSV, chosen by the output file's suffix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parquet = path.suffix.lower() in {".parquet", ".pq"}
        if not self.parquet and path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: unsupported output format '{path.suffix}' (use .parquet or .csv)")
        self._writer = None
        self._schema = None
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema)
            if self._writer is None:
                self._schema = table.schema
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
        else:
            frame.to_csv(self.path, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def score_file(
    model_uri: str,
    input_path: Path,
    output_path: Path,
    chunk_rows: int = 100_000,
    explain: bool = False,
) -> ScoreSummary:
    """Score a Parquet or CSV file of customers in chunks; same results as the service.

    Rows that fail the input rules are not scored and not dropped silently: each one is written to
    `<output>.errors.csv` with its data row number (1-based), field and message. The output keeps a
    `row_number` column so results join back to the input. Extra input columns are ignored.
    """
    from tqdm import tqdm

    from churnguard.tracking import resolve_model

    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ValueError(f"{input_path}: input file not found")
    resolved = resolve_model(model_uri)
    predictor = Predictor.load(resolved.local_dir, resolved.version)
    summary = ScoreSummary(model_uri, predictor.model_version, input_path, output_path)
    errors_path = output_path.with_name(output_path.name + ".errors.csv")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    writer = _ResultWriter(output_path)
    error_rows: list[dict] = []
    error_header = True
    tiers: dict[str, int] = {}
    progress = tqdm(total=count_rows(input_path), unit="rows", desc="scoring", disable=None)
    try:
        first_row = 1
        for chunk in read_chunks(input_path, chunk_rows, predictor.schema.categorical_names):
            checked = predictor.rules.check_frame(
                chunk.reset_index(drop=True), first_row=first_row, allow_extra=True
            )
            first_row += len(chunk)
            summary.rows_read += len(chunk)
            if checked.errors:
                summary.rows_rejected += int((~checked.valid).sum())
                ids = dict(zip(checked.row_numbers.tolist(), checked.customer_ids, strict=True))
                error_rows.extend(
                    {
                        "row_number": e.row,
                        "customer_id": ids.get(e.row, ""),
                        "field": e.field,
                        "message": e.message,
                    }
                    for e in checked.errors
                )
            valid = checked.only_valid()
            if len(valid):
                batch = predictor.score_checked(valid, explain=explain)
                frame = batch.to_frame(explain_columns=explain)
                frame.insert(0, "row_number", valid.row_numbers)
                writer.write(frame)
                summary.rows_scored += len(batch)
                for tier, count in zip(*np.unique(batch.tier, return_counts=True), strict=True):
                    tiers[str(tier)] = tiers.get(str(tier), 0) + int(count)
            if error_rows:
                pd.DataFrame(error_rows).to_csv(
                    errors_path, mode="w" if error_header else "a", header=error_header, index=False
                )
                error_header = False
                error_rows = []
            progress.update(len(chunk))
    finally:
        progress.close()
        writer.close()
    if summary.rows_scored == 0 and summary.rows_read == 0:
        log.warning("%s: no rows to score", input_path)
    summary.errors_path = errors_path if summary.rows_rejected else None
    if not summary.rows_rejected and errors_path.exists():
        errors_path.unlink()
    summary.tiers = tiers
    summary.seconds = time.perf_counter() - started
    log.info(summary.format())
    return summary
