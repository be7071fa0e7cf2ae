"""Point-in-time contract features: renewal timing, MRR and seat changes, downgrades, auto-renew.

Contracts (subscription terms) are kept as events of four reserved types, so that the offline table
and the live loop read them the same way and the event store keeps them with no table of its own:

- `contract_term` at the term's start, value = the term's length in days (start to scheduled renewal;
  days to renewal stay 0 once it is due and no new term has started);
- `contract_mrr` and `contract_seats` at the moment the MRR or seat count took that value;
- `contract_auto_renew` at the term's start with the term's flag (1 on, 0 off), and value 0 on the
  day it was switched off.

A CRM sends them through `POST /events` like any event; a dataset's contracts file becomes these events
in `datasets.read_contracts`. An event is known from its timestamp on, so a feature as of t reads only
events before t, as the event features do: a later renewal, downgrade or switch-off cannot reach back.
The file's actual end dates are never read: a term cut short by a churn would tell the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnguard.features import TIMESTAMP_COLUMN, TYPE_COLUMN, VALUE_COLUMN
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN, FeatureSpec, SignalGroup

TERM = "contract_term"
MRR = "contract_mrr"
SEATS = "contract_seats"
AUTO_RENEW = "contract_auto_renew"
CONTRACT_TYPES = (TERM, MRR, SEATS, AUTO_RENEW)
PREFIX = "contract__"

_DAY_SECONDS = 86_400
_MEASURE_TYPES = {"mrr": MRR, "seats": SEATS}
_MEASURE_LABELS = {"mrr": "MRR", "seats": "seats"}


@dataclass(frozen=True)
class ContractPlan:
    """Which contract measures a model reads: `mrr` and/or `seats`, and the auto-renew flag."""

    measures: tuple[str, ...]  # in ("mrr", "seats") order
    auto_renew: bool
    group: SignalGroup = "relationship"

    @property
    def downgrade_measure(self) -> str | None:
        """A downgrade is a fall in MRR, or in seats when there is no MRR."""
        return self.measures[0] if self.measures else None

    @classmethod
    def from_names(cls, names: Sequence[str], group: SignalGroup) -> ContractPlan | None:
        """The plan whose features are among `names` (a model's schema); None without contract features."""
        present = set(names)
        if f"{PREFIX}days_to_renewal" not in present:
            return None
        measures = tuple(m for m in _MEASURE_TYPES if f"{PREFIX}{m}" in present)
        return cls(measures, f"{PREFIX}auto_renew_off" in present, group)


def contract_feature_specs(plan: ContractPlan, windows_days: Sequence[int]) -> list[FeatureSpec]:
    """The columns `contract_features` returns, in order."""

    def spec(name: str, label: str, window: int | None = None) -> FeatureSpec:
        return FeatureSpec(
            name=PREFIX + name,
            dtype="numeric",
            group=plan.group,
            kind="contract",
            window_days=window,
            label=label,
        )

    specs = [
        spec("days_to_renewal", "days to the contract's renewal"),
        spec("days_since_renewal", "days since the current term started"),
    ]
    for measure in plan.measures:
        label = _MEASURE_LABELS[measure]
        specs.append(spec(measure, f"contract {label}"))
        specs += [spec(f"{measure}_change_{w}d", f"{label} change over {w} days", w) for w in windows_days]
    if plan.downgrade_measure is not None:
        specs += [spec(f"downgrades_{w}d", f"contract downgrades in {w} days", w) for w in windows_days]
    if plan.auto_renew:
        specs.append(spec("auto_renew_off", "auto-renew off"))
        specs.append(spec("days_since_auto_renew_off", "days since auto-renew went off"))
    return specs


@dataclass
class _Timeline:
    """One reserved type's events, sorted by (customer, time, input order), keyed for searchsorted."""

    keys: np.ndarray  # customer code * span + seconds offset
    seconds: np.ndarray
    values: np.ndarray
    customers: np.ndarray
    span: int
    base: int

    @classmethod
    def of(
        cls, events: pd.DataFrame, event_type: str, customers: pd.Index, base: int, span: int
    ) -> _Timeline:
        rows = events[events[TYPE_COLUMN].to_numpy() == event_type]
        codes = customers.get_indexer(rows[ID_COLUMN])
        seconds = rows[TIMESTAMP_COLUMN].to_numpy(dtype="datetime64[ns]").view(np.int64) // 1_000_000_000
        values = rows[VALUE_COLUMN].to_numpy(dtype=np.float64)
        keep = (codes >= 0) & (seconds != np.iinfo(np.int64).min // 1_000_000_000)
        codes, seconds, values = codes[keep].astype(np.int64), seconds[keep], values[keep]
        order = np.lexsort((seconds, codes))  # stable: same-moment events keep their input order
        codes, seconds, values = codes[order], seconds[order], values[order]
        return cls(codes * span + (seconds - base), seconds, values, codes, span, base)

    def before(self, codes: np.ndarray, moments: np.ndarray) -> np.ndarray:
        """Number of this customer's block's events strictly before each moment, as a global position
        (the index just past the latest such event)."""
        offsets = np.clip(moments - self.base, 0, self.span - 1)
        return np.searchsorted(self.keys, codes * self.span + offsets, side="left")

    def latest(self, codes: np.ndarray, moments: np.ndarray) -> np.ndarray:
        """Index of the customer's latest event strictly before each moment, -1 when none."""
        if not self.keys.size:  # no event of this type at all (a customer with no contract yet)
            return np.full(codes.shape, -1)
        position = self.before(codes, moments) - 1
        found = (position >= 0) & (self.customers[np.maximum(position, 0)] == codes)
        return np.where(found, position, -1)

    def value_at(self, index: np.ndarray) -> np.ndarray:
        return np.where(index >= 0, self.values[np.maximum(index, 0)] if self.values.size else np.nan, np.nan)


def contract_features(
    plan: ContractPlan, events: pd.DataFrame, population: pd.DataFrame, windows_days: Sequence[int]
) -> pd.DataFrame:
    """The contract features of each (customer_id, observation_date) row, as of its moment.

    `events` may hold other types too (the live loop hands in a customer's whole history); only the
    reserved contract types are read. Aligned with `population`'s index; all float64, NaN when the
    customer has no such contract event before the moment.
    """
    names = [spec.name for spec in contract_feature_specs(plan, windows_days)]
    ids, customers = pd.factorize(population[ID_COLUMN], sort=False)
    codes = ids.astype(np.int64)
    moments = population[OBSERVATION_COLUMN].to_numpy(dtype="datetime64[ns]").view(np.int64) // 1_000_000_000
    contract_events = events[events[TYPE_COLUMN].isin(CONTRACT_TYPES).to_numpy()] if len(events) else events
    # One time base for every type; moments far outside are clipped by `before`.
    stamps = contract_events[TIMESTAMP_COLUMN].to_numpy(dtype="datetime64[ns]").view(np.int64)
    stamps = stamps[stamps != np.iinfo(np.int64).min] // 1_000_000_000
    lookback = max(windows_days, default=0) * _DAY_SECONDS
    low = min(int(stamps.min()) if stamps.size else 0, int(moments.min(initial=0)) - lookback)
    high = max(int(stamps.max()) if stamps.size else 0, int(moments.max(initial=0)))
    base, span = low - 1, high - low + 3

    columns: dict[str, np.ndarray] = {}
    term = _Timeline.of(contract_events, TERM, pd.Index(customers), base, span)
    current = term.latest(codes, moments)
    start = np.where(current >= 0, term.seconds[np.maximum(current, 0)] if term.seconds.size else 0, 0)
    length = term.value_at(current)
    since = np.where(current >= 0, (moments - start) / _DAY_SECONDS, np.nan)
    # 0 once the renewal is due: a term past its renewal with no new term yet (renewal overdue, or a
    # churned customer scored by id) is "at renewal", as no training row, all active customers, is past it.
    columns["days_to_renewal"] = np.maximum(length - since, 0.0)
    columns["days_since_renewal"] = since

    for measure in plan.measures:
        timeline = _Timeline.of(contract_events, _MEASURE_TYPES[measure], pd.Index(customers), base, span)
        now = timeline.value_at(timeline.latest(codes, moments))
        columns[measure] = now
        for window in windows_days:
            then = timeline.value_at(timeline.latest(codes, moments - window * _DAY_SECONDS))
            change = np.full(now.shape, np.nan)
            known = then > 0
            change[known] = now[known] / then[known] - 1.0
            columns[f"{measure}_change_{window}d"] = change

    if plan.downgrade_measure is not None:
        timeline = _Timeline.of(
            contract_events, _MEASURE_TYPES[plan.downgrade_measure], pd.Index(customers), base, span
        )
        # A downgrade is a value below the customer's previous one; running counts make windows differences.
        same_customer = np.concatenate([[False], timeline.customers[1:] == timeline.customers[:-1]])
        previous = np.concatenate([[np.nan], timeline.values[:-1]])
        down = same_customer & (timeline.values < previous)
        running = np.concatenate([[0], np.cumsum(down, dtype=np.int64)])
        upto = timeline.before(codes, moments)
        for window in windows_days:
            since_window = timeline.before(codes, moments - window * _DAY_SECONDS)
            columns[f"downgrades_{window}d"] = (running[upto] - running[since_window]).astype(np.float64)

    if plan.auto_renew:
        timeline = _Timeline.of(contract_events, AUTO_RENEW, pd.Index(customers), base, span)
        latest = timeline.latest(codes, moments)
        flag = timeline.value_at(latest)
        off = np.where(np.isnan(flag), np.nan, (flag == 0).astype(np.float64))
        columns["auto_renew_off"] = off
        went_off = np.where(
            latest >= 0, timeline.seconds[np.maximum(latest, 0)] if timeline.seconds.size else 0, 0
        )
        columns["days_since_auto_renew_off"] = np.where(off == 1, (moments - went_off) / _DAY_SECONDS, np.nan)

    frame = pd.DataFrame({PREFIX + name: values for name, values in columns.items()}, index=population.index)
    return frame[names]


def term_events(
    customer_ids: pd.Series,
    starts: pd.Series,
    renewals: pd.Series,
    mrr: pd.Series | None,
    seats: pd.Series | None,
    auto_renew: pd.Series | None,
    auto_renew_off: pd.Series | None,
) -> pd.DataFrame:
    """A contracts file's terms (one row each, already checked) as contract events, in file order per
    customer: customer_id, timestamp, type, value as `load_events` gives events."""
    length = (renewals - starts) / pd.Timedelta(days=1)
    parts = [(starts, TERM, length)]
    if mrr is not None:
        parts.append((starts, MRR, mrr))
    if seats is not None:
        parts.append((starts, SEATS, seats))
    if auto_renew is not None:
        parts.append((starts, AUTO_RENEW, auto_renew.astype(np.float64)))
    if auto_renew_off is not None:
        switched = auto_renew_off.notna()
        parts.append(
            (auto_renew_off[switched], AUTO_RENEW, pd.Series(0.0, index=auto_renew_off.index[switched]))
        )
    frames = []
    for order, (when, kind, value) in enumerate(parts):
        frames.append(
            pd.DataFrame(
                {
                    ID_COLUMN: customer_ids.loc[when.index].astype(str).to_numpy(),
                    TIMESTAMP_COLUMN: when.to_numpy(dtype="datetime64[ns]"),
                    TYPE_COLUMN: kind,
                    VALUE_COLUMN: pd.to_numeric(value, errors="coerce").to_numpy(dtype=np.float64),
                    "_order": order,
                    "_row": when.index.to_numpy(),
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    # Per customer in time order; at one moment, rows in file order and each row's parts in `parts` order.
    events = events.sort_values([ID_COLUMN, TIMESTAMP_COLUMN, "_row", "_order"], kind="stable")
    return events.drop(columns=["_order", "_row"]).reset_index(drop=True)
