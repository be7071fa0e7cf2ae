"""Dataset configs (`configs/datasets/*.yaml`) and the loaders that read them into normalised frames.

Two kinds of data (DESIGN.md): a `snapshot` is one row per customer with a label column; `events`
is an activity table plus an optional customers table and a churn definition. A new dataset of
either kind is a new YAML file, never new code.

Loaders never drop a row silently: every coercion, drop and rejection is counted in a `DataReport`
that names the file, the column and example rows. Structural problems (missing columns, empty
files, duplicate ids) are errors and stop the load; row-level problems drop the rows and say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr, model_validator

from churnguard.config import (
    ConfigError,
    StrictModel,
    UsageError,
    deep_merge,
    env_overrides,
    env_prefix_for,
    read_yaml,
)
from churnguard.config import validate as validate_config
from churnguard.features import EventTypeSpec
from churnguard.schema import ID_COLUMN, SignalGroup
from churnguard.settings import config_dir, resolve_path

log = logging.getLogger(__name__)

FileFormat = Literal["auto", "csv", "parquet", "whitespace"]
EXAMPLES = 5  # example rows quoted per problem


# ---------------------------------------------------------------------------------------------- configs


class FileSpec(StrictModel):
    path: str
    format: FileFormat = "auto"


class LabelSpec(StrictModel):
    column: str
    positive: str | int | bool
    negative: str | int | bool | None = None  # when set, any other value is an error


class SnapshotDataset(StrictModel):
    kind: Literal["snapshot"]
    name: str
    model_name: str | None = None
    description: str = ""
    source: FileSpec
    id_column: str
    label: LabelSpec
    drop_columns: list[str] = []
    # Type fixes: `numeric` turns text into numbers (blanks become missing, never dropped);
    # `categorical` treats codes such as 0/1 as categories.
    types: dict[str, Literal["numeric", "categorical"]] = {}
    groups: dict[str, SignalGroup] = {}
    default_group: SignalGroup = "profile"

    _path: Path | None = PrivateAttr(default=None)
    _hash: str = PrivateAttr(default="")

    @property
    def registered_model_name(self) -> str:
        return self.model_name or f"churn-{self.name}"


class EventColumns(StrictModel):
    """Which source columns hold the normalised fields; `type` may instead be a constant on the source."""

    customer_id: str = "customer_id"
    timestamp: str = "timestamp"
    type: str | None = "type"
    value: str | None = "value"


class EventSource(FileSpec):
    columns: EventColumns = EventColumns()
    type: str | None = None  # constant event type for files without a type column
    timestamp_format: str | None = None  # strftime format, e.g. "%Y%m%d"

    @model_validator(mode="after")
    def _type_from_column_or_constant(self) -> EventSource:
        if (self.columns.type is None) == (self.type is None):
            raise ValueError("give exactly one of `columns.type` (a column) or `type` (a constant)")
        return self


class CustomersSource(FileSpec):
    id_column: str = "customer_id"
    signup_column: str | None = None
    signup_format: str | None = None
    static_columns: list[str] = []
    categorical_columns: list[str] = []  # static columns to treat as categories even if numeric
    groups: dict[str, SignalGroup] = {}
    default_group: SignalGroup = "profile"


class SubscriptionsSource(FileSpec):
    id_column: str = "customer_id"
    end_column: str = "end_date"


class ChurnDefinition(StrictModel):
    """Explicit churn (a customers column, or the last end date in a subscriptions file), or inactivity."""

    kind: Literal["explicit", "inactivity"]
    column: str | None = None
    subscriptions: SubscriptionsSource | None = None
    inactivity_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> ChurnDefinition:
        if self.kind == "explicit" and (self.column is None) == (self.subscriptions is None):
            raise ValueError(
                "explicit churn needs exactly one of `column` (customers file) or `subscriptions`"
            )
        if self.kind == "inactivity" and self.inactivity_days is None:
            raise ValueError("inactivity churn needs `inactivity_days`")
        return self


class EventTypeConfig(StrictModel):
    group: SignalGroup
    has_value: bool = False
    label: str | None = None

    def spec(self) -> EventTypeSpec:
        return EventTypeSpec(group=self.group, has_value=self.has_value, label=self.label)


class ObservationSpec(StrictModel):
    start: date
    end: date
    every_days: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ObservationSpec:
        if self.end < self.start:
            raise ValueError(f"`end` ({self.end}) is before `start` ({self.start})")
        return self

    def dates(self) -> list[pd.Timestamp]:
        return list(pd.date_range(self.start, self.end, freq=f"{self.every_days}D"))


class EventsDataset(StrictModel):
    kind: Literal["events"]
    name: str
    model_name: str | None = None
    description: str = ""
    events: list[EventSource] = Field(min_length=1)
    customers: CustomersSource | None = None
    event_types: dict[str, EventTypeConfig] = Field(min_length=1)
    observation: ObservationSpec
    horizon_days: int = Field(gt=0)
    windows_days: list[int] = [7, 30, 90, 180]
    churn: ChurnDefinition

    _path: Path | None = PrivateAttr(default=None)
    _hash: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _churn_source_exists(self) -> EventsDataset:
        if self.churn.column is not None and self.customers is None:
            raise ValueError("churn.column names a customers column, but there is no `customers` file")
        return self

    @property
    def registered_model_name(self) -> str:
        return self.model_name or f"churn-{self.name}"


DatasetConfig = Annotated[SnapshotDataset | EventsDataset, Field(discriminator="kind")]


class _DatasetFile(StrictModel):
    dataset: DatasetConfig


_KINDS = frozenset({"dataset", "snapshot", "events"})  # wrapper and discriminator tags, not file keys


def dataset_path(name_or_path: str | Path) -> Path:
    """`telco` -> `configs/datasets/telco.yaml`; an existing path is taken as is."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return candidate.resolve()
    return config_dir() / "datasets" / f"{name_or_path}.yaml"


