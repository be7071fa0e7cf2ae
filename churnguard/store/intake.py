"""Raw CRM records coming in: events and customers, checked before anything is stored.

A batch is checked whole. Every bad row is named by its position (0-based, as in prediction
batches) and field, and a batch with any bad row is refused whole, so the caller can fix and resend
it without wondering which half arrived. Event types the dataset does not know are not an error:
they are stored and counted (a new signal the CRM starts sending is data, not a mistake).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from churnguard.inputs import MAX_ID_LENGTH, FieldError, InputError
from churnguard.schema import ID_COLUMN

EVENT_ID = "event_id"
TIMESTAMP = "timestamp"
TYPE = "type"
VALUE = "value"
EVENT_COLUMNS = (EVENT_ID, ID_COLUMN, TIMESTAMP, TYPE, VALUE)
# A CRM's clock may run a little ahead of ours; beyond this, a timestamp is a mistake, not skew.
MAX_FUTURE = pd.Timedelta(hours=1)
MAX_TYPE_LENGTH = 64
# Customer attributes with a meaning of their own; any other key is a static attribute (segment, plan...).
SIGNUP = "signup_date"
CHURN = "churn_date"
DATE_ATTRIBUTES = (SIGNUP, CHURN, "contract_start", "contract_end", "renewal_date")


@dataclass
class EventBatch:
    """Checked events, ready to store: ids as text, timestamps as int64 nanoseconds (UTC)."""

    frame: pd.DataFrame  # event_id, customer_id, ts (int64 ns), type, value (float64, NaN = none)
    unknown_types: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


def utc_nanoseconds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """int64 ns since the epoch (UTC) and a mask of values that are not a readable time.

    Text is read as ISO 8601; an offset is honoured, no offset means UTC. Native timestamps are taken
    as they are (timezone-naive ones as UTC)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        text = values.astype("string").str.strip()
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]")
    bad = parsed.isna().to_numpy()
    return parsed.to_numpy().view(np.int64), bad


def _text(values: pd.Series) -> pd.Series:
    """Non-empty text, or <NA>: numbers are accepted as ids (a CSV reader makes them numbers)."""
    text = values.astype("string").str.strip()
    return text.where(text != "")


def check_events(
    frame: pd.DataFrame,
    known_types: set[str] | None = None,
    now: datetime | None = None,
    text_numbers: bool = False,
) -> EventBatch:
    """Check a batch of raw events; raises InputError naming every bad row and field.

    `known_types`: the event types the model reads (others are counted in `unknown_types`);
    `text_numbers`: values may be numbers written as text (CSV)."""
    missing = [column for column in EVENT_COLUMNS if column != VALUE and column not in frame.columns]
    extra = [column for column in frame.columns if column not in EVENT_COLUMNS]
    errors = [FieldError(column, "missing field in every event") for column in missing]
    errors += [FieldError(column, f"unknown field; events have {list(EVENT_COLUMNS)}") for column in extra]
    if errors:
        raise InputError(errors)
    if frame.empty:
        raise InputError([FieldError("events", "must hold at least one event")])
    frame = frame.reset_index(drop=True)
    problems: list[tuple[np.ndarray, str, str]] = []

    event_ids = _text(frame[EVENT_ID])
    problems.append((event_ids.isna().to_numpy(), EVENT_ID, "missing: every event needs its own id"))
    long_ids = event_ids.str.len().fillna(0).to_numpy() > MAX_ID_LENGTH
    problems.append((long_ids, EVENT_ID, f"longer than {MAX_ID_LENGTH} characters"))
    customers = _text(frame[ID_COLUMN])
    repeated = pd.DataFrame({"c": customers, "e": event_ids}).duplicated(keep="first").to_numpy()
    repeated &= event_ids.notna().to_numpy()
    problems.append((repeated, EVENT_ID, "the same customer's event_id twice in one batch"))
    problems.append((customers.isna().to_numpy(), ID_COLUMN, "missing: every event belongs to a customer"))
    long_customers = customers.str.len().fillna(0).to_numpy() > MAX_ID_LENGTH
    problems.append((long_customers, ID_COLUMN, f"longer than {MAX_ID_LENGTH} characters"))

    types = _text(frame[TYPE])
    problems.append((types.isna().to_numpy(), TYPE, "missing: every event has a type"))
    long_types = types.str.len().fillna(0).to_numpy() > MAX_TYPE_LENGTH
    problems.append((long_types, TYPE, f"longer than {MAX_TYPE_LENGTH} characters"))

    nanoseconds, unreadable = utc_nanoseconds(frame[TIMESTAMP])
    problems.append((unreadable, TIMESTAMP, "not a date/time (ISO 8601, e.g. 2025-09-28T14:03:00Z)"))
    now = now or datetime.now(UTC)
    latest = pd.Timestamp(now).tz_convert("UTC").tz_localize(None) + MAX_FUTURE
    future = ~unreadable & (nanoseconds > latest.value)
    problems.append((future, TIMESTAMP, f"in the future (after {latest:%Y-%m-%d %H:%M} UTC)"))

    values, wrong_values = _event_values(frame, text_numbers)
    problems.append((wrong_values, VALUE, "expected a number or null"))

    for mask, column, message in problems:
        for row in np.flatnonzero(mask):
            errors.append(FieldError(column, message, int(row)))
    if errors:
        errors.sort(key=lambda error: (error.row if error.row is not None else -1, error.field))
        raise InputError(errors)

    checked = pd.DataFrame(
        {
            EVENT_ID: event_ids.astype(object).to_numpy(),
            ID_COLUMN: customers.astype(object).to_numpy(),
            "ts": nanoseconds,
            TYPE: types.astype(object).to_numpy(),
            VALUE: values,
        }
    )
    unknown: dict[str, int] = {}
    if known_types is not None:
        counts = checked[TYPE].value_counts()
        unknown = {str(name): int(n) for name, n in counts.items() if name not in known_types}
    return EventBatch(checked, unknown)


