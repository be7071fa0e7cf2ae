"""`churnguard daily`: score every active customer from the event store as of a day.

The pass works through the customers in chunks, sorted by id. A chunk is scored, appended to the
prediction log under the request id `daily-<model>-<date>-<chunk>`, and then written as one part of
the day's Parquet snapshot (written to a temporary name, then renamed). So:
- run twice for the same date, the second run finds every part written and changes nothing; run on
  two hosts at once (each with its own snapshot folder, one shared log), each chunk is logged once;
- a run that was killed is run again and does only the chunks without a part, and a chunk that was
  logged but not written is written without being logged a second time.
When every chunk is done, the parts are joined into `<out>/<model>/<date>.parquet` and a manifest
says what the pass did. Rows the model cannot score are named in `<date>.errors.csv`, never dropped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnguard import features
from churnguard.history import LoggedHistory
from churnguard.inputs import CheckedFrame
from churnguard.live import LiveFeatures
from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN
from churnguard.score_file import frozen_heap
from churnguard.store.events import EventStore
from churnguard.store.intake import CHURN, SIGNUP

log = logging.getLogger(__name__)

CHUNK_CUSTOMERS = 5_000
LOOK_MARGIN = timedelta(minutes=5)


@dataclass
class DailySummary:
    model: str
    model_version: str
    as_of: str
    customers: int = 0  # active customers as of the day
    scored: int = 0
    rejected: int = 0  # rows whose features the model does not accept (named in the errors file)
    chunks: int = 0
    chunks_done_before: int = 0  # found finished by an earlier run of the same day
    tiers: dict[str, int] = field(default_factory=dict)
    snapshot: str = ""
    errors_file: str | None = None
    seconds: float = 0.0

    def format(self) -> str:
        tiers = ", ".join(f"{tier} {n:,}" for tier, n in sorted(self.tiers.items()))
        resumed = (
            f" ({self.chunks_done_before} of {self.chunks} chunks already done)"
            if self.chunks_done_before
            else ""
        )
        lines = [
            f"daily pass {self.model} v{self.model_version} as of {self.as_of}: {self.scored:,} of "
            f"{self.customers:,} active customers scored in {self.seconds:.1f} s{resumed}",
            f"  tiers: {tiers}",
            f"  snapshot: {self.snapshot}",
        ]
        if self.rejected:
            lines.append(f"  {self.rejected:,} customers not scored, named in {self.errors_file}")
        return "\n".join(lines)


def active_customers(customers: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customers signed up before `as_of` who had not churned by that day, as the training population
    counts them (`features.population`), sorted by id."""
    churn = customers.set_index(ID_COLUMN)[CHURN] if CHURN in customers.columns else None
    population = features.population(customers[[ID_COLUMN, SIGNUP]], [as_of], churn)
    return population.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)


def daily_pass(
    predictor: Predictor,
    model_name: str,
    store: EventStore,
    prediction_log: PredictionLog | None,
    as_of: pd.Timestamp,
    out_dir: Path,
    *,
    explain: bool = True,
    chunk_customers: int = CHUNK_CUSTOMERS,
    progress: bool = True,
) -> DailySummary:
    from tqdm import tqdm

    started = time.perf_counter()
    if as_of != as_of.normalize():
        raise ValueError(f"the daily pass scores as of a day (midnight), got {as_of}")
    day = f"{as_of:%Y-%m-%d}"
    summary = DailySummary(model_name, predictor.model_version, day)
    live = LiveFeatures(predictor.schema)
    parts_dir = out_dir / model_name / f"{day}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    errors_path = out_dir / model_name / f"{day}.errors.csv"

    customers = pd.DataFrame(live.prepared_customers(store.customer_columns()))
    active = active_customers(customers, as_of)
    ids = active[ID_COLUMN].tolist()
    summary.customers = len(ids)
    chunks = [ids[start : start + chunk_customers] for start in range(0, len(ids), chunk_customers)]
    summary.chunks = len(chunks)
    prefix = f"daily-{model_name}-{day}-"
    # Another run of the same day (on another host) may log a chunk while this one runs: each append
    # checks the log since a little before this run looked, so a chunk is logged once however they
    # interleave (the margin covers a chunk stamped just before the look and committed just after).
    looked = (datetime.now(UTC) - LOOK_MARGIN).isoformat(timespec="microseconds")
    logged = prediction_log.logged_requests(prefix) if prediction_log is not None else set()
    history = LoggedHistory(prediction_log) if prediction_log is not None else None
    by_id = customers.set_index(ID_COLUMN, drop=False)

    with (
        frozen_heap(),
        tqdm(total=len(ids), unit="customers", desc=f"daily {day}", disable=not progress or None) as bar,
    ):
        for number, chunk in enumerate(chunks):
            part = parts_dir / f"part-{number:05d}.parquet"
            request_id = f"{prefix}{number:05d}"
            if part.exists():
                summary.chunks_done_before += 1
                bar.update(len(chunk))
                continue
            events = store.events_in_range(chunk[0], chunk[-1], as_of.value)
            frame = live.frame(
                store, chunk, as_of, customers=by_id.loc[chunk].reset_index(drop=True), events=events
            )
            checked = predictor.rules.check_frame(frame, allow_extra=False)
            if checked.errors:
                _rejected_rows(checked).to_csv(part.with_suffix(".errors.csv"), index=False)
            batch = predictor.score_checked(checked, explain=explain, history=history)
            if prediction_log is not None and request_id not in logged:
                prediction_log.append(batch, request_id, unless_logged_since=looked)
            result = batch.to_frame(explain_columns=explain)
            result.insert(1, OBSERVATION_COLUMN, as_of)
            temporary = part.with_suffix(".tmp")
            pq.write_table(pa.Table.from_pandas(result, preserve_index=False), temporary)
            temporary.replace(part)
            bar.update(len(chunk))

    snapshot = out_dir / model_name / f"{day}.parquet"
    parts = [pq.read_table(path) for path in sorted(parts_dir.glob("part-*.parquet"))]
    # A column with no value in one chunk (no flags, no escalation) is typed null there: promote it.
    table = pa.concat_tables(parts, promote_options="permissive") if parts else None
    if table is not None:
        temporary = snapshot.with_suffix(".tmp")
        pq.write_table(table, temporary)
        temporary.replace(snapshot)
        result = table.select(["alert_tier"]).to_pandas()
        summary.scored = len(result)
        summary.tiers = {str(k): int(v) for k, v in result["alert_tier"].value_counts().items()}
    summary.rejected = summary.customers - summary.scored
    rejected = sorted(parts_dir.glob("part-*.errors.csv"))
    if rejected:
        pd.concat([pd.read_csv(path, dtype=str) for path in rejected]).to_csv(errors_path, index=False)
        summary.errors_file = str(errors_path)
    summary.snapshot = str(snapshot)
    summary.seconds = time.perf_counter() - started
    manifest = {**asdict(summary), "finished_at": pd.Timestamp.now(tz="UTC").isoformat()}
    (out_dir / model_name / f"{day}.json").write_text(json.dumps(manifest, indent=2))
    log.debug(summary.format())  # the command prints it
    return summary


def _rejected_rows(checked: CheckedFrame) -> pd.DataFrame:
    """Customers whose computed features the model does not accept: id, field and why."""
    return pd.DataFrame(
        {
            ID_COLUMN: [checked.customer_ids[e.row] if e.row is not None else "" for e in checked.errors],
            "field": [e.field for e in checked.errors],
            "message": [f"{e.message} (computed from the stored history)" for e in checked.errors],
        }
    )