def load_dataset_config(name_or_path: str | Path, environ: dict[str, str] | None = None) -> DatasetConfig:
    path = dataset_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / "datasets").glob("*.yaml"))
        raise ConfigError(f"{path}: no such dataset config (known datasets: {', '.join(known) or 'none'})")
    data = deep_merge(read_yaml(path), env_overrides(env_prefix_for(path), environ))
    model = {"snapshot": SnapshotDataset, "events": EventsDataset}.get(data.get("kind"))
    if model is None:  # let pydantic explain the missing or unknown `kind`
        config = validate_config(_DatasetFile, {"dataset": data}, str(path), _KINDS).dataset
    else:
        config = validate_config(model, data, str(path))
    config._path = path
    # The hash identifies the effective config (file plus overrides); the lab logs it with each run.
    config._hash = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return config


def config_hash(config: DatasetConfig) -> str:
    return config._hash


def base_dir(config: DatasetConfig) -> Path:
    return config._path.parent if config._path else config_dir() / "datasets"


# ---------------------------------------------------------------------------------------------- reports


@dataclass
class DataIssue:
    level: Literal["error", "warning"]
    file: str
    column: str | None
    message: str
    rows: int = 0  # rows affected
    examples: list[Any] = field(default_factory=list)  # example rows (1-based data rows) or values
    fatal: bool = False  # structural: the file cannot be used at all, loading stops

    def format(self) -> str:
        where = f"{self.file}" + (f", column '{self.column}'" if self.column else "")
        count = f" ({self.rows} rows)" if self.rows else ""
        examples = f"; e.g. {self.examples}" if self.examples else ""
        return f"{self.level.upper()}: {where}: {self.message}{count}{examples}"


@dataclass
class DataReport:
    dataset: str
    issues: list[DataIssue] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[DataIssue]:
        return [issue for issue in self.issues if issue.level == "error"]

    def error(self, file: Path | str, column: str | None, message: str, rows: int = 0, examples=()) -> None:
        """A structural problem: the data cannot be used as configured."""
        self.issues.append(
            DataIssue("error", str(file), column, message, rows, list(examples)[:EXAMPLES], True)
        )

    def warn(self, file: Path | str, column: str | None, message: str, rows: int = 0, examples=()) -> None:
        self.issues.append(DataIssue("warning", str(file), column, message, rows, list(examples)[:EXAMPLES]))

    def dropped(self, file: Path | str, column: str | None, why: str, mask: pd.Series, strict: bool) -> None:
        """Count rows removed for `why`; with `strict` (validation) they are errors, otherwise warnings."""
        count = int(mask.sum())
        if not count:
            return
        examples = [int(i) + 1 for i in np.flatnonzero(mask.to_numpy())[:EXAMPLES]]
        level = "error" if strict else "warning"
        self.issues.append(DataIssue(level, str(file), column, f"{why}; rows dropped", count, examples))
        self.rows_dropped[str(file)] = self.rows_dropped.get(str(file), 0) + count

    def format(self) -> str:
        lines = [f"dataset '{self.dataset}':"]
        for name, count in self.rows_read.items():
            dropped = self.rows_dropped.get(name, 0)
            lines.append(f"  read {count:,} rows from {name}" + (f", dropped {dropped:,}" if dropped else ""))
        lines += [f"  {issue.format()}" for issue in self.issues] or ["  no problems found"]
        return "\n".join(lines)

    def raise_for_fatal(self) -> None:
        """Stop loading at a structural problem; row-level errors (strict mode) are collected to the end."""
        if any(issue.fatal for issue in self.issues):
            raise DataError(self)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DataError(self)


