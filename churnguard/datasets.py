"""Dataset configs (`configs/datasets/*.yaml`) and the loaders that read them into normalised frames.

Two kinds of data (DESIGN.md): a `snapshot` is one row per customer with a label column; `events`
is an activity table plus an optional customers table and a churn definition. A new dataset of
either kind is a new YAML file, never new code.

Loaders never drop a row silently: every coercion, drop and rejection is counted in a `DataReport`
that names the file, the column and example rows. Structural problems (missing columns, empty
files, duplicate ids) are errors and stop the load; row-level problems drop the rows and say so.
"""

from __future__ import annotations

import difflib
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
from churnguard.contract_features import CONTRACT_TYPES, term_events
from churnguard.features import EventTypeSpec, before_signup
from churnguard.schema import ID_COLUMN, SignalGroup
from churnguard.settings import config_dir, resolve_path
from churnguard.sources import (
    SPREADSHEET_SUFFIXES,
    CustomerKeys,
    DateColumn,
    TableLayout,
    TypeNames,
    parse_dates,
    read_spreadsheet,
    read_text_table,
    resolve_event_keys,
    snapshot_date_features,
)

log = logging.getLogger(__name__)

FileFormat = Literal["auto", "csv", "parquet", "whitespace", "xlsx"]
EXAMPLES = 5  # example rows quoted per problem


# ---------------------------------------------------------------------------------------------- configs


class FileSpec(TableLayout):
    path: str
    format: FileFormat = "auto"


class LabelSpec(StrictModel):
    column: str
    positive: str | int | bool
    negative: str | int | bool | None = None  # when set, any other value is an error


class DatasetChecks(StrictModel):
    """Label checks that `validate` and `tune` apply before anything is trained."""

    # Fewer churners than this cannot be split into train, validation and test and still say anything.
    min_positives: int = Field(default=20, ge=1)
    # A single column that ranks churners this well alone is almost always the label in disguise.
    leak_roc_auc: float = Field(default=0.98, gt=0.5, le=1.0)


class RecencyBaseline(StrictModel):
    """A snapshot's stand-in for "days since the last event", the lab's simplest baseline (e.g. tenure:
    new customers leave more)."""

    column: str
    churn_when: Literal["high", "low"]  # which end of the column the churners are at


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
    checks: DatasetChecks = DatasetChecks()
    recency_baseline: RecencyBaseline | None = None
    # Date columns become days-since or age as of `snapshot_date`, the day the export describes.
    date_columns: dict[str, DateColumn] = {}
    snapshot_date: date | None = None

    @model_validator(mode="after")
    def _dates_need_a_moment(self) -> SnapshotDataset:
        if self.date_columns and self.snapshot_date is None:
            raise ValueError("`date_columns` count from `snapshot_date`: give the day the export describes")
        return self

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


class SourceEnd(StrictModel):
    """`data_end`: the last day a source covers. Without it the source's end comes from its own data;
    a label needs its whole horizon inside the end of every source that defines churn."""

    data_end: date | None = None


class EventSource(FileSpec, SourceEnd):
    columns: EventColumns = EventColumns()
    type: str | None = None  # constant event type for files without a type column
    timestamp_format: str | None = None  # strftime format, e.g. "%Y%m%d"
    type_names: TypeNames | None = None  # `columns.type` holds ids; this file names them
    customer_keys: CustomerKeys | None = None  # `columns.customer_id` holds another entity's key

    @model_validator(mode="after")
    def _type_from_column_or_constant(self) -> EventSource:
        if (self.columns.type is None) == (self.type is None):
            raise ValueError("give exactly one of `columns.type` (a column) or `type` (a constant)")
        if self.type_names is not None and self.columns.type is None:
            raise ValueError("`type_names` names the ids in `columns.type`, but there is no type column")
        return self


