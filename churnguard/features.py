"""Point-in-time features and labels from an events table.

An observation date means "as of midnight at the start of that day": a feature at observation date t
uses only events with timestamp < t, and a window of w days is [t - w days, t). Labels look the other
way, from t forwards. Nothing here reads files; `churnguard.datasets` loads and normalises them.

How it stays fast without a Python loop per customer: events are encoded as one sorted int64 key,
(type, customer) block times a span plus the event's day, so "events of this type and customer before
midnight m" is a single `np.searchsorted` for every row at once. Window counts are differences of those
positions, window sums are differences of per-block running sums, and the latest event before t is read
from a per-block running maximum of exact times. Days are enough for the key because every boundary is
a midnight: for a midnight m, `timestamp < m` exactly when the timestamp's day is before m's day.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN, FeatureSpec, SignalGroup

logger = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "timestamp"
TYPE_COLUMN = "type"
VALUE_COLUMN = "value"
SIGNUP_COLUMN = "signup_date"
TENURE_COLUMN = "tenure_days"

DEFAULT_WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90, 180)
# The trend compares the recent window with the baseline window just before it, as rates per day.
TREND_RECENT_DAYS = 30
TREND_BASELINE_DAYS = 90
# Month over month: the last 30 days against the 30 days just before them.
MOM_DAYS = 30
FEW_ROWS = 64  # populations up to this size take the small-population path in `_type_features`
FEW_EVENTS = 20_000  # up to this many events, running sums are summed in Python, not through pandas

_SECOND_NS = 1_000_000_000
_DAY_SECONDS = 86_400
_DAY_NS = _DAY_SECONDS * _SECOND_NS
# Keys must stay below 2**63; keep a bit of headroom for the query offsets.
_MAX_KEY = 2**62


@dataclass(frozen=True)
class EventTypeSpec:
    """How one event type becomes features; the dataset config builds these from YAML."""

    group: SignalGroup  # signal group of every feature derived from this type
    has_value: bool = False  # True: also sum and mean of `value` per window
    label: str | None = None  # human plural, e.g. "orders", "logins"


# ---------------------------------------------------------------------------------------------------------
# Sorted event index


@dataclass(frozen=True)
class _EventIndex:
    """Events sorted by one int64 key: block * span_days + units (days) since `base_day`.

    A block is one (event type, customer) pair: `type_code * n_customers + customer_code`. Whole days are
    enough to count when every boundary asked about is a midnight: for a midnight m, timestamp < m
    exactly when the timestamp's day is before m's day. Scoring as of any other moment (the live loop)
    builds the index in whole seconds instead (`unit_seconds` 1): same answers, longer keys. Exact
    times live in `latest`, for recency.
    """

    keys: np.ndarray  # sorted int64
    # Running maximum, in key order, of block * span_seconds + seconds since `base_second`: at a position
    # inside a block it gives the latest event time of that block up to there, whatever the order
    # of events within a day.
    latest: np.ndarray
    values: np.ndarray  # float64 in key order (NaN kept), or empty when no type has values
    base_day: int
    span_days: int  # every day offset lies in [0, span_days)
    base_second: int
    span_seconds: int
    unit_seconds: int = _DAY_SECONDS  # what one step of the key's time part is: a day, or a second

    def positions(self, blocks: np.ndarray, midnights: np.ndarray) -> np.ndarray:
        """For each (block, midnight in epoch seconds): index of the block's first event at or after it.

        Days outside the data are clipped to the block's ends, which gives the same answer: an offset
        of `span_days` lands on the next block's first key, that is just past this block.
        """
        offsets = np.clip(midnights // self.unit_seconds - self.base_day, 0, self.span_days)
        return np.searchsorted(self.keys, blocks * self.span_days + offsets, side="left")

    def block_starts(self, blocks: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, blocks * self.span_days, side="left")

    def latest_seconds(self, positions: np.ndarray) -> np.ndarray:
        """Epoch seconds of the latest event of the block up to and including each position."""
        blocks = self.keys[positions] // self.span_days
        return self.latest[positions] - blocks * self.span_seconds + self.base_second


def _sorted_with_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`keys` sorted, and the stable argsort that sorts them.

    When key and row number fit in 63 bits together, sorting (key << bits | row) is a plain sort of
    distinct numbers: about twice as fast as a stable argsort, and ties keep their input order, so a
    customer's sums do not change in the last bit when other or later events are added.
    """
    row_bits = max(int(keys.size - 1).bit_length(), 1)
    if int(keys.max()) >= 2 ** (63 - row_bits):
        order = np.argsort(keys, kind="stable")
        return keys[order], order
    combined = keys << row_bits
    combined |= np.arange(keys.size, dtype=np.int64)
    combined.sort()
    order = combined & ((1 << row_bits) - 1)
    combined >>= row_bits
    return combined, order


