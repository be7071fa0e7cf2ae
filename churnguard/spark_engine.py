"""The Spark engine: the feature table (`churnguard features --engine spark`) past one machine's memory.

Spark moves the data; pandas computes. Every customer is hashed to one of N buckets, and each bucket's
events and customers meet in one `cogroup(...).applyInPandas` call that runs the pandas engine's own
code on them: `normalise_events`/`usable_events` (the loader's row rules), `features.population`, the
labels and `customer_features`. A customer's features read only that customer's events, so a bucket
gives exactly the rows the whole table holds for its customers, and the feature definitions stay in
one place. Memory is bounded by the largest bucket, not by the data.

Two passes over the events: the first counts what the loader would drop (the data report) and finds
where each file ends, which decides the labelled observation dates; the second builds the table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnguard import features
from churnguard.config import UsageError
from churnguard.datasets import (
    DataIssue,
    DataReport,
    EventsData,
    EventsDataset,
    EventSource,
    base_dir,
    closest,
    event_source_columns,
    label_end_of,
    normalise_events,
    read_churn_dates,
    read_contracts,
    read_customers,
    usable_events,
)
from churnguard.feature_table import (
    SPARK_SIDECAR,
    FeaturePlan,
    customer_features,
    labelled_observation_dates,
)
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN, FeatureSchema
from churnguard.settings import resolve_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


CUSTOMERS_PER_BUCKET = 2_000  # ~200 events a customer a year: ~0.5 M events, ~100 MB of pandas a bucket
BUCKET = "__bucket"
SOURCE = "__source"  # the events file's place in the config
ROW = "__row"  # the event's place in its file: ties in time keep file order, as `load_events` does
POSITION = "__position"  # the customer's place in the customers table: the pandas engine's row order
CHURN = "__churn_ns"
TYPE_CODE = "__type"  # the event type's place in the config; -1: a type the config does not name
OTHER_TYPE = "__other"  # what a bucket calls those types (only inactivity labels read them)
# Events travel to their bucket as numbers only: customer by position, type by code. Text is most of
# the cost of moving rows between the JVM and Python, and of the shuffle.
EVENT_DTYPES = {
    POSITION: np.int64,
    "timestamp": np.int64,
    TYPE_CODE: np.int16,
    "value": np.float64,
    SOURCE: np.int32,
    ROW: np.int64,
}

# Settings the engine relies on, whatever the cluster's defaults.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # pandas writes nanosecond timestamps, which Spark cannot read as timestamps: as int64 nanoseconds
    # they reach pandas exactly, and are converted there.
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
}


def spark_session(master: str | None = None, conf: dict[str, str] | None = None) -> SparkSession:
    """A session for the engine. Without `master` Spark decides: `spark-submit --master`, the
    `spark.master` of spark-defaults.conf, or local[*]. Python workers run this interpreter unless
    PYSPARK_PYTHON says otherwise (on a cluster it must name an environment with churnguard)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:  # a caller's session (a notebook, a test): use it as it is
        return active
    builder = SparkSession.builder.appName("churnguard")
    if master:
        builder = builder.master(master)
    for key, value in {**SESSION_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def warm_up(spark: SparkSession, tasks: int = 2) -> None:
    """Start the Python workers and import the engine in each: the fixed cost of a session's first
    job, which a benchmark reports apart from the work."""

    def load(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import churnguard.spark_engine  # noqa: F401  # what every task of the engine imports

        yield from batches

    spark.range(tasks, numPartitions=tasks).mapInPandas(load, "id long").collect()


def bucket_of(customer_ids: pd.Series, buckets: int) -> np.ndarray:
    """A stable bucket per customer id: the same in every process and on every machine."""
    hashes = pd.util.hash_array(customer_ids.to_numpy(dtype=object))
    return (hashes % np.uint64(buckets)).astype(np.int32)


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Source:
    number: int
    source: EventSource
    path: Path
    nanosecond_time: bool  # the timestamp column arrives as int64 nanoseconds (see SESSION_CONF)
    row_numbers: bool  # ROW is the 0-based row in the file (Parquet), not just an increasing id (CSV)


def _read_source(
    spark: SparkSession, number: int, source: EventSource, path: Path, report: DataReport
) -> tuple[_Source, DataFrame] | None:
    """An events file as Spark rows of its configured columns, plus SOURCE and ROW."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    fmt = source.format
    if fmt == "auto":
        fmt = "parquet" if path.suffix in {".parquet", ".pq"} else "csv"
        fmt = "xlsx" if path.suffix.lower() in {".xlsx", ".xlsm"} else fmt
    unsupported = [
        *([f"format {fmt}"] if fmt not in {"parquet", "csv"} else []),
        *(["`header_row`"] if source.header_row != 1 else []),
        *(["`type_names`"] if source.type_names is not None else []),
        *(["`customer_keys`"] if source.customer_keys is not None else []),
    ]
    if unsupported:
        raise UsageError(
            f"{path}: the Spark engine reads Parquet and CSV files with names in the first row, without "
            f"lookup files; this source has {', '.join(unsupported)} (use the pandas engine, or convert it)"
        )
    if not path.exists():
        report.error(path, None, "file not found (check `path` in the dataset config)")
        return None
    if fmt == "parquet":
        frame = spark.read.parquet(str(path))
        row = F.col("_metadata.row_index")
    else:
        # Every cell as text, as the pandas engine's reader gives ids; times and values are parsed by
        # the same pandas code.
        frame = spark.read.csv(str(path), header=True)
        row = F.monotonically_increasing_id()  # increasing in file order within one file
    needed = event_source_columns(source)
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        hints = "".join(closest(column, frame.columns) for column in missing)
        report.error(path, ", ".join(missing), f"missing column(s){hints}; the file has: {frame.columns}")
        return None
    time_type = frame.schema[source.columns.timestamp].dataType
    spec = _Source(
        number, source, path, isinstance(time_type, LongType) and fmt == "parquet", fmt == "parquet"
    )
    return spec, frame.select(*needed, F.lit(number).alias(SOURCE), row.alias(ROW))


def _raw_batch(batch: pd.DataFrame, spec: _Source) -> pd.DataFrame:
    """A batch of a file's rows as the pandas reader gives them: indexed by row, times as datetimes."""
    raw = batch.set_index(pd.Index(batch[ROW].to_numpy(), name=None)).drop(columns=[SOURCE, ROW])
    column = spec.source.columns.timestamp
    if spec.nanosecond_time:
        raw[column] = pd.to_datetime(raw[column], unit="ns")
    return raw


def _usable_batch(
    batch: pd.DataFrame,
    spec: _Source,
    config: EventsDataset,
    customers: pd.DataFrame,
    now: pd.Timestamp,
    report: DataReport,
) -> pd.DataFrame:
    """One batch of a file through the loader's row rules (drops counted in `report`)."""
    frame = normalise_events(_raw_batch(batch, spec), spec.source, spec.path, report, strict=False)
    if frame is None:
        return pd.DataFrame(columns=["customer_id", "timestamp", "type", "value"])
    return usable_events(frame, spec.source, spec.path, config, customers, now, report, strict=False)


# ------------------------------------------------------------------------------------------ the report


def _plain(example: object) -> object:
    return example if isinstance(example, int | float | str) else str(example)


def _issue_rows(report: DataReport) -> list[str]:
    return [
        json.dumps([i.level, i.file, i.column, i.message, i.rows, [_plain(e) for e in i.examples], i.fatal])
        for i in report.issues
    ]


def _merge_issues(report: DataReport, rows: list[str], row_numbers: dict[str, bool]) -> None:
    """Add the batches' issues to `report`, one per (file, column, message) with the rows summed."""
    merged: dict[tuple, DataIssue] = {}
    for text in rows:
        level, file, column, message, count, examples, fatal = json.loads(text)
        key = (level, file, column, message)
        if key not in merged:
            merged[key] = DataIssue(level, file, column, message, 0, [], fatal)
            report.issues.append(merged[key])
        issue = merged[key]
        issue.rows += count
        if row_numbers.get(file, True):  # CSV on Spark: no file row numbers to quote
            issue.examples = (issue.examples + examples)[:5]
        if message.endswith("rows dropped"):
            report.rows_dropped[file] = report.rows_dropped.get(file, 0) + count


def _scan_events(
    sources: list[tuple[_Source, DataFrame]],
    config: EventsDataset,
    customers: pd.DataFrame,
    now: pd.Timestamp,
    report: DataReport,
) -> dict[int, pd.Timestamp | None]:
    """Pass one: rows read and dropped per file into `report`, and each file's latest usable event."""
    from pyspark.sql import functions as F

    known = customers[[ID_COLUMN, features.SIGNUP_COLUMN]]
    summary_schema = "source int, rows long, latest long, issues array<string>"
    totals = None
    for spec, frame in sources:

        def scan(batches: Iterator[pd.DataFrame], spec: _Source = spec) -> Iterator[pd.DataFrame]:
            for batch in batches:
                part_report = DataReport(config.name)
                usable = _usable_batch(batch, spec, config, known, now, part_report)
                latest = usable["timestamp"].max() if len(usable) else pd.NaT
                yield pd.DataFrame(
                    {
                        "source": [spec.number],
                        "rows": [len(batch)],
                        "latest": [None if pd.isna(latest) else pd.Timestamp(latest).value],
                        "issues": [_issue_rows(part_report)],
                    }
                )

        part = frame.mapInPandas(scan, summary_schema)
        totals = part if totals is None else totals.unionByName(part)
    assert totals is not None
    summary = (
        totals.groupBy("source")
        .agg(
            F.sum("rows").alias("rows"),
            F.max("latest").alias("latest"),
            F.flatten(F.collect_list("issues")).alias("issues"),
        )
        .toPandas()
    )
    latest: dict[int, pd.Timestamp | None] = {}
    row_numbers = {str(spec.path): spec.row_numbers for spec, _ in sources}
    for spec, _ in sources:
        row = summary[summary["source"] == spec.number]
        rows = int(row["rows"].iloc[0]) if len(row) else 0
        report.rows_read[str(spec.path)] = rows
        if not rows:
            report.error(spec.path, None, "file is empty (no data rows)")
        value = row["latest"].iloc[0] if len(row) else None
        latest[spec.number] = None if value is None or pd.isna(value) else pd.Timestamp(int(value))
        if len(row):
            _merge_issues(report, list(row.iloc[0, 3]), row_numbers)
    return latest


# ------------------------------------------------------------------------------------------ the table


@dataclass
class SparkFeatureTable:
    """What `spark_feature_table` wrote: a Parquet folder that `FeatureTable.read` opens."""

    dataset: str
    path: Path
    schema: FeatureSchema
    report: DataReport
    buckets: int
    rows: int
    label_rate: float
    seconds: float


def _first_seen(
    spark: SparkSession, sources: list[tuple[_Source, DataFrame]], config: EventsDataset
) -> pd.Series:
    """Each customer's first event over every file (a customer exists from it, without a signup date)."""
    from pyspark.sql import functions as F

    firsts = None
    for spec, frame in sources:

        def normalise(batches: Iterator[pd.DataFrame], spec: _Source = spec) -> Iterator[pd.DataFrame]:
            for batch in batches:
                rows = normalise_events(
                    _raw_batch(batch, spec), spec.source, spec.path, DataReport(""), False
                )
                if rows is not None and len(rows):
                    yield pd.DataFrame(
                        {ID_COLUMN: rows[ID_COLUMN], "first": rows["timestamp"].astype("int64").to_numpy()}
                    )

        part = frame.mapInPandas(normalise, f"{ID_COLUMN} string, first long")
        firsts = part if firsts is None else firsts.unionByName(part)
    assert firsts is not None
    table = firsts.groupBy(ID_COLUMN).agg(F.min("first").alias("first")).toPandas()
    series = pd.Series(pd.to_datetime(table["first"], unit="ns").to_numpy(), index=table[ID_COLUMN])
    return series.sort_index().rename("timestamp")


def _customers_frame(
    customers: pd.DataFrame,
    churn_dates: pd.Series | None,
    static: list[str],
    date_columns: list[str],
    buckets: int,
) -> pd.DataFrame:
    """The customers as Spark gets them: times as int64 nanoseconds (exact), bucket, position."""
    frame = pd.DataFrame(
        {
            ID_COLUMN: customers[ID_COLUMN].to_numpy(dtype=object),
            features.SIGNUP_COLUMN: _nanoseconds(customers[features.SIGNUP_COLUMN]),
        }
    )
    for column in static:
        frame[column] = customers[column].to_numpy()
    for column in date_columns:
        frame[column] = _nanoseconds(customers[column])
    if churn_dates is not None:
        frame[CHURN] = _nanoseconds(churn_dates.reindex(customers[ID_COLUMN].to_numpy()))
    frame[POSITION] = np.arange(len(customers), dtype=np.int64)
    frame[BUCKET] = bucket_of(customers[ID_COLUMN], buckets)
    return frame


def _nanoseconds(values: pd.Series) -> pd.Series:
    """datetime64 as nullable int64 nanoseconds: Spark keeps microseconds only, int64 keeps them all."""
    times = pd.Series(values.to_numpy(dtype="datetime64[ns]"))
    return pd.Series(times.to_numpy().view(np.int64), dtype="Int64").where(times.notna().to_numpy())


def _from_nanoseconds(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values.astype("Int64"), unit="ns").to_numpy(dtype="datetime64[ns]")


@dataclass(frozen=True)
class BucketTable:
    """The table's rows for one bucket of customers, by the pandas engine's code: what
    `events_table` does for the whole dataset, done for the customers of one bucket."""

    plan: FeaturePlan
    dates: tuple[pd.Timestamp, ...]
    static: tuple[str, ...]
    date_columns: tuple[str, ...]  # the customers' dates that features count from each observation
    explicit: bool  # explicit churn dates; otherwise inactivity
    horizon_days: int
    names: tuple[str, ...]  # the output columns, in order
    # The contracts source's terms as contract events (`read_contracts`): one row per term, so they
    # travel with the job, not through the shuffle.
    contracts: pd.DataFrame | None = None

    def __call__(self, events: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
        if events.empty:  # a bucket whose customers have no events yet
            events = pd.DataFrame({c: pd.Series(dtype=t) for c, t in EVENT_DTYPES.items()})
        customers = customers.sort_values(POSITION)
        members = pd.DataFrame(
            {
                ID_COLUMN: customers[ID_COLUMN].to_numpy(dtype=object),
                features.SIGNUP_COLUMN: _from_nanoseconds(customers[features.SIGNUP_COLUMN]),
            }
        )
        for column in self.static:
            members[column] = customers[column].to_numpy()
        for column in self.date_columns:
            members[column] = _from_nanoseconds(customers[column])
        churn_dates = None
        if self.explicit:
            churn_dates = pd.Series(_from_nanoseconds(customers[CHURN]), index=members[ID_COLUMN].to_numpy())
        events = _in_load_order(events, customers, list(self.plan.event_types))
        population = features.population(members, list(self.dates), churn_dates)
        if population.empty:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in self.names})
        contracts = None
        if self.contracts is not None:
            contracts = self.contracts[self.contracts[ID_COLUMN].isin(members[ID_COLUMN]).to_numpy()]
        frame, _ = customer_features(self.plan, events, members, population, contracts=contracts)
        if churn_dates is not None:
            label = features.label_explicit(population, churn_dates, self.horizon_days)
        else:
            label = features.label_inactivity(population, events, self.horizon_days)
        frame.insert(0, LABEL_COLUMN, label.astype("int8").to_numpy())
        frame.insert(0, OBSERVATION_COLUMN, population[OBSERVATION_COLUMN].to_numpy())
        frame.insert(0, ID_COLUMN, population[ID_COLUMN].to_numpy())
        return frame[list(self.names)]


def _in_load_order(events: pd.DataFrame, customers: pd.DataFrame, type_names: list[str]) -> pd.DataFrame:
    """A bucket's events with their customer ids and type names back, ordered as `load_events` orders
    them within each customer: by time, ties in file order (config order, then row). Features read
    events per customer: the order across customers does not matter."""
    nanoseconds = events["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((events[ROW].to_numpy(), events[SOURCE].to_numpy(), nanoseconds))
    members = pd.Index(customers[POSITION].to_numpy()).get_indexer(events[POSITION].to_numpy()[order])
    names = np.array([*type_names, OTHER_TYPE], dtype=object)  # code -1 picks OTHER_TYPE
    return pd.DataFrame(
        {
            ID_COLUMN: customers[ID_COLUMN].to_numpy(dtype=object)[members],
            "timestamp": nanoseconds[order].view("datetime64[ns]"),
            "type": names[events[TYPE_CODE].to_numpy()[order]],
            "value": events["value"].to_numpy(dtype=np.float64)[order],
        }
    )


def _feature_schema(plan: FeaturePlan, customers: pd.DataFrame, date: pd.Timestamp) -> FeatureSchema:
    """The table's feature schema (columns, dtypes, groups) exactly as the pandas engine decides it:
    `customer_features` on one customer and no events."""
    first = customers.head(1)
    probe = pd.DataFrame({ID_COLUMN: first[ID_COLUMN], OBSERVATION_COLUMN: [date] * len(first)})
    no_events = pd.DataFrame(
        {
            ID_COLUMN: pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns]"),
            "type": pd.Series(dtype=object),
            "value": pd.Series(dtype=float),
        }
    )
    return customer_features(plan, no_events, customers, probe)[1]


def spark_feature_table(
    config: EventsDataset,
    out: Path,
    spark: SparkSession,
    *,
    customers_per_bucket: int = CUSTOMERS_PER_BUCKET,
    now: pd.Timestamp | None = None,
) -> SparkFeatureTable:
    """Build `config`'s feature table on Spark into the Parquet folder `out` (replaced).

    The rows, columns, dtypes and values are the pandas engine's (`build_feature_table`); the rows come
    in a different order (by bucket, then as pandas orders them: observation date, customers' order).
    """
    import pyarrow as pa
    from pyspark.sql.types import ByteType, DoubleType, StringType, StructField, StructType, TimestampNTZType

    started = time.perf_counter()
    now = now or pd.Timestamp.now(tz="UTC").tz_localize(None)
    report = DataReport(config.name)
    root = base_dir(config)
    sources = []
    for number, source in enumerate(config.events):
        found = _read_source(spark, number, source, resolve_path(source.path, root), report)
        if found is not None:
            sources.append(found)
    report.raise_for_fatal()
    needs_first_seen = config.customers is None or config.customers.signup_column is None
    first_seen = (
        _first_seen(spark, sources, config) if needs_first_seen else pd.Series(dtype="datetime64[ns]")
    )
    customers = read_customers(config, first_seen, report, strict=False)
    report.raise_for_fatal()

    log.info("spark features for '%s': pass 1 of 2, checking %d events file(s)", config.name, len(sources))
    latest = _scan_events(sources, config, customers, now, report)
    churn = read_churn_dates(config, customers, report, strict=False)
    contracts = read_contracts(config, customers, report, strict=False)
    report.raise_for_errors()
    label_end, label_end_source = label_end_of(
        config, [(spec.source, spec.path, latest[spec.number]) for spec, _ in sources], churn
    )
    known_latest = [t for t in latest.values() if t is not None]
    static = list(config.customers.static_columns) if config.customers else []
    data = EventsData(
        pd.DataFrame(),
        customers.drop(columns=["__churn_date"], errors="ignore"),
        churn.dates,
        static,
        max(known_latest) if known_latest else now,
        report,
        label_end,
        label_end_source,
    )
    dates = labelled_observation_dates(config, data)
    plan = FeaturePlan.from_config(config)

    schema = _feature_schema(plan, data.customers, dates[0])

    buckets = max(1, math.ceil(len(customers) / customers_per_bucket))
    date_columns = [column for column, *_ in plan.date_features]
    customer_rows = _customers_frame(data.customers, churn.dates, static, date_columns, buckets)
    customers_df = spark.createDataFrame(pa.Table.from_pandas(customer_rows, preserve_index=False))
    static_fields = [customers_df.schema[column] for column in static]
    out_schema = StructType(
        [
            StructField(ID_COLUMN, StringType()),
            StructField(OBSERVATION_COLUMN, TimestampNTZType()),
            StructField(LABEL_COLUMN, ByteType()),
            StructField("tenure_days", DoubleType()),
            *[StructField(f.name, f.dataType) for f in static_fields],
            *[StructField(spec.name, DoubleType()) for spec in schema.features[1 + len(static) :]],
        ]
    )
    names = [field.name for field in out_schema.fields]
    known = data.customers[[ID_COLUMN, features.SIGNUP_COLUMN]]
    explicit = config.churn.kind == "explicit"
    horizon = config.horizon_days

    build = BucketTable(
        plan, tuple(dates), tuple(static), tuple(date_columns), explicit, horizon, tuple(names), contracts
    )
    bucket_by_position = customer_rows[BUCKET].to_numpy()
    type_names = list(plan.event_types)

    def bucket_events(batches: Iterator[pd.DataFrame], spec: _Source) -> Iterator[pd.DataFrame]:
        # Once per task: the lookups from text to numbers.
        customer_index, type_index = pd.Index(known[ID_COLUMN]), pd.Index(type_names)
        for batch in batches:
            rows = _usable_batch(batch, spec, config, known, now, DataReport(config.name))
            types = type_index.get_indexer(rows["type"]).astype(np.int16)
            if explicit:  # types outside the config make no feature; inactivity labels read every event
                rows, types = rows[types >= 0], types[types >= 0]
            positions = customer_index.get_indexer(rows[ID_COLUMN])  # every one known: usable_events
            yield pd.DataFrame(
                {
                    POSITION: positions,
                    "timestamp": rows["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64),
                    TYPE_CODE: types,
                    "value": rows["value"].to_numpy(dtype=np.float64),
                    SOURCE: spec.number,
                    ROW: rows.index.to_numpy(dtype=np.int64),
                    BUCKET: bucket_by_position[positions],
                }
            )

    log.info(
        "spark features for '%s': pass 2 of 2, %d customers in %d buckets, %d observation dates",
        config.name, len(customers), buckets, len(dates),
    )  # fmt: skip
    events_df = None
    for spec, frame in sources:
        part = frame.mapInPandas(
            lambda batches, spec=spec: bucket_events(batches, spec),
            f"{POSITION} long, timestamp long, {TYPE_CODE} smallint, value double, "
            f"{SOURCE} int, {ROW} long, {BUCKET} int",
        )
        events_df = part if events_df is None else events_df.unionByName(part)
    assert events_df is not None
    table = (
        events_df.groupBy(BUCKET)
        .cogroup(customers_df.groupBy(BUCKET))
        .applyInPandas(lambda events, customers: build(events, customers), out_schema)
    )
    table.write.mode("overwrite").parquet(str(out))

    from pyspark.sql import functions as F

    totals = spark.read.parquet(str(out)).agg(F.count("*").alias("rows"), F.avg(LABEL_COLUMN).alias("rate"))
    counted = totals.collect()[0]
    rows, rate = int(counted["rows"]), float(counted["rate"] if counted["rate"] is not None else "nan")
    meta = {"dataset": config.name, "kind": "events", "horizon_days": horizon, "engine": "spark"}
    (out / SPARK_SIDECAR).write_text(json.dumps({**meta, "schema": json.loads(schema.model_dump_json())}))
    seconds = time.perf_counter() - started
    log.info("spark features for '%s': %d rows in %.1f s", config.name, rows, seconds)
    return SparkFeatureTable(config.name, out, schema, report, buckets, rows, rate, seconds)