class CustomersSource(FileSpec, SourceEnd):
    id_column: str = "customer_id"
    signup_column: str | None = None
    signup_format: str | None = None
    static_columns: list[str] = []
    categorical_columns: list[str] = []  # static columns to treat as categories even if numeric
    groups: dict[str, SignalGroup] = {}
    default_group: SignalGroup = "profile"
    date_columns: dict[str, DateColumn] = {}  # counted from each observation date (point in time)


class SubscriptionsSource(FileSpec, SourceEnd):
    id_column: str = "customer_id"
    end_column: str = "end_date"
    # The latest start (renewal) date is where the file's knowledge ends; end dates run into the future.
    start_column: str | None = None


class ContractsSource(FileSpec):
    """Contract terms read as signals: one row per term, known from its start. The same file may also
    define churn (`churn.subscriptions`). Its actual end dates are not read: a term ended early tells
    the future; `renewal_column` is the scheduled end agreed at the start."""

    id_column: str = "customer_id"
    start_column: str = "start_date"
    renewal_column: str = "renewal_date"
    date_format: str | None = None
    mrr_column: str | None = None
    seats_column: str | None = None
    auto_renew_column: str | None = None  # the term's auto-renew flag at its start
    auto_renew_off_column: str | None = None  # the day auto-renew was switched off during the term
    group: SignalGroup = "relationship"

    @model_validator(mode="after")
    def _measured(self) -> ContractsSource:
        if self.mrr_column is None and self.seats_column is None:
            raise ValueError("name `mrr_column` or `seats_column` (or both): what the contract is worth")
        return self


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
    contracts: ContractsSource | None = None
    event_types: dict[str, EventTypeConfig] = Field(min_length=1)
    observation: ObservationSpec
    horizon_days: int = Field(gt=0)
    windows_days: list[int] = [7, 30, 90, 180]
    churn: ChurnDefinition
    checks: DatasetChecks = DatasetChecks()
    # Lead-time share reported as "alerted at least this many days before the churn"; default
    # `evaluation.lead_time_days` (30) but at most half the horizon, where an alert can reach it.
    lead_time_days: int | None = Field(default=None, ge=1)

    _path: Path | None = PrivateAttr(default=None)
    _hash: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _churn_source_exists(self) -> EventsDataset:
        if self.churn.column is not None and self.customers is None:
            raise ValueError("churn.column names a customers column, but there is no `customers` file")
        if self.lead_time_days is not None and self.lead_time_days >= self.horizon_days:
            raise ValueError(
                f"`lead_time_days` ({self.lead_time_days}) must be shorter than `horizon_days` "
                f"({self.horizon_days}): a churn inside the horizon is never that far ahead"
            )
        reserved = sorted(set(self.event_types) & set(CONTRACT_TYPES))
        if reserved:
            raise ValueError(f"event types {reserved} are reserved for contracts (the `contracts` source)")
        return self

    def lead_time(self, default: int) -> int:
        return self.lead_time_days or max(1, min(default, self.horizon_days // 2))

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


def config_file(config: DatasetConfig) -> str:
    """The dataset's YAML file, for messages about its keys."""
    return str(config._path or config_dir() / "datasets" / f"{config.name}.yaml")


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
    class_counts: dict[int, int] = field(default_factory=dict)  # label -> rows, once labels exist
    label_rates: dict[str, float] = field(default_factory=dict)  # events: churn rate per observation date

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
        # The mask's index holds the file's 0-based data rows, even after earlier drops.
        examples = [int(i) + 1 for i in mask.index[mask.to_numpy()][:EXAMPLES]]
        level = "error" if strict else "warning"
        self.issues.append(DataIssue(level, str(file), column, f"{why}; rows dropped", count, examples))
        self.rows_dropped[str(file)] = self.rows_dropped.get(str(file), 0) + count

    def unknown_names(self, file: Path | str, key: str, names: list[str], columns: list[str]) -> None:
        """Names in a config key that match no column: a typo would otherwise be ignored silently."""
        for name in names:
            self.error(file, None, f"`{key}` names '{name}', which is not a column{closest(name, columns)}")

    def format(self) -> str:
        lines = [f"dataset '{self.dataset}':"]
        for name, count in self.rows_read.items():
            dropped = self.rows_dropped.get(name, 0)
            lines.append(f"  read {count:,} rows from {name}" + (f", dropped {dropped:,}" if dropped else ""))
        if self.class_counts:
            total = sum(self.class_counts.values())
            churners, others = self.class_counts.get(1, 0), self.class_counts.get(0, 0)
            lines.append(
                f"  labels: {total:,} rows, {churners:,} churners ({churners / total:.1%}), {others:,} not"
            )
        if self.label_rates:
            rates = ", ".join(f"{day} {rate:.1%}" for day, rate in self.label_rates.items())
            lines.append(f"  churn rate by observation date: {rates}")
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
        suffix = path.suffix.lower()
        fmt = "xlsx" if suffix in SPREADSHEET_SUFFIXES else "csv"
        fmt = "parquet" if suffix in {".parquet", ".pq"} else fmt
    if not path.is_file():
        report.error(path, None, "file not found (check `path` in the dataset config)")
        return pd.DataFrame()
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        elif fmt == "xlsx":
            frame = read_spreadsheet(path, spec, id_columns)
        else:
            frame = read_text_table(path, spec, r"\s+" if fmt == "whitespace" else ",", id_columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        sheet = f", sheet {spec.sheet!r}" if fmt == "xlsx" and spec.sheet is not None else ""
        report.error(path, None, f"cannot be read as {fmt}{sheet}: {exc}")
        return pd.DataFrame()
    report.rows_read[str(path)] = len(frame)
    if frame.empty:
        report.error(path, None, "file is empty (no data rows)")
    return frame


def closest_names(name: str, columns: list[str]) -> list[str]:
    """The column names nearest to `name` (difflib, ignoring case)."""
    lowered = {str(c).lower(): str(c) for c in columns}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    return [lowered[c] for c in near]


def closest(name: str, columns: list[str]) -> str:
    """'; did you mean 'x'?' for the nearest column names, or '' when none is close."""
    near = closest_names(name, columns)
    return f"; did you mean {' or '.join(repr(c) for c in near)}?" if near else ""


def require_columns(
    frame: pd.DataFrame, columns: list[str], path: Path | str, report: DataReport, key: str | None = None
) -> bool:
    missing = list(dict.fromkeys(c for c in columns if c not in frame.columns))
    if missing and not frame.empty:
        have = [str(c) for c in frame.columns]
        hints = "".join(
            f"; for '{c}' did you mean {' or '.join(repr(n) for n in near)}?"
            for c in missing
            if (near := closest_names(c, have))
        )
        where = f" (named in `{key}`)" if key else ""
        report.error(path, ", ".join(missing), f"missing column(s){where}{hints}; the file has: {have}")
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
                f"row {int(text.index[i]) + 1}: {text.iloc[i]!r}"
                for i in np.flatnonzero(bad.to_numpy())[:EXAMPLES]
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
            f"row {int(text.index[i]) + 1}: {text.iloc[i]!r}"
            for i in np.flatnonzero(wrong.to_numpy())[:EXAMPLES]
        ]
        report.error(path, column, "expected numbers, found text", int(wrong.sum()), examples)
    newly_blank = blank & values.notna()
    if newly_blank.any() and blanks_ok:
        rows = [int(text.index[i]) + 1 for i in np.flatnonzero(newly_blank.to_numpy())]
        report.warn(path, column, "blank values read as missing (rows kept)", len(rows), rows)
    return numbers.astype("float64")


# ---------------------------------------------------------------------------------------------- snapshot


def check_label_counts(
    report: DataReport,
    labels: pd.Series,
    checks: DatasetChecks,
    file: Path | str,
    column: str | None,
    hint: str = "",
) -> None:
    """Count the classes into the report; one class, or too few churners, is an error."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    report.class_counts = {0: int(counts[0]), 1: int(counts[1])}
    churners, total = int(counts[1]), int(counts.sum())
    if churners == 0 or churners == total:
        every = "0: no churner" if churners == 0 else "1: every row a churner"
        report.error(file, column, f"a single class, every label is {every}{hint}", total)
    elif churners < checks.min_positives:
        report.error(
            file,
            column,
            f"only {churners} churners, fewer than `checks.min_positives` ({checks.min_positives}): "
            "too few to train, validate and test on",
            churners,
        )


def check_snapshot_names(config: SnapshotDataset, columns: list[str], report: DataReport) -> None:
    """Every column the config names must exist: a misspelt `drop_columns` entry would keep a leak in."""
    yaml = config_file(config)
    report.unknown_names(yaml, "drop_columns", [c for c in config.drop_columns if c not in columns], columns)
    report.unknown_names(yaml, "types", [c for c in config.types if c not in columns], columns)
    report.unknown_names(yaml, "date_columns", [c for c in config.date_columns if c not in columns], columns)
    not_features = {config.id_column, config.label.column, *config.drop_columns}
    features = [c for c in columns if c not in not_features]
    for name in config.groups:
        if name in not_features and name in columns:
            role = (
                "the id column"
                if name == config.id_column
                else ("the label column" if name == config.label.column else "dropped by `drop_columns`")
            )
            report.error(yaml, None, f"`groups` names '{name}', which is {role}, not a feature")
        elif name not in columns:
            report.unknown_names(yaml, "groups", [name], features)
    for name in config.types:
        if name in not_features and name in columns:
            report.error(yaml, None, f"`types` names '{name}', which is not a feature column")
    if (recency := config.recency_baseline) is not None:
        if recency.column in not_features and recency.column in columns:
            report.error(yaml, None, f"`recency_baseline` names '{recency.column}', which is not a feature")
        elif recency.column not in columns:
            report.unknown_names(yaml, "recency_baseline.column", [recency.column], features)


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
    if raw.empty or not require_columns(raw, [config.id_column, config.label.column], path, report):
        report.raise_for_fatal()
    check_snapshot_names(config, [str(c) for c in raw.columns], report)
    report.raise_for_fatal()
    frame = raw.drop(columns=config.drop_columns)

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
    labels = positive.fillna(False).astype("int8")
    if labels.nunique() < 2:  # say what the column holds: a wrong `label.positive` makes every label 0
        held = label_text.value_counts(dropna=False).head(EXAMPLES)
        values = ", ".join(f"{value!r} ({count:,})" for value, count in held.items())
        hint = f"; `label.positive` is {config.label.positive!r} and the column holds {values}"
    else:
        hint = ""
    check_label_counts(report, labels, config.checks, path, config.label.column, hint)

    for column, kind in config.types.items():
        if kind == "numeric":
            frame[column] = to_numeric(frame[column], path, column, report, blanks_ok=True)
        else:
            frame[column] = frame[column].astype("string").str.strip().astype(object)
    if config.date_columns:
        moment = pd.Timestamp(config.snapshot_date)
        frame = snapshot_date_features(frame, config.date_columns, moment, path, report, strict)
    report.raise_for_errors()

    features = [c for c in frame.columns if c not in (config.id_column, config.label.column)]
    out = frame[features].copy()
    out.insert(0, ID_COLUMN, ids.astype(str).to_numpy())
    out["label"] = labels.to_numpy()
    return SnapshotData(out.reset_index(drop=True), features, report)


# ---------------------------------------------------------------------------------------------- events


@dataclass
class EventsData:
    events: pd.DataFrame  # customer_id (str), timestamp (datetime64[ns]), type (str), value (float64)
    customers: pd.DataFrame  # customer_id, signup_date, static columns
    churn_dates: pd.Series | None  # indexed by customer_id, NaT = no churn; None for inactivity churn
    static_columns: list[str]
    data_end: pd.Timestamp  # last moment the events cover
    report: DataReport
    # Last day a label may reach: the earliest end of the sources that define churn (None: data_end's day).
    label_end: pd.Timestamp | None = None
    label_end_source: str = ""  # what sets label_end, for messages
    # The contracts source's terms as contract events (contract_features), None without one.
    contracts: pd.DataFrame | None = None

    @property
    def labels_until(self) -> pd.Timestamp:
        return (self.label_end if self.label_end is not None else self.data_end).normalize()


@dataclass
class EventPart:
    """One events file read and normalised; its index holds the file's 0-based data rows."""

    source: EventSource
    path: Path
    frame: pd.DataFrame


def read_event_parts(config: EventsDataset, report: DataReport, strict: bool) -> list[EventPart]:
    root = base_dir(config)
    parts = []
    for source in config.events:
        path = resolve_path(source.path, root)
        raw = read_table(source, root, report, id_columns=(source.columns.customer_id,))
        if raw.empty or not require_columns(raw, event_source_columns(source), path, report):
            continue
        raw = resolve_event_keys(source, raw, root, path, report, strict)
        frame = normalise_events(raw, source, path, report, strict)
        if frame is not None:
            parts.append(EventPart(source, path, frame))
    if not parts:
        report.raise_for_fatal()
    return parts


def event_source_columns(source: EventSource) -> list[str]:
    """The columns an events source reads from its file."""
    columns = source.columns
    return [c for c in (columns.customer_id, columns.timestamp, columns.type, columns.value) if c]


def normalise_events(
    raw: pd.DataFrame, source: EventSource, path: Path, report: DataReport, strict: bool
) -> pd.DataFrame | None:
    """Rows of an events file as customer_id, timestamp, type, value; rows without an id or a readable
    time are dropped and counted. None when the file lacks a configured column (an error in `report`).

    Row by row, so a file may come whole or in batches (the Spark engine); the index holds the rows'
    0-based places in the file, which the report quotes.
    """
    columns = source.columns
    if not require_columns(raw, event_source_columns(source), path, report):
        return None
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
    return frame.assign(customer_id=frame["customer_id"].astype(str), type=frame["type"].astype(str))


def usable_events(
    frame: pd.DataFrame,
    source: EventSource,
    path: Path,
    config: EventsDataset,
    customers: pd.DataFrame,
    now: pd.Timestamp,
    report: DataReport,
    strict: bool,
) -> pd.DataFrame:
    """The normalised events that can be features: not in the future, of a known customer, not before
    the customer's signup. Every drop is counted; event types not in the config are reported."""
    columns = source.columns
    customers_file = customers.attrs.get("source", "the events")
    future = frame["timestamp"] > now
    report.dropped(
        path, columns.timestamp, f"events in the future (after {now:%Y-%m-%d %H:%M} UTC)", future, strict
    )
    frame = frame[(~future).to_numpy()]

    known = frame["customer_id"].isin(customers["customer_id"])
    report.dropped(path, columns.customer_id, f"events of customers not in {customers_file}", ~known, strict)
    frame = frame[known.to_numpy()]

    early = pd.Series(before_signup(frame, customers), index=frame.index)
    report.dropped(path, columns.timestamp, "events before the customer's signup date", early, strict)
    frame = frame[(~early).to_numpy()]

    unknown_types = ~frame["type"].isin(list(config.event_types))
    if unknown_types.any():
        counts = frame.loc[unknown_types.to_numpy(), "type"].value_counts().head(EXAMPLES)
        report.warn(
            path,
            columns.type or "type",
            "event types not in `event_types` are not used for features",
            int(unknown_types.sum()),
            [f"{name}: {count}" for name, count in counts.items()],
        )
    return frame


def first_events(parts: list[EventPart]) -> pd.Series:
    """Each customer's first event over every file, by customer_id (sorted)."""
    firsts = [part.frame.groupby("customer_id")["timestamp"].min() for part in parts]
    if not firsts:
        return pd.Series(dtype="datetime64[ns]", name="timestamp")
    return pd.concat(firsts).groupby(level=0).min()


def read_customers(
    config: EventsDataset, first_seen: pd.Series, report: DataReport, strict: bool
) -> pd.DataFrame:
    """The customers table; `first_seen` (first event per customer_id) stands in for a missing file or
    signup column."""
    source = config.customers
    if source is None:
        # Without a customers file a customer exists from their first event.
        first = first_seen.sort_index()
        return pd.DataFrame({"customer_id": first.index.astype(str), "signup_date": first.to_numpy()})
    root = base_dir(config)
    path = resolve_path(source.path, root)
    raw = read_table(source, root, report, id_columns=(source.id_column,))
    needed = [
        source.id_column,
        *([source.signup_column] if source.signup_column else []),
        *source.static_columns,
        *source.date_columns,
    ]
    if config.churn.column:
        needed.append(config.churn.column)
    if raw.empty or not require_columns(raw, needed, path, report, key="customers"):
        report.raise_for_fatal()
    unknown_groups = [name for name in source.groups if name not in source.static_columns]
    if unknown_groups:
        report.unknown_names(config_file(config), "customers.groups", unknown_groups, source.static_columns)
    not_static = [name for name in source.categorical_columns if name not in source.static_columns]
    if not_static:
        report.unknown_names(
            config_file(config), "customers.categorical_columns", not_static, source.static_columns
        )
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
        customers["signup_date"] = customers["customer_id"].map(first_seen).astype("datetime64[ns]")
    for column in source.static_columns:
        values = raw[column]
        if column in source.categorical_columns or not pd.api.types.is_numeric_dtype(values):
            values = values.astype("string").str.strip().astype(object)
        customers[column] = values.to_numpy()
    for column, spec in source.date_columns.items():
        if column in source.static_columns:
            report.error(config_file(config), column, "in both `customers.static_columns` and `date_columns`")
        customers[column] = parse_dates(raw[column], spec.format, path, column, report, strict).to_numpy()
    if config.churn.column:
        customers["__churn_date"] = parse_timestamps(
            raw[config.churn.column], source.signup_format, path, config.churn.column, report, strict
        ).to_numpy()
    customers.attrs["source"] = str(path)
    return customers


@dataclass
class ChurnDates:
    """Churn day per customer (NaT: not churned, as far as the source knows) and where the source ends."""

    dates: pd.Series | None  # None for inactivity churn
    source_end: pd.Timestamp | None  # the churn source's last day; None: the events' end
    source: str  # the churn source's file, for messages
    end_origin: str  # how source_end was found, for messages


def censor_after(
    churn: pd.Series, end: pd.Timestamp, path: Path | str, column: str, report: DataReport, why: str
) -> pd.Series:
    """A churn day after the source's end is not known yet (scheduled, or a term still running): no churn."""
    late = churn.notna() & (churn.dt.normalize() > end)
    if late.any():
        report.warn(
            path,
            column,
            f"dates after the data's end ({end:%Y-%m-%d}, {why}) are not churn: the customer was still "
            "a customer when the data ends",
            int(late.sum()),
            [str(customer) for customer in churn.index[late.to_numpy()][:EXAMPLES]],
        )
    return churn.where(~late)


def read_churn_dates(
    config: EventsDataset, customers: pd.DataFrame, report: DataReport, strict: bool
) -> ChurnDates:
    churn = config.churn
    if churn.kind == "inactivity":
        return ChurnDates(None, None, "", "")
    if churn.column:
        source = config.customers
        path = customers.attrs.get("source", "customers")
        dates = customers.set_index("customer_id")["__churn_date"].rename("churn_date")
        if source is not None and source.data_end is not None:
            end = pd.Timestamp(source.data_end)
            dates = censor_after(dates, end, path, churn.column, report, "`customers.data_end`")
            return ChurnDates(dates, end, str(path), "`customers.data_end` in the config")
        # A customers table carries the churn dates that happened, not the day it was exported:
        # without `data_end` it is taken to cover as far as the events do.
        return ChurnDates(dates, None, str(path), "")
    source = churn.subscriptions
    root = base_dir(config)
    path = resolve_path(source.path, root)
    raw = read_table(source, root, report, id_columns=(source.id_column,))
    needed = [source.id_column, source.end_column, *([source.start_column] if source.start_column else [])]
    if raw.empty or not require_columns(raw, needed, path, report, key="churn.subscriptions"):
        report.raise_for_fatal()
    ends = pd.DataFrame(
        {
            "customer_id": raw[source.id_column].astype(str).str.strip(),
            "end": parse_timestamps(raw[source.end_column], None, path, source.end_column, report, strict),
        }
    )
    if source.data_end is not None:
        end, origin = pd.Timestamp(source.data_end), "`churn.subscriptions.data_end` in the config"
    elif source.start_column:
        starts = parse_timestamps(raw[source.start_column], None, path, source.start_column, report, strict)
        end, origin = starts.max().normalize(), f"its latest '{source.start_column}'"
    else:
        end, origin = ends["end"].max().normalize(), f"its latest '{source.end_column}'"
    # A customer with any open subscription (no end date) has not churned.
    still_open = ends.groupby("customer_id")["end"].apply(lambda s: s.isna().any())
    last_end = ends.groupby("customer_id")["end"].max().where(~still_open)
    dates = customers["customer_id"].map(last_end).set_axis(customers["customer_id"]).rename("churn_date")
    if pd.notna(end):
        dates = censor_after(dates, end, path, source.end_column, report, origin)
    return ChurnDates(dates, end if pd.notna(end) else None, str(path), origin)


def read_contracts(
    config: EventsDataset, customers: pd.DataFrame, report: DataReport, strict: bool
) -> pd.DataFrame | None:
    """The contracts source's terms as contract events (`contract_features.term_events`); None without
    one. Rows without a customer, a start or a renewal, of unknown customers, or starting before the
    customer's signup are dropped and counted, as events are."""
    source = config.contracts
    if source is None:
        return None
    root = base_dir(config)
    path = resolve_path(source.path, root)
    raw = read_table(source, root, report, id_columns=(source.id_column,))
    optional = (
        source.mrr_column,
        source.seats_column,
        source.auto_renew_column,
        source.auto_renew_off_column,
    )
    needed = [source.id_column, source.start_column, source.renewal_column, *filter(None, optional)]
    if raw.empty or not require_columns(raw, needed, path, report, key="contracts"):
        report.raise_for_fatal()
    ids = raw[source.id_column].astype("string").str.strip()
    start = parse_timestamps(
        raw[source.start_column], source.date_format, path, source.start_column, report, strict
    )
    renewal = parse_timestamps(
        raw[source.renewal_column], source.date_format, path, source.renewal_column, report, strict
    )

    def numbers(column: str | None) -> pd.Series | None:
        return None if column is None else to_numeric(raw[column], path, column, report, blanks_ok=True)

    auto_renew = None
    if source.auto_renew_column is not None:
        flags = raw[source.auto_renew_column]
        text = flags.astype("string").str.strip().str.lower()
        auto_renew = text.map({"true": 1.0, "1": 1.0, "yes": 1.0, "false": 0.0, "0": 0.0, "no": 0.0})
        unreadable = auto_renew.isna() & text.notna() & (text != "")
        if unreadable.any():
            report.error(
                path, source.auto_renew_column, "expected true/false", int(unreadable.sum()),
                [f"row {int(i) + 1}: {text.iloc[i]!r}" for i in np.flatnonzero(unreadable.to_numpy())],
            )  # fmt: skip
        auto_renew = auto_renew.astype("float64")
    switched_off = None
    if source.auto_renew_off_column is not None:
        column = source.auto_renew_off_column
        switched_off = parse_timestamps(raw[column], source.date_format, path, column, report, strict)

    no_id = ids.isna() | (ids == "")
    report.dropped(path, source.id_column, "contracts without a customer id", no_id, strict)
    report.dropped(path, source.start_column, "contracts without a start date", ~no_id & start.isna(), strict)
    report.dropped(
        path,
        source.renewal_column,
        "contracts without a renewal date",
        ~no_id & start.notna() & renewal.isna(),
        strict,
    )
    keep = ~no_id & start.notna() & renewal.notna()
    known = ids.isin(customers[ID_COLUMN])
    report.dropped(
        path, source.id_column, "contracts of customers not in the customers", keep & ~known, strict
    )
    keep &= known
    starts = pd.DataFrame({ID_COLUMN: ids.fillna("").astype(str), "timestamp": start})
    early = keep & pd.Series(before_signup(starts, customers), index=raw.index)
    report.dropped(
        path, source.start_column, "contracts starting before the customer's signup date", early, strict
    )
    keep &= ~early
    report.raise_for_errors()
    rows = keep.to_numpy()

    def kept(series: pd.Series | None) -> pd.Series | None:
        return None if series is None else series[rows]

    return term_events(
        ids[rows],
        start[rows],
        renewal[rows],
        kept(numbers(source.mrr_column)),
        kept(numbers(source.seats_column)),
        kept(auto_renew),
        kept(switched_off),
    )


def source_end(source: EventSource, latest: pd.Timestamp | None) -> tuple[pd.Timestamp | None, str]:
    """An events file's last day: declared, or its latest event (None: the file has none)."""
    if source.data_end is not None:
        return pd.Timestamp(source.data_end), "`data_end` in the config"
    if latest is None or pd.isna(latest):
        return None, ""
    return pd.Timestamp(latest).normalize(), "its latest event"


def label_end_of(
    config: EventsDataset,
    latest_events: list[tuple[EventSource, Path, pd.Timestamp | None]],
    churn: ChurnDates,
) -> tuple[pd.Timestamp | None, str]:
    """The last day a label may reach: the earliest end among the sources that define churn.

    `latest_events`: each events file with the time of its latest usable event. Inactivity churn is
    defined by every events file. Explicit churn by its customers column or subscriptions file, and
    never past the events' end, which the features read.
    """
    ends = [
        (end, f"{path} ({origin})")
        for source, path, latest in latest_events
        for end, origin in [source_end(source, latest)]
    ]
    ends = [(end, where) for end, where in ends if end is not None]
    if not ends:
        return None, ""
    if config.churn.kind == "inactivity":
        return min(ends, key=lambda pair: pair[0])
    events_end = max(ends, key=lambda pair: pair[0])
    if churn.source_end is not None and churn.source_end < events_end[0]:
        return churn.source_end, f"{churn.source} ({churn.end_origin})"
    return events_end


def load_events(config: EventsDataset, strict: bool = False, now: pd.Timestamp | None = None) -> EventsData:
    """Read, normalise and check an events dataset. `strict` turns row drops into errors (validation).

    Drops are checked per events file, so each is credited to its own file and named by its own column.
    """
    report = DataReport(config.name)
    parts = read_event_parts(config, report, strict)
    customers = read_customers(config, first_events(parts), report, strict)
    report.raise_for_fatal()
    now = now or pd.Timestamp.now(tz="UTC").tz_localize(None)
    for part in parts:
        part.frame = usable_events(part.frame, part.source, part.path, config, customers, now, report, strict)

    churn = read_churn_dates(config, customers, report, strict)
    contracts = read_contracts(config, customers, report, strict)
    report.raise_for_errors()
    events = (
        pd.concat([part.frame for part in parts], ignore_index=True)
        .sort_values(["customer_id", "timestamp"], kind="stable")
        .reset_index(drop=True)
    )
    static = config.customers.static_columns if config.customers else []
    data_end = events["timestamp"].max() if len(events) else now
    latest = [
        (part.source, part.path, part.frame["timestamp"].max() if len(part.frame) else None) for part in parts
    ]
    label_end, label_end_source = label_end_of(config, latest, churn)
    return EventsData(
        events,
        customers.drop(columns=["__churn_date"], errors="ignore"),
        churn.dates,
        static,
        data_end,
        report,
        label_end,
        label_end_source,
        contracts,
    )