def _build_event_index(
    customer_codes: np.ndarray,
    type_codes: np.ndarray,
    seconds: np.ndarray,
    values: np.ndarray | None,
    n_customers: int,
    n_types: int,
    unit_seconds: int = _DAY_SECONDS,
) -> _EventIndex:
    if seconds.size == 0:
        empty = np.empty(0, np.int64)
        return _EventIndex(empty, empty, np.empty(0, np.float64), 0, 1, 0, 1, unit_seconds)
    base_second = int(seconds.min())
    span_seconds = int(seconds.max()) - base_second + 1
    days = seconds // unit_seconds  # floor, negatives included
    base_day = int(days.min())
    span_days = int(days.max()) - base_day + 1
    n_blocks = n_customers * n_types
    if (n_blocks + 1) * span_seconds >= _MAX_KEY:
        raise ValueError(
            f"events span {span_seconds} s over {n_blocks} (type, customer) blocks: too large for int64 keys"
        )
    # (type * n_customers + customer) * span_days + day - base_day, in place: 10M-row temporaries add up.
    keys = type_codes.astype(np.int64)
    keys *= n_customers
    keys += customer_codes
    keys *= span_days
    keys += days
    keys -= base_day
    keys, order = _sorted_with_order(keys)

    latest = keys // span_days
    latest *= span_seconds
    latest += seconds[order]
    latest -= base_second
    np.maximum.accumulate(latest, out=latest)
    sorted_values = values[order] if values is not None else np.empty(0, np.float64)
    return _EventIndex(
        keys, latest, sorted_values, base_day, span_days, base_second, span_seconds, unit_seconds
    )


def _running_sums_by_block(index: _EventIndex) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive running sum of `value` (NaN as 0) restarting at every block, and the number of
    non-missing values before each position (global, exact in integers; length n + 1).

    Restarting per block (rather than one global cumsum) keeps a customer's window sum independent of
    every other customer's events, bit for bit, so adding unrelated or future events cannot move it.
    """
    present = ~np.isnan(index.values)
    blocks = index.keys // index.span_days
    values = np.where(present, index.values, 0.0)
    valued_before = np.concatenate([[0], np.cumsum(present, dtype=np.int64)])
    if values.size <= FEW_EVENTS:  # one customer's history: pandas' fixed cost is most of the work
        return _compensated_running_sums(values, blocks), valued_before
    sums = pd.Series(values).groupby(blocks, sort=False).cumsum()
    return sums.to_numpy(dtype=np.float64), valued_before


def _compensated_running_sums(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """pandas' groupby cumsum (Kahan-compensated, per block), operation for operation, so both give
    the same bits: the parity tests compare a customer scored alone with the offline table."""
    sums = np.empty(values.size)
    total = compensation = 0.0
    previous = None
    for position, (value, block) in enumerate(zip(values.tolist(), blocks.tolist(), strict=True)):
        if block != previous:
            total = compensation = 0.0
            previous = block
        adjusted = value - compensation
        running = total + adjusted
        compensation = running - total - adjusted
        total = running
        sums[position] = running
    return sums


def _prefix(running: np.ndarray, positions: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running total of the events in a block before `positions` (0 at the block's start)."""
    result = np.zeros(positions.shape, dtype=running.dtype)
    inside = positions > starts
    result[inside] = running[positions[inside] - 1]
    return result


# ---------------------------------------------------------------------------------------------------------
# Input normalisation


