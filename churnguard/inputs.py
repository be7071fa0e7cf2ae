"""What an input may be: the checks every scoring path runs, from the model's feature schema.

The HTTP service (JSON, Parquet, CSV), the offline `churnguard score` command, the daily pass and the
monitors all check inputs here, so a customer is accepted or refused the same way wherever they are
scored. Errors name the field and, in a batch or file, the row.

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
  must be scored and seen by the drift monitor, not refused; only implausible values are refused.
  Tenure (`kind: tenure`) and a date column read as days-since or age (`kind: days_since`,
  `age_years`) have no upper bound and no flag above their training range: they count from a fixed
  date to the moment scored, so every customer who stays outgrows them;
- an unseen category is scored (CatBoost treats it as rare) and flagged `unknown_category`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnguard.config import UsageError
from churnguard.explain import MISSING_CATEGORY
from churnguard.schema import ID_COLUMN, FeatureSchema, FeatureSpec

DEFAULT_RANGE_TOLERANCE = 3.0
MAX_ID_LENGTH = 256
MAX_CATEGORY_LENGTH = 256  # categories are echoed and logged: a megabyte of one is an attack, not a value
MAX_REPORTED_ERRORS = 50  # per request; files list every bad row in their error report


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


# Counted from a fixed date to the moment scored: these outgrow the training range by themselves.
GROWS_WITH_TIME = frozenset({"tenure", "days_since", "age_years"})


@dataclass(frozen=True)
class AcceptedRange:
    low: float
    high: float
    train_min: float
    train_max: float
    flag_above: float  # values above this are flagged `outside_training_range`

    @classmethod
    def for_spec(cls, spec: FeatureSpec, tolerance: float) -> AcceptedRange | None:
        if spec.categorical or spec.min is None or spec.max is None:
            return None
        span = spec.max - spec.min or max(abs(spec.max), 1.0)
        low, high = spec.min - tolerance * span, spec.max + tolerance * span
        if spec.min >= 0:
            low = max(low, 0.0)
        if spec.kind in GROWS_WITH_TIME:
            # Tenure, days since a date and an age grow past anything training saw for every customer who
            # stays: above the range is the normal course of time, neither refused nor flagged (half of
            # CDNOW's test rows were, on tenure).
            return cls(low, math.inf, spec.min, spec.max, math.inf)
        return cls(low, high, spec.min, spec.max, spec.max)

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
            elif number < accepted.train_min or number > accepted.flag_above:
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
        # Numbers go straight into one column-major block: a frame built from separate columns copies
        # every one of them twice (stacking, then consolidating): most of scoring a file.
        numeric_names = [spec.name for spec in self.specs if not spec.categorical]
        block = np.empty((rows, len(numeric_names)), dtype=np.float64, order="F")
        block_column = {name: j for j, name in enumerate(numeric_names)}
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
                        beyond = (numbers < accepted.train_min) | (numbers > accepted.flag_above)
                    beyond &= ~outside & ~infinite
                    if beyond.any():
                        flag_codes.append((beyond, {"code": "outside_training_range", "field": spec.name}))
                block[:, block_column[spec.name]] = numbers
        # A list of its own only for a row with flags: most rows share the one empty list.
        flags: list[list[dict]] = [_NO_FLAGS] * rows
        for mask, flag in flag_codes:
            for position in np.flatnonzero(mask).tolist():
                if flags[position] is _NO_FLAGS:
                    flags[position] = [flag]
                else:
                    flags[position].append(flag)
        errors.sort(key=lambda error: error.row if error.row is not None else -1)
        coerced = pd.DataFrame(block, index=pd.RangeIndex(rows), columns=numeric_names, copy=False)
        for position, spec in enumerate(self.specs):  # categories into their schema places, in order
            if spec.categorical:
                coerced.insert(position, spec.name, features[spec.name])
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
