"""Features of stored customers as of a moment: what scoring by id and the daily pass score.

The model's own feature schema says which features to build (`FeaturePlan.from_schema`), and
`feature_table.customer_features` builds them, the same function that built the training table, on
the customers' history read from the event store. The parity test holds the two paths equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnguard.contract_features import CONTRACT_TYPES
from churnguard.feature_table import FeaturePlan, customer_features
from churnguard.features import before_signup
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN, FeatureSchema
from churnguard.store.events import EventStore
from churnguard.store.intake import CHURN, SIGNUP


class UnknownCustomers(LookupError):
    """Customers the store holds nothing about, or who were not customers yet at the moment asked."""

    def __init__(self, unknown: list[str], not_yet: list[str], as_of: pd.Timestamp) -> None:
        self.unknown, self.not_yet, self.as_of = unknown, not_yet, as_of
        parts = []
        if unknown:
            parts.append(
                f"no history for customer(s) {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else "")
            )
        if not_yet:
            parts.append(
                f"not yet customers as of {as_of:%Y-%m-%d %H:%M:%S}: {', '.join(not_yet[:5])}"
                + (" ..." if len(not_yet) > 5 else "")
            )
        super().__init__("; ".join(parts))


def as_of_moment(value: str | pd.Timestamp | None, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """A date means midnight at its start (as observation dates do); a timestamp is taken to the second
    (UTC; no offset means UTC); none means now."""
    if value is None:
        moment = now if now is not None else pd.Timestamp.now(tz="UTC")
    else:
        moment = pd.Timestamp(value)
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment.floor("s")


@dataclass
class LiveFeatures:
    """Builds one model's features from the event store."""

    schema: FeatureSchema

    def __post_init__(self) -> None:
        self.plan = FeaturePlan.from_schema(self.schema)
        self.event_types = set(self.plan.event_types)
        if self.plan.contracts is not None:  # contracts arrive as events of the reserved types
            self.event_types |= set(CONTRACT_TYPES)

    def customers(self, store: EventStore, customer_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.prepared_customers(store.customer_columns(customer_ids))

    def prepared_customers(self, customers: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Static columns as the model scores them (a column no customer has is all missing): numbers
        as float64, categories as stripped text or None, as the dataset loader reads them. Columns by
        name, not a frame: a request's frames cost more than its arithmetic."""
        ids = np.asarray(customers[ID_COLUMN])
        prepared = {ID_COLUMN: ids, SIGNUP: np.asarray(customers[SIGNUP])}
        if customers.get(CHURN) is not None:
            prepared[CHURN] = np.asarray(customers[CHURN])
        dtypes = self.plan.static_dtypes or {}
        for column in self.plan.static_columns:
            numeric = dtypes.get(column) == "numeric"
            given = customers.get(column)
            if given is None:
                prepared[column] = np.full(len(ids), np.nan if numeric else None)
            elif numeric:
                prepared[column] = _numbers(np.asarray(given, dtype=object))
            else:
                # Plain Python beats pandas' string methods on the one customer a request asks for.
                prepared[column] = np.array([_text(value) for value in np.asarray(given)], dtype=object)
        for column, _, _, _ in self.plan.date_features:
            prepared[column] = _dates(customers.get(column), len(ids))
        return prepared

    def frame(
        self,
        store: EventStore,
        customer_ids: Sequence[str],
        as_of: pd.Timestamp,
        customers: Mapping[str, np.ndarray] | pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """customer_id plus the model's features, one row per id in the order given, as of `as_of`.

        Raises UnknownCustomers when an id has no record and no event, or signed up after `as_of`.
        `customers` and `events` may be handed in when the caller already read them (the daily pass)."""
        ids = [str(customer_id) for customer_id in customer_ids]
        if customers is None:
            customers = self.customers(store, ids)
        positions = pd.Index(customers[ID_COLUMN]).get_indexer(ids)
        signup = np.asarray(customers[SIGNUP], dtype="datetime64[ns]")
        late = signup >= as_of.to_datetime64()  # NaT compares False: no signup date, always a customer
        unknown = [customer_id for customer_id, at in zip(ids, positions, strict=True) if at < 0]
        not_yet = [
            customer_id for customer_id, at in zip(ids, positions, strict=True) if at >= 0 and late[at]
        ]
        if unknown or not_yet:
            raise UnknownCustomers(unknown, not_yet, as_of)
        if events is None:
            events = store.events_of(ids, before_ns=as_of.value)
        events = events_since_signup(events, customers)
        population = pd.DataFrame(
            {
                ID_COLUMN: np.array(ids, dtype=object),
                OBSERVATION_COLUMN: np.full(len(ids), as_of.to_datetime64(), dtype="datetime64[ns]"),
            }
        )
        features, _ = customer_features(
            self.plan, events, customers, population, any_moment=as_of != as_of.normalize()
        )
        features.insert(0, ID_COLUMN, population[ID_COLUMN].to_numpy())
        return features


def events_since_signup(
    events: pd.DataFrame, customers: Mapping[str, np.ndarray] | pd.DataFrame
) -> pd.DataFrame:
    """Drop events before the customer's signup day, as `load_events` does for the training table."""
    if events.empty:
        return events
    early = before_signup(events, customers)
    return events[~early] if early.any() else events


def _numbers(values: np.ndarray) -> np.ndarray:
    """float64 of stored attribute values: numbers as they are, anything else missing."""
    try:
        return values.astype(np.float64)  # numbers and None (as NaN): the usual case, in C
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def _dates(values: object, count: int) -> np.ndarray:
    """datetime64[ns] of stored date attributes (ISO text from the backfill or the API); NaT when
    absent or unreadable, as the dataset loader reads an unparseable date."""
    if values is None:
        return np.full(count, np.datetime64("NaT"), dtype="datetime64[ns]")
    parsed = pd.to_datetime(pd.Series(np.asarray(values, dtype=object)), errors="coerce", utc=True)
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _text(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value).strip()
