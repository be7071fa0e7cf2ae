"""`churnguard ingest`: bulk-load a dataset's files into the event store (a backfill).

Files are read and normalised by the dataset loaders, so a bad row is named and counted exactly as
`validate` names it. Events without their own id get one from their content (customer, time, type,
value) and how many identical events came before in the files, so loading the same files twice, or a
later export that repeats old events, stores nothing twice, while two identical events in one file
stay two. Rows go in chunks, each its own transaction: a load that is stopped can simply be run
again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churnguard.contract_features import CONTRACT_TYPES
from churnguard.datasets import (
    DataReport,
    EventsDataset,
    first_events,
    read_churn_dates,
    read_contracts,
    read_customers,
    read_event_parts,
)
from churnguard.schema import ID_COLUMN
from churnguard.store.events import EventStore, IngestResult
from churnguard.store.intake import CHURN, SIGNUP, CustomerBatch, EventBatch

log = logging.getLogger(__name__)

CHUNK_EVENTS = 100_000


@dataclass
class BackfillSummary:
    dataset: str
    store: str
    events: IngestResult = field(default_factory=IngestResult)
    customers: int = 0
    contract_events: int = 0  # among the events: the contracts file's terms (contract_features)
    report: DataReport | None = None
    seconds: float = 0.0

    def format(self) -> str:
        rate = self.events.received / self.seconds if self.seconds else 0.0
        lines = [
            f"ingest {self.dataset} -> {self.store}",
            f"  events: {self.events.received:,} read, {self.events.stored:,} stored, "
            f"{self.events.duplicates:,} already there ({rate:,.0f} events/s)"
            + (f"; {self.contract_events:,} of them contract events" if self.contract_events else ""),
            f"  customers: {self.customers:,} inserted or updated",
        ]
        if self.events.unknown_types:
            counts = ", ".join(f"{name}: {n:,}" for name, n in sorted(self.events.unknown_types.items()))
            lines.append(f"  event types the dataset does not use for features (kept): {counts}")
        if self.report is not None and self.report.issues:
            lines.append(self.report.format())
        return "\n".join(lines)


def content_event_ids(events: pd.DataFrame) -> np.ndarray:
    """A 64-bit id per event from its content (customer, time, type, value) and how many identical
    events came before it, stored as text like any event_id. Unique per customer, which is what the
    store keys on; numbers rather than formatted text, because formatting 4.5 M strings in Python
    took a fifth of the whole load."""
    content = pd.util.hash_pandas_object(events[[ID_COLUMN, "timestamp", "type", "value"]], index=False)
    hashes = content.to_numpy(dtype=np.uint64)
    occurrence = pd.Series(hashes).groupby(hashes, sort=False).cumcount().to_numpy(dtype=np.uint64)
    combined = pd.util.hash_array(hashes ^ (occurrence * np.uint64(0x9E3779B97F4A7C15)))
    return combined.view(np.int64)


def customer_records(
    customers: pd.DataFrame, churn_dates: pd.Series | None, static: list[str], dates: tuple[str, ...] = ()
) -> CustomerBatch:
    ids = customers[ID_COLUMN].astype(str).tolist()
    columns: dict[str, list] = {}
    signup = customers[SIGNUP]
    columns[SIGNUP] = [None if pd.isna(v) else v.isoformat() for v in signup]
    if churn_dates is not None:
        churn = churn_dates.reindex(customers[ID_COLUMN].to_numpy())
        columns[CHURN] = [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in churn]
    for column in static:
        values = customers[column].to_numpy(dtype=object)
        columns[column] = [
            None if v is None or (isinstance(v, float) and np.isnan(v)) else _plain(v) for v in values
        ]
    for column in dates:  # parsed dates as ISO text, read back by the live loop
        columns[column] = [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in customers[column]]
    names = list(columns)
    attributes = [
        json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False)
        for row in zip(*(columns[n] for n in names), strict=True)
    ]
    return CustomerBatch(ids, attributes)


def _plain(value: object) -> object:
    """numpy scalars as the Python numbers JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def backfill(config: EventsDataset, store: EventStore, progress: bool = True) -> BackfillSummary:
    """Load a dataset's events and customers into `store`."""
    import time

    from tqdm import tqdm

    started = time.perf_counter()
    summary = BackfillSummary(config.name, store.url)
    report = DataReport(config.name)
    parts = read_event_parts(config, report, strict=False)
    customers = read_customers(config, first_events(parts), report, strict=False)
    churn_dates = read_churn_dates(config, customers, report, strict=False).dates
    contracts = read_contracts(config, customers, report, strict=False)
    report.raise_for_errors()
    # Files in config order, rows in file order: the order of arrival the offline table sorts ties by.
    # Contract terms go in as contract events, in the order the offline table reads them.
    events = pd.concat(
        [part.frame for part in parts] + ([contracts] if contracts is not None else []), ignore_index=True
    )
    summary.report = report
    summary.contract_events = len(contracts) if contracts is not None else 0

    static = list(config.customers.static_columns) if config.customers else []
    dates = tuple(config.customers.date_columns) if config.customers else ()
    customer_batch = customer_records(customers, churn_dates, static, dates)
    summary.customers = store.upsert_customers(customer_batch)

    known = set(config.event_types) | (set(CONTRACT_TYPES) if contracts is not None else set())
    frame = pd.DataFrame(
        {
            "event_id": content_event_ids(events),
            ID_COLUMN: events[ID_COLUMN].to_numpy(dtype=object),
            "ts": events["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64),
            "type": events["type"].to_numpy(dtype=object),
            "value": events["value"].to_numpy(dtype=np.float64),
        }
    )
    with tqdm(
        total=len(frame), unit="events", desc=f"ingest {config.name}", disable=not progress or None
    ) as bar:
        for start in range(0, len(frame), CHUNK_EVENTS):
            chunk = frame.iloc[start : start + CHUNK_EVENTS]
            types = chunk["type"].value_counts()
            unknown = {str(name): int(n) for name, n in types.items() if name not in known}
            summary.events.add(store.add_events(EventBatch(chunk, unknown)))
            bar.update(len(chunk))
    summary.seconds = time.perf_counter() - started
    log.debug(summary.format())  # the command prints it
    return summary