class DataError(UsageError):
    """Data that cannot be used as configured; the message lists every problem with file and column."""

    def __init__(self, report: DataReport) -> None:
        super().__init__("\n".join(issue.format() for issue in report.errors))
        self.report = report


# ---------------------------------------------------------------------------------------------- reading


def read_table(
    spec: FileSpec, root: Path, report: DataReport, id_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read a CSV, whitespace-separated or Parquet file. Ids are read as text (keeps leading zeros)."""
    path = resolve_path(spec.path, root)
    fmt = spec.format
    if fmt == "auto":
        fmt = "parquet" if path.suffix in {".parquet", ".pq"} else "csv"
    if not path.is_file():
        report.error(path, None, "file not found (check `path` in the dataset config)")
        return pd.DataFrame()
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            sep = r"\s+" if fmt == "whitespace" else ","
            frame = pd.read_csv(path, sep=sep, dtype={c: str for c in id_columns}, low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        report.error(path, None, f"cannot be read as {fmt}: {exc}")
        return pd.DataFrame()
    report.rows_read[str(path)] = len(frame)
    if frame.empty:
        report.error(path, None, "file is empty (no data rows)")
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], path: Path | str, report: DataReport) -> bool:
    missing = [c for c in columns if c not in frame.columns]
    if missing and not frame.empty:
        report.error(path, ", ".join(missing), f"missing column(s); the file has: {list(frame.columns)}")
    return not missing


def parse_timestamps(
    values: pd.Series, fmt: str | None, path: Path | str, column: str, report: DataReport, strict: bool
) -> pd.Series:
    """Parse to datetime64[ns] (timezone-naive UTC). Unparseable values are dropped and reported."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        text = values.astype("string").str.strip()
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        bad = parsed.isna() & text.notna() & (text != "")
        if bad.any():
            examples = [
                f"row {int(i) + 1}: {text.iloc[i]!r}" for i in np.flatnonzero(bad.to_numpy())[:EXAMPLES]
            ]
            expected = f"format {fmt!r}" if fmt else "an ISO date/time"
            report.issues.append(
                DataIssue(
                    "error" if strict else "warning",
                    str(path),
                    column,
                    f"timestamps that cannot be parsed (expected {expected}); rows dropped",
                    int(bad.sum()),
                    examples,
                )
            )
            report.rows_dropped[str(path)] = report.rows_dropped.get(str(path), 0) + int(bad.sum())
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def to_numeric(
    values: pd.Series, path: Path | str, column: str, report: DataReport, blanks_ok: bool
) -> pd.Series:
    """Numbers from text. Blanks become missing (counted); other text is a type error naming examples."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    text = values.astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    blank = text.isna() | (text == "")
    wrong = numbers.isna() & ~blank
    if wrong.any():
        examples = [
            f"row {int(i) + 1}: {text.iloc[i]!r}" for i in np.flatnonzero(wrong.to_numpy())[:EXAMPLES]
        ]
        report.error(path, column, "expected numbers, found text", int(wrong.sum()), examples)
    newly_blank = blank & values.notna()
    if newly_blank.any() and blanks_ok:
        rows = [int(i) + 1 for i in np.flatnonzero(newly_blank.to_numpy())]
        report.warn(path, column, "blank values read as missing (rows kept)", len(rows), rows)
    return numbers.astype("float64")


# ---------------------------------------------------------------------------------------------- snapshot


@dataclass
class SnapshotData:
    """One row per customer: `customer_id`, `label` (0/1) and the feature columns."""

    frame: pd.DataFrame
    feature_columns: list[str]
    report: DataReport


def load_snapshot(config: SnapshotDataset, strict: bool = False) -> SnapshotData:
    report = DataReport(config.name)
    root = base_dir(config)
    path = resolve_path(config.source.path, root)
    raw = read_table(config.source, root, report, id_columns=(config.id_column,))
    needed = [config.id_column, config.label.column, *config.types]
    if raw.empty or not require_columns(raw, needed, path, report):
        report.raise_for_fatal()
    frame = raw.drop(columns=[c for c in config.drop_columns if c in raw.columns])

    ids = frame[config.id_column].astype("string").str.strip()
    missing_id = ids.isna() | (ids == "")
    if missing_id.any():
        report.error(
            path,
            config.id_column,
            "missing customer ids",
            int(missing_id.sum()),
            [int(i) + 1 for i in np.flatnonzero(missing_id.to_numpy())],
        )
    duplicated = ids.duplicated(keep=False) & ~missing_id
    if duplicated.any():
        report.error(
            path,
            config.id_column,
            "duplicate customer ids",
            int(duplicated.sum()),
            sorted(set(ids[duplicated].head(EXAMPLES * 2)))[:EXAMPLES],
        )

    label = frame[config.label.column]
    label_text = label.astype("string").str.strip()
    positive = label_text == str(config.label.positive)
    unknown = label_text.isna()
    if config.label.negative is not None:
        unknown |= ~positive & (label_text != str(config.label.negative))
    if unknown.any():
        report.error(
            path,
            config.label.column,
            f"label values other than {config.label.positive!r}/{config.label.negative!r}",
            int(unknown.sum()),
            [f"row {int(i) + 1}" for i in np.flatnonzero(unknown.to_numpy())],
        )

    for column, kind in config.types.items():
        if kind == "numeric":
            frame[column] = to_numeric(frame[column], path, column, report, blanks_ok=True)
        else:
            frame[column] = frame[column].astype("string").str.strip().astype(object)
    report.raise_for_errors()

    features = [c for c in frame.columns if c not in (config.id_column, config.label.column)]
    out = frame[features].copy()
    out.insert(0, ID_COLUMN, ids.astype(str).to_numpy())
    out["label"] = positive.fillna(False).astype("int8").to_numpy()
    return SnapshotData(out.reset_index(drop=True), features, report)


# ---------------------------------------------------------------------------------------------- events


@dataclass
class EventsData:
    events: pd.DataFrame  # customer_id (str), timestamp (datetime64[ns]), type (str), value (float64)
    customers: pd.DataFrame  # customer_id, signup_date, static columns
    churn_dates: pd.Series | None  # indexed by customer_id, NaT = no churn; None for inactivity churn
    static_columns: list[str]
    data_end: pd.Timestamp  # last moment the data covers
    report: DataReport


def read_events(config: EventsDataset, report: DataReport, strict: bool) -> pd.DataFrame:
    root = base_dir(config)
    parts = []
    for source in config.events:
        path = resolve_path(source.path, root)
        columns = source.columns
        raw = read_table(source, root, report, id_columns=(columns.customer_id,))
        needed = [c for c in (columns.customer_id, columns.timestamp, columns.type, columns.value) if c]
        if raw.empty or not require_columns(raw, needed, path, report):
            continue
        frame = pd.DataFrame(
            {
                "customer_id": raw[columns.customer_id].astype("string").str.strip(),
                "timestamp": parse_timestamps(
                    raw[columns.timestamp], source.timestamp_format, path, columns.timestamp, report, strict
                ),
                "type": raw[columns.type].astype("string") if columns.type else source.type,
                "value": (
                    to_numeric(raw[columns.value], path, columns.value, report, blanks_ok=False)
                    if columns.value
                    else np.nan
                ),
            }
        )
        missing_id = frame["customer_id"].isna() | (frame["customer_id"] == "")
        report.dropped(path, columns.customer_id, "events without a customer id", missing_id, strict)
        keep = ~missing_id & frame["timestamp"].notna()
        frame = frame[keep.to_numpy()]
        frame = frame.assign(customer_id=frame["customer_id"].astype(str), type=frame["type"].astype(str))
        frame.attrs["source"] = str(path)
        parts.append(frame)
    if not parts:
        report.raise_for_fatal()
        return pd.DataFrame(columns=["customer_id", "timestamp", "type", "value"])
    return pd.concat(parts, ignore_index=True)


def read_customers(
    config: EventsDataset, events: pd.DataFrame, report: DataReport, strict: bool
) -> pd.DataFrame:
    source = config.customers
    if source is None:
        # Without a customers file a customer exists from their first event.
        first = events.groupby("customer_id", sort=True)["timestamp"].min()
        return pd.DataFrame({"customer_id": first.index.astype(str), "signup_date": first.to_numpy()})
    root = base_dir(config)
    path = resolve_path(source.path, root)
    raw = read_table(source, root, report, id_columns=(source.id_column,))
    needed = [
        source.id_column,
        *([source.signup_column] if source.signup_column else []),
        *source.static_columns,
    ]
    if config.churn.column:
        needed.append(config.churn.column)
    if raw.empty or not require_columns(raw, needed, path, report):
        report.raise_for_fatal()
    ids = raw[source.id_column].astype("string").str.strip()
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        report.error(
            path,
            source.id_column,
            "duplicate customer ids",
            int(duplicated.sum()),
            sorted(set(ids[duplicated].head(EXAMPLES * 2)))[:EXAMPLES],
        )
    customers = pd.DataFrame({"customer_id": ids.astype(str)})
    if source.signup_column:
        customers["signup_date"] = parse_timestamps(
            raw[source.signup_column], source.signup_format, path, source.signup_column, report, strict
        ).to_numpy()
    else:
        first = events.groupby("customer_id")["timestamp"].min()
        customers["signup_date"] = customers["customer_id"].map(first).astype("datetime64[ns]")
    for column in source.static_columns:
        values = raw[column]
        if column in source.categorical_columns or not pd.api.types.is_numeric_dtype(values):
            values = values.astype("string").str.strip().astype(object)
        customers[column] = values.to_numpy()
    if config.churn.column:
        customers["__churn_date"] = parse_timestamps(
            raw[config.churn.column], source.signup_format, path, config.churn.column, report, strict
        ).to_numpy()
    customers.attrs["source"] = str(path)
    return customers


def read_churn_dates(config: EventsDataset, customers: pd.DataFrame, report: DataReport, strict: bool):
    churn = config.churn
    if churn.kind == "inactivity":
        return None
    if churn.column:
        return customers.set_index("customer_id")["__churn_date"].rename("churn_date")
    source = churn.subscriptions
    root = base_dir(config)
    path = resolve_path(source.path, root)
    raw = read_table(source, root, report, id_columns=(source.id_column,))
    if raw.empty or not require_columns(raw, [source.id_column, source.end_column], path, report):
        report.raise_for_fatal()
    ends = pd.DataFrame(
        {
            "customer_id": raw[source.id_column].astype(str).str.strip(),
            "end": parse_timestamps(raw[source.end_column], None, path, source.end_column, report, strict),
        }
    )
    # A customer with any open subscription (no end date) has not churned.
    still_open = ends.groupby("customer_id")["end"].apply(lambda s: s.isna().any())
    last_end = ends.groupby("customer_id")["end"].max().where(~still_open)
    return customers["customer_id"].map(last_end).set_axis(customers["customer_id"]).rename("churn_date")


def load_events(config: EventsDataset, strict: bool = False, now: pd.Timestamp | None = None) -> EventsData:
    """Read, normalise and check an events dataset. `strict` turns row drops into errors (validation)."""
    report = DataReport(config.name)
    events = read_events(config, report, strict)
    customers = read_customers(config, events, report, strict)
    report.raise_for_fatal()
    events_file = str(resolve_path(config.events[0].path, base_dir(config)))
    customers_file = customers.attrs.get("source", events_file)

    now = now or pd.Timestamp.now(tz="UTC").tz_localize(None)
    report.dropped(
        events_file,
        "timestamp",
        f"events in the future (after {now:%Y-%m-%d %H:%M} UTC)",
        events["timestamp"] > now,
        strict,
    )
    events = events[(events["timestamp"] <= now).to_numpy()]

    known = events["customer_id"].isin(customers["customer_id"])
    report.dropped(events_file, "customer_id", f"events of customers not in {customers_file}", ~known, strict)
    events = events[known.to_numpy()]

    signup = events["customer_id"].map(customers.set_index("customer_id")["signup_date"])
    early = signup.notna() & (events["timestamp"] < signup.dt.normalize())
    report.dropped(events_file, "timestamp", "events before the customer's signup date", early, strict)
    events = events[(~early).to_numpy()]

    unknown_types = ~events["type"].isin(list(config.event_types))
    if unknown_types.any():
        counts = events.loc[unknown_types.to_numpy(), "type"].value_counts().head(EXAMPLES)
        report.warn(
            events_file,
            "type",
            "event types not in `event_types` are not used for features",
            int(unknown_types.sum()),
            [f"{name}: {count}" for name, count in counts.items()],
        )

    churn_dates = read_churn_dates(config, customers, report, strict)
    report.raise_for_errors()
    events = events.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    static = config.customers.static_columns if config.customers else []
    data_end = events["timestamp"].max() if len(events) else now
    return EventsData(
        events,
        customers.drop(columns=["__churn_date"], errors="ignore"),
        churn_dates,
        static,
        data_end,
        report,
    )