def _event_values(frame: pd.DataFrame, text_numbers: bool) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN when absent) and a mask of values that are not numbers.

    A bool is not a number, nor is "12" in JSON; in a CSV file every value is text, so there
    (`text_numbers`) "12" is read as 12."""
    n = len(frame)
    values, wrong = np.full(n, np.nan), np.zeros(n, dtype=bool)
    if VALUE not in frame.columns:
        return values, wrong
    column = frame[VALUE]
    if pd.api.types.is_bool_dtype(column):
        return values, column.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), wrong
    for row, value in enumerate(column.to_numpy(dtype=object)):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[row] = value
        elif text_numbers and isinstance(value, str):
            text = value.strip()
            try:
                values[row] = float(text) if text else np.nan
            except ValueError:
                wrong[row] = True
        else:
            wrong[row] = True
    return values, wrong


# ------------------------------------------------------------------------------------------- customers


@dataclass
class CustomerBatch:
    """Checked customer records: id and a JSON object of the attributes given (dates as ISO text)."""

    customer_ids: list[str]
    attributes: list[str]  # JSON objects; a key given as null clears that attribute

    def __len__(self) -> int:
        return len(self.customer_ids)


def check_customers(records: list[Mapping[str, object]]) -> CustomerBatch:
    """Check customer records; raises InputError naming every bad row and field."""
    if not records:
        raise InputError([FieldError("customers", "must hold at least one customer")])
    errors: list[FieldError] = []
    ids: list[str] = []
    attributes: list[str] = []
    seen: set[str] = set()
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            errors.append(FieldError("customers", "each customer must be an object", row))
            continue
        customer_id = record.get(ID_COLUMN)
        if isinstance(customer_id, int | float) and not isinstance(customer_id, bool):
            customer_id = str(customer_id)
        if not isinstance(customer_id, str) or not customer_id.strip():
            errors.append(FieldError(ID_COLUMN, "missing: every customer needs an id", row))
            continue
        customer_id = customer_id.strip()
        if len(customer_id) > MAX_ID_LENGTH:
            errors.append(FieldError(ID_COLUMN, f"longer than {MAX_ID_LENGTH} characters", row))
        if customer_id in seen:
            errors.append(FieldError(ID_COLUMN, "the same customer twice in one batch", row))
        seen.add(customer_id)
        kept: dict[str, object] = {}
        for name, value in record.items():
            if name == ID_COLUMN:
                continue
            if name in DATE_ATTRIBUTES and value is not None:
                moment = pd.to_datetime(pd.Series([value]), format="ISO8601", errors="coerce", utc=True)[0]
                if pd.isna(moment):
                    errors.append(FieldError(name, "not a date (ISO 8601, e.g. 2025-01-31)", row))
                    continue
                value = moment.tz_localize(None).isoformat()
            elif value is not None and not isinstance(value, str | int | float | bool):
                errors.append(FieldError(name, "expected text, a number, true/false or null", row))
                continue
            kept[name] = value
        ids.append(customer_id)
        attributes.append(json.dumps(kept, ensure_ascii=False, allow_nan=False, default=str))
    if errors:
        raise InputError(errors)
    return CustomerBatch(ids, attributes)