def _codes_in(column: pd.Series, vocabulary: pd.Index) -> np.ndarray:
    """Position of each value in `vocabulary`, -1 when absent (or missing).

    Factorizing first and looking up only the distinct values costs about half of a direct
    `get_indexer` on 10M strings; a categorical column skips the string hashing altogether.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes, distinct = column.cat.codes.to_numpy(), column.cat.categories
    else:
        codes, distinct = pd.factorize(column, sort=False)
    # Code -1 (missing) picks the appended -1.
    return np.append(vocabulary.get_indexer(distinct), -1).astype(np.int64)[codes]


def _nanoseconds(column: pd.Series, what: str) -> np.ndarray:
    """int64 nanoseconds since the epoch (NaT as the int64 minimum); any datetime64 unit accepted."""
    if not pd.api.types.is_datetime64_dtype(column.dtype):
        raise TypeError(f"{what} must be datetime64 (timezone-naive), got {column.dtype}")
    return column.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _observation_seconds(observation_dates: pd.Series, any_second: bool = False) -> np.ndarray:
    """Epoch seconds of each observation moment: midnights, or with `any_second` whole seconds."""
    nanoseconds = _nanoseconds(observation_dates, OBSERVATION_COLUMN)
    if observation_dates.isna().any():
        raise ValueError(f"{OBSERVATION_COLUMN} has missing values")
    if not any_second and (nanoseconds % _DAY_NS != 0).any():
        raise ValueError(
            f"{OBSERVATION_COLUMN} must be midnights (an observation is as of the start of a day)"
        )
    if (nanoseconds % _SECOND_NS != 0).any():
        raise ValueError(f"{OBSERVATION_COLUMN} must be whole seconds")
    return nanoseconds // _SECOND_NS


def _population_codes(pop: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Integer code per row and the distinct customer ids, in order of first appearance."""
    codes, customers = pd.factorize(pop[ID_COLUMN], sort=False)
    if (codes < 0).any():
        raise ValueError(f"population has missing {ID_COLUMN} values")
    return codes.astype(np.int64), customers


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{what} is missing column(s) {missing}; it has {list(frame.columns)}")


def _check_windows(windows_days: Sequence[int]) -> tuple[int, ...]:
    windows = tuple(int(window) for window in windows_days)
    if not windows or any(window <= 0 for window in windows) or len(set(windows)) != len(windows):
        raise ValueError(f"windows_days must be distinct positive whole days, got {list(windows_days)}")
    return windows


# ---------------------------------------------------------------------------------------------------------
# Event features


def _event_spec(
    event_type: str, spec: EventTypeSpec, name: str, kind: str, window: int | None
) -> FeatureSpec:
    return FeatureSpec(
        name=f"{event_type}__{name}",
        dtype="numeric",
        group=spec.group,
        kind=kind,  # type: ignore[arg-type]  # one of FeatureKind, checked by pydantic
        event_type=event_type,
        window_days=window,
        label=spec.label,
    )


def event_feature_specs(
    event_types: Mapping[str, EventTypeSpec], windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS
) -> list[FeatureSpec]:
    """The columns `event_features` returns, in order, without computing anything."""
    return list(_event_feature_specs(tuple(event_types.items()), _check_windows(windows_days)))


@functools.lru_cache(maxsize=64)
def _event_feature_specs(
    event_types: tuple[tuple[str, EventTypeSpec], ...], windows: tuple[int, ...]
) -> tuple[FeatureSpec, ...]:
    # Cached: scoring one customer by id asks for the same ~170 validated specs on every request.
    specs: list[FeatureSpec] = []
    for event_type, spec in event_types:
        for window in windows:
            specs.append(_event_spec(event_type, spec, f"count_{window}d", "count", window))
            if spec.has_value:
                specs.append(_event_spec(event_type, spec, f"sum_{window}d", "sum", window))
                specs.append(_event_spec(event_type, spec, f"mean_{window}d", "mean", window))
                specs.append(_event_spec(event_type, spec, f"max_{window}d", "max", window))
        trend_name = f"trend_{TREND_RECENT_DAYS}_{TREND_BASELINE_DAYS}"
        specs.append(_event_spec(event_type, spec, trend_name, "trend", TREND_RECENT_DAYS))
        specs.append(_event_spec(event_type, spec, "mom", "mom", MOM_DAYS))
        specs.append(_event_spec(event_type, spec, "days_since_last", "days_since_last", None))
        if spec.has_value:
            specs.append(_event_spec(event_type, spec, "last", "last", None))
            specs.append(_event_spec(event_type, spec, "previous", "previous", None))
    return tuple(specs)


def _rate_ratio(recent: np.ndarray, baseline: np.ndarray, recent_days: int, baseline_days: int) -> np.ndarray:
    """(recent / recent_days) / (baseline / baseline_days); NaN where the baseline had no events.

    NaN rather than inf or a cap: with no baseline there is no rate to compare against, and the
    count features already say whether the customer is new to this activity.
    """
    ratio = np.full(recent.shape, np.nan)
    known = baseline > 0
    ratio[known] = (recent[known] / recent_days) / (baseline[known] / baseline_days)
    return ratio


def _window_max(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Largest non-missing value of `values[starts[i]:ends[i]]` per row; NaN when there is none.

    One `fmax.reduceat` over interleaved (start, end) bounds: every even slot reduces a window, the odd
    slots reduce the gaps between them and are dropped. Rows sorted by block and time keep those gaps
    short, so the whole pass reads each event about once per window.
    """
    result = np.full(starts.shape, np.nan)
    some = ends > starts
    if not some.any():
        return result
    padded = np.append(values, np.nan)  # an end equal to len(values) stays a valid reduceat index
    bounds = np.empty(2 * starts.size, dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    with np.errstate(invalid="ignore"):
        reduced = np.fmax.reduceat(padded, bounds)[0::2]
    result[some] = reduced[some]
    return result


def _value_before(values: np.ndarray, positions: np.ndarray, starts: np.ndarray, back: int) -> np.ndarray:
    """The value of the block's `back`-th latest event before `positions` (1 = latest); NaN without one."""
    result = np.full(positions.shape, np.nan)
    present = positions - back >= starts
    result[present] = values[positions[present] - back]
    return result


def _mean(total: np.ndarray, n_values: np.ndarray) -> np.ndarray:
    """Mean of the non-missing values; NaN when there are none (CatBoost handles NaN natively)."""
    mean = np.full(total.shape, np.nan)
    some = n_values > 0
    mean[some] = total[some] / n_values[some]
    return mean


def _type_features(
    index: _EventIndex,
    running: tuple[np.ndarray, np.ndarray] | None,
    blocks: np.ndarray,
    seconds: np.ndarray,
    event_type: str,
    spec: EventTypeSpec,
    windows: tuple[int, ...],
    few_rows: bool = False,
) -> dict[str, np.ndarray]:
    """All columns of one event type for rows given as (block, observation second), in `windows` order.

    The blocks may also be those of several types with the same `has_value`, stacked: every column is
    computed element by element, so stacking changes no value (`event_features` does it for few rows).
    """
    lookbacks = sorted(
        {0, *windows, TREND_RECENT_DAYS, TREND_RECENT_DAYS + TREND_BASELINE_DAYS, MOM_DAYS, 2 * MOM_DAYS}
    )
    if few_rows:
        # A handful of rows (scoring by id): one search for every lookback, as numpy's per-call cost
        # outweighs the work. Many rows keep one sorted search per lookback, which stays in cache.
        moments = seconds[None, :] - np.array(lookbacks, dtype=np.int64)[:, None] * _DAY_SECONDS
        found = index.positions(np.broadcast_to(blocks, moments.shape).ravel(), moments.ravel())
        position = dict(zip(lookbacks, found.reshape(moments.shape), strict=True))
    else:
        position = {days: index.positions(blocks, seconds - days * _DAY_SECONDS) for days in lookbacks}
    starts = index.block_starts(blocks)
    now = position[0]

    columns: dict[str, np.ndarray] = {}
    for window in windows:
        count = now - position[window]
        columns[f"{event_type}__count_{window}d"] = count.astype(np.float64)
        if spec.has_value:
            assert running is not None
            sums, valued_before = running
            window_sum = _prefix(sums, now, starts) - _prefix(sums, position[window], starts)
            n_valued = valued_before[now] - valued_before[position[window]]
            columns[f"{event_type}__sum_{window}d"] = window_sum
            columns[f"{event_type}__mean_{window}d"] = _mean(window_sum, n_valued)
            columns[f"{event_type}__max_{window}d"] = _window_max(index.values, position[window], now)

    recent = now - position[TREND_RECENT_DAYS]
    baseline = position[TREND_RECENT_DAYS] - position[TREND_RECENT_DAYS + TREND_BASELINE_DAYS]
    columns[f"{event_type}__trend_{TREND_RECENT_DAYS}_{TREND_BASELINE_DAYS}"] = _rate_ratio(
        recent, baseline, TREND_RECENT_DAYS, TREND_BASELINE_DAYS
    )
    this_month = now - position[MOM_DAYS]
    last_month = position[MOM_DAYS] - position[2 * MOM_DAYS]
    columns[f"{event_type}__mom"] = _rate_ratio(this_month, last_month, MOM_DAYS, MOM_DAYS)

    days_since_last = np.full(blocks.shape, np.nan)
    seen = now > starts
    days_since_last[seen] = (seconds[seen] - index.latest_seconds(now[seen] - 1)) / _DAY_SECONDS
    columns[f"{event_type}__days_since_last"] = days_since_last
    if spec.has_value:
        columns[f"{event_type}__last"] = _value_before(index.values, now, starts, 1)
        columns[f"{event_type}__previous"] = _value_before(index.values, now, starts, 2)
    return columns


def event_features(
    events: pd.DataFrame,
    population: pd.DataFrame,
    event_types: Mapping[str, EventTypeSpec],
    windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
    *,
    any_moment: bool = False,
) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    """Windowed counts, sums, means and maxima, trends, recency and latest values per event type, as of
    each population row.

    `events`: customer_id, timestamp (datetime64), type, value (float, NaN allowed; read only for types
    with `has_value`). `population`: customer_id, observation_date (midnights; with `any_moment`, any
    whole second, for scoring as of now). Only events with
    timestamp < observation_date count; a window of w days is [observation_date - w days,
    observation_date). Event types not in `event_types` are ignored, and a type with no events still
    gets its columns, so the schema does not depend on the data.

    Columns per type, in this order: for each window `{type}__count_{w}d`, and with values also
    `{type}__sum_{w}d` (0 without events; missing values skipped), `{type}__mean_{w}d` and
    `{type}__max_{w}d` (mean and largest of the non-missing values, NaN without any); then
    `{type}__trend_30_90`, the rate ratio (count in [t-30d, t) / 30) / (count in [t-120d, t-30d) / 90),
    NaN when that earlier 90-day window has no events (0 when only the recent one is empty);
    `{type}__mom`, month over month: count in [t-30d, t) / count in [t-60d, t-30d), NaN likewise;
    `{type}__days_since_last`, t minus the last event before t in fractional days at whole-second
    resolution, NaN when there is none; and with values `{type}__last` and `{type}__previous`, the
    values of the latest event before t and of the one before it (NaN without one, or when that event
    has no value). Events of the same day count in input order for those two (`load_events` sorts by
    customer and time). All float64, aligned with `population` (same index, same order).
    """
    windows = _check_windows(windows_days)
    _require_columns(events, [ID_COLUMN, TIMESTAMP_COLUMN, TYPE_COLUMN], "events")
    _require_columns(population, [ID_COLUMN, OBSERVATION_COLUMN], "population")
    specs = event_feature_specs(event_types, windows)
    type_names = list(event_types)
    needs_values = any(spec.has_value for spec in event_types.values())
    if needs_values:
        _require_columns(events, [VALUE_COLUMN], "events")

    row_customer_codes, customers = _population_codes(population)
    row_seconds = _observation_seconds(population[OBSERVATION_COLUMN], any_second=any_moment)
    # Midnights (observation dates, the daily pass) count in whole days; any other moment (scoring by id
    # as of now) in whole seconds. Both give the same answers at a midnight.
    unit = _DAY_SECONDS if not (row_seconds % _DAY_SECONDS).any() else 1

    index = _index_events(
        events, customers, pd.Index(type_names), with_values=needs_values, unit_seconds=unit
    )
    running = _running_sums_by_block(index) if needs_values else None

    # Rows sorted by (customer, time) make every searchsorted needle array sorted, which numpy's binary
    # search exploits (it narrows each search from the previous one and stays in cache).
    row_order = np.lexsort((row_seconds, row_customer_codes))
    sorted_codes = row_customer_codes[row_order]
    sorted_seconds = row_seconds[row_order]

    # One preallocated (column, row) block: the frame wraps it without the copies a dict of columns costs.
    names = [spec.name for spec in specs]
    column_of = {name: number for number, name in enumerate(names)}
    matrix = np.empty((len(names), len(population)), dtype=np.float64)
    few_rows = len(population) <= FEW_ROWS
    coded = [(code, event_type, spec) for code, (event_type, spec) in enumerate(event_types.items())]
    if few_rows:
        # Scoring by id: the types with and without values each go through one set of numpy calls.
        groups = [[t for t in coded if t[2].has_value == has_value] for has_value in (False, True)]
    else:
        groups = [[t] for t in coded]
    rows = len(sorted_codes)
    for group in filter(None, groups):
        blocks = np.concatenate([code * len(customers) + sorted_codes for code, _, _ in group])
        seconds = np.tile(sorted_seconds, len(group))
        columns = _type_features(index, running, blocks, seconds, "", group[0][2], windows, few_rows)
        for suffix, stacked in columns.items():
            for part, (_, event_type, _) in enumerate(group):
                matrix[column_of[event_type + suffix], row_order] = stacked[part * rows : (part + 1) * rows]
    frame = pd.DataFrame(matrix.T, index=population.index, columns=names, copy=False)
    logger.info(
        "event features: %d rows x %d columns from %d events of %d types",
        len(frame), frame.shape[1], index.keys.size, len(type_names),
    )  # fmt: skip
    return frame, specs


def _index_events(
    events: pd.DataFrame, customers: pd.Index, types: pd.Index, *, with_values: bool, unit_seconds: int
) -> _EventIndex:
    """Encode and sort the events that can matter: known type, a customer in the population, a time."""
    customer_codes = _codes_in(events[ID_COLUMN], customers)
    type_codes = _codes_in(events[TYPE_COLUMN], types) if len(types) else np.full(len(events), -1)
    nanoseconds = _nanoseconds(events[TIMESTAMP_COLUMN], "events.timestamp")
    keep = (customer_codes >= 0) & (type_codes >= 0) & (nanoseconds != np.iinfo(np.int64).min)
    if len(events) and not (customer_codes >= 0).any():
        logger.warning("no event matches a population customer_id; check that both use the same id dtype")
    values = None
    if with_values:
        values = pd.to_numeric(events[VALUE_COLUMN], errors="raise").to_numpy(dtype=np.float64)
    if not keep.all():
        customer_codes, type_codes, nanoseconds = customer_codes[keep], type_codes[keep], nanoseconds[keep]
        values = values[keep] if values is not None else None
    # Floor to whole seconds (numpy floor-divides negatives too), exact against midnight boundaries.
    seconds = nanoseconds // _SECOND_NS
    return _build_event_index(
        customer_codes, type_codes, seconds, values, len(customers), max(len(types), 1), unit_seconds
    )


# ---------------------------------------------------------------------------------------------------------
# Population, labels, tenure


def _churn_days_for(customer_ids: pd.Series, churn_dates: pd.Series | None) -> pd.Series:
    """Churn day (midnight) per row, NaT when the customer has none. Churn is compared by calendar day."""
    if churn_dates is None:
        return pd.Series(pd.NaT, index=customer_ids.index, dtype="datetime64[ns]")
    if not churn_dates.index.is_unique:
        raise ValueError("churn_dates must have one entry per customer_id")
    days = pd.to_datetime(churn_dates).dt.normalize()
    return pd.Series(days.reindex(customer_ids.to_numpy()).to_numpy(), index=customer_ids.index)


def population(
    customers: pd.DataFrame,
    observation_dates: Sequence[pd.Timestamp],
    churn_dates: pd.Series | None,
) -> pd.DataFrame:
    """Every (customer, observation_date) at which the customer exists and has not churned.

    Kept when signup_date < observation_date (NaT: always present) and the customer did not churn on
    or before the observation day (`churn_dates` indexed by customer_id, NaT or absent: no churn).
    Rows come ordered by observation date, then in `customers` order, with a fresh RangeIndex.
    """
    _require_columns(customers, [ID_COLUMN, SIGNUP_COLUMN], "customers")
    if not customers[ID_COLUMN].is_unique:
        raise ValueError("customers has duplicate customer_id values")
    dates = pd.DatetimeIndex(sorted(set(pd.to_datetime(list(observation_dates)))))
    if (dates != dates.normalize()).any():
        raise ValueError("observation dates must be midnights")

    n_customers = len(customers)
    row_dates = np.repeat(dates.to_numpy(dtype="datetime64[ns]"), n_customers)
    row_customers = np.tile(np.arange(n_customers), len(dates))
    signup = customers[SIGNUP_COLUMN].to_numpy(dtype="datetime64[ns]")[row_customers]
    churn_day = _churn_days_for(customers[ID_COLUMN], churn_dates).to_numpy(dtype="datetime64[ns]")
    churn_day = churn_day[row_customers]

    signed_up = np.isnat(signup) | (signup < row_dates)
    still_customer = np.isnat(churn_day) | (churn_day > row_dates)
    keep = signed_up & still_customer
    return pd.DataFrame(
        {
            ID_COLUMN: customers[ID_COLUMN].to_numpy()[row_customers[keep]],
            OBSERVATION_COLUMN: row_dates[keep],
        }
    )


def label_explicit(pop: pd.DataFrame, churn_dates: pd.Series, horizon_days: int) -> pd.Series:
    """1 when the customer's churn day falls in (observation_date, observation_date + horizon], else 0."""
    churn_day = _churn_days_for(pop[ID_COLUMN], churn_dates)
    observed = pop[OBSERVATION_COLUMN]
    churned = (churn_day > observed) & (churn_day <= observed + pd.Timedelta(days=horizon_days))
    return churned.astype(np.int64).rename(LABEL_COLUMN)


def label_inactivity(pop: pd.DataFrame, events: pd.DataFrame, horizon_days: int) -> pd.Series:
    """1 when the customer has no event of any type in [observation_date, observation_date + horizon)."""
    _require_columns(events, [ID_COLUMN, TIMESTAMP_COLUMN], "events")
    row_customer_codes, customers = _population_codes(pop)
    row_seconds = _observation_seconds(pop[OBSERVATION_COLUMN])
    customer_codes = _codes_in(events[ID_COLUMN], customers)
    nanoseconds = _nanoseconds(events[TIMESTAMP_COLUMN], "events.timestamp")
    keep = (customer_codes >= 0) & (nanoseconds != np.iinfo(np.int64).min)
    seconds = nanoseconds[keep] // _SECOND_NS
    index = _build_event_index(
        customer_codes[keep], np.zeros(seconds.size, np.int64), seconds, None, len(customers), 1
    )

    if seconds.size and (row_seconds + horizon_days * _DAY_SECONDS > seconds.max() + 1).any():
        # Past the end of the data "no event" only means "not observed yet": the label is censored.
        logger.warning(
            "inactivity label: observation dates + %d days run past the last event (censored)", horizon_days
        )
    start = index.positions(row_customer_codes, row_seconds)
    end = index.positions(row_customer_codes, row_seconds + horizon_days * _DAY_SECONDS)
    return pd.Series((end == start).astype(np.int64), index=pop.index, name=LABEL_COLUMN)


def before_signup(events: pd.DataFrame, customers: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
    """Mask of events dated before their customer's signup day: not part of the customer's history,
    in the training table (`load_events` drops them) and in the live loop alike. A customer with no
    signup date, or not in `customers`, keeps every event."""
    positions = pd.Index(customers[ID_COLUMN]).get_indexer(events[ID_COLUMN])
    signup_day = np.asarray(customers[SIGNUP_COLUMN], dtype="datetime64[ns]").astype("datetime64[D]")
    signup = np.append(signup_day, np.datetime64("NaT"))[positions]  # -1 (not there): NaT
    return ~np.isnat(signup) & (events[TIMESTAMP_COLUMN].to_numpy(dtype="datetime64[ns]") < signup)


def tenure_days(
    pop: pd.DataFrame, customers: pd.DataFrame | Mapping[str, np.ndarray], rows: np.ndarray | None = None
) -> pd.Series:
    """Days from signup to the observation date (fractional when signup has a time); NaN without signup.

    `rows`: each population row's position in `customers` (-1: not there), when the caller has it."""
    if rows is None:
        rows = pd.Index(customers[ID_COLUMN]).get_indexer(pop[ID_COLUMN])
    signup = np.append(
        np.asarray(customers[SIGNUP_COLUMN], dtype="datetime64[ns]"), np.datetime64("NaT", "ns")
    )
    observed = pop[OBSERVATION_COLUMN].to_numpy(dtype="datetime64[ns]")
    days = (observed - signup[rows]) / np.timedelta64(1, "D")
    return pd.Series(days.astype(np.float64), index=pop.index, name=TENURE_COLUMN)
