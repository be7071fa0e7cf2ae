"""Shapes real exports have, that a dataset YAML can declare: spreadsheets with a sheet and a header
row, date columns turned into days-since or age, event type names from a lookup file, and events keyed
by another entity (a subscription, a user) mapped to their customer through a mapping file.

`churnguard.datasets` reads the files and calls these; every value these cannot use is counted and
reported with its file, column and rows, never dropped silently.
"""

from __future__ import annotations

import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from openpyxl.utils.exceptions import InvalidFileException
from pydantic import Field

from churnguard.config import StrictModel
from churnguard.schema import SignalGroup

if TYPE_CHECKING:  # datasets imports this module
    from churnguard.datasets import DataReport, EventSource, FileSpec

EXAMPLES = 5
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm"})
DAYS_PER_YEAR = 365.2425


# ---------------------------------------------------------------------------------------------- files


class TableLayout(StrictModel):
    """Where a file's table starts: the sheet of a workbook and the row holding the column names."""

    sheet: str | int | None = None  # xlsx: sheet name, or 0-based position; default the first sheet
    header_row: int = Field(1, ge=1)  # 1-based row of the column names; rows above it are skipped


def read_spreadsheet(path: Path, spec: FileSpec, id_columns: tuple[str, ...]) -> pd.DataFrame:
    """One sheet of an .xlsx workbook (openpyxl). ValueError names the missing sheet and the ones there."""
    try:
        workbook = pd.ExcelFile(path, engine="openpyxl")
    except (zipfile.BadZipFile, InvalidFileException) as error:
        raise ValueError(f"not an .xlsx workbook ({error})") from None
    with workbook:
        sheets = [str(name) for name in workbook.sheet_names]
        sheet = 0 if spec.sheet is None else spec.sheet
        if isinstance(sheet, str) and sheet not in sheets:
            raise ValueError(f"no sheet {sheet!r} (check `sheet`); the workbook has sheets {sheets}")
        if isinstance(sheet, int) and not 0 <= sheet < len(sheets):
            raise ValueError(f"no sheet at position {sheet} (check `sheet`); the workbook has {sheets}")
        return workbook.parse(sheet, header=spec.header_row - 1, dtype={column: str for column in id_columns})


def read_text_table(path: Path, spec: FileSpec, separator: str, id_columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep=separator,
        header=spec.header_row - 1,
        dtype={column: str for column in id_columns},
        low_memory=False,
    )


# ---------------------------------------------------------------------------------------------- dates


DateDerivation = Literal["days_since", "age_years"]


class DateColumn(StrictModel):
    """A date column read as a number: days since the date, or age in whole and fractional years.

    Counted from each observation date (events data) or from the snapshot's date, so a date after the
    moment a row describes is not known then: it reads as missing, counted in the report.
    """

    derive: DateDerivation = "days_since"
    format: str | None = None  # strftime format, e.g. "%d/%m/%Y"; default ISO and common forms
    name: str | None = None  # the feature's name; default days_since_<column> or age_years_<column>
    group: SignalGroup | None = None  # default: the dataset's default group

    def feature_name(self, column: str) -> str:
        return self.name or f"{self.derive}_{column}"


def parse_dates(
    values: pd.Series,
    fmt: str | None,
    path: Path | str,
    column: str,
    report: DataReport,
    strict: bool,
) -> pd.Series:
    """datetime64[ns] of a feature's date column. Unparseable text reads as missing and is counted with
    its rows (an error when validating: the row is kept, but the date it holds is lost)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        # Spreadsheets hand years as numbers (1994.0) and cells formatted as dates as datetimes,
        # whatever the column's text format says.
        text = values.astype("string").str.strip().str.replace(r"^(\d+)\.0$", r"\1", regex=True)
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        moments = values.map(lambda value: isinstance(value, (datetime, date)))
        if moments.any():
            parsed[moments] = pd.to_datetime(values[moments].astype(str), utc=True, errors="coerce")
        bad = parsed.isna() & text.notna() & (text != "")
        if bad.any():
            examples = [
                f"row {int(i) + 1}: {text.iloc[i]!r}" for i in np.flatnonzero(bad.to_numpy())[:EXAMPLES]
            ]
            expected = f"format {fmt!r}" if fmt else "a date such as 2024-05-31"
            level = report.error if strict else report.warn
            level(
                path,
                column,
                f"dates that cannot be parsed (expected {expected}) read as missing; rows kept",
                int(bad.sum()),
                examples,
            )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def derive_dates(dates: np.ndarray, as_of: np.ndarray, derive: str) -> np.ndarray:
    """Days (or years) from each date to its row's moment; NaN where the date is missing or after the
    moment, which a row as of that moment cannot know. The one place both the offline tables and the
    live loop turn a date into a feature."""
    dates = np.asarray(dates, dtype="datetime64[ns]")
    as_of = np.asarray(as_of, dtype="datetime64[ns]")
    days = (as_of - dates) / np.timedelta64(1, "D")
    days = np.where(dates > as_of, np.nan, days).astype(np.float64)  # NaT compares False: NaN already
    return days / DAYS_PER_YEAR if derive == "age_years" else days


def snapshot_date_features(
    frame: pd.DataFrame,
    date_columns: dict[str, DateColumn],
    snapshot_date: pd.Timestamp,
    path: Path | str,
    report: DataReport,
    strict: bool,
) -> pd.DataFrame:
    """A snapshot's date columns replaced by their derived features, as of the snapshot's date."""
    for column, spec in date_columns.items():
        name = spec.feature_name(column)
        if name != column and name in frame.columns:
            report.error(path, column, f"its derived feature '{name}' is also a column of the file")
            continue
        dates = parse_dates(frame[column], spec.format, path, column, report, strict)
        report_future_dates(dates, snapshot_date, path, column, report)
        moment = np.full(len(frame), snapshot_date.to_datetime64(), dtype="datetime64[ns]")
        position = frame.columns.get_loc(column)
        frame = frame.drop(columns=[column])
        frame.insert(position, name, derive_dates(dates.to_numpy(), moment, spec.derive))
    return frame


def report_future_dates(
    dates: pd.Series, as_of: pd.Timestamp, path: Path | str, column: str, report: DataReport
) -> None:
    """A snapshot's dates after its own date: read as missing, counted."""
    late = dates > as_of
    if late.any():
        report.warn(
            path,
            column,
            f"dates after the snapshot's date ({as_of:%Y-%m-%d}) are not known as of it: read as missing",
            int(late.sum()),
            [f"row {int(i) + 1}" for i in np.flatnonzero(late.to_numpy())[:EXAMPLES]],
        )


# ---------------------------------------------------------------------------------------------- events


class TypeNames(TableLayout):
    """A lookup file that names the event types the events carry as ids (e.g. `types.csv`)."""

    path: str
    format: Literal["auto", "csv", "parquet", "whitespace", "xlsx"] = "auto"
    id_column: str = "type_id"
    name_column: str = "type_name"


class CustomerKeys(TableLayout):
    """A mapping file from the entity the events are keyed by (a subscription, a user) to its customer."""

    path: str
    format: Literal["auto", "csv", "parquet", "whitespace", "xlsx"] = "auto"
    key_column: str  # the mapping file's column holding the events' key, e.g. subscription_id
    customer_column: str = "customer_id"


def _lookup(
    spec: TypeNames | CustomerKeys,
    key: str,
    value: str,
    config_key: str,
    root: Path,
    report: DataReport,
) -> tuple[pd.Series | None, Path]:
    """The lookup file as a key -> value Series of stripped text; None when it cannot be used."""
    from churnguard.datasets import read_table, require_columns
    from churnguard.settings import resolve_path

    path = resolve_path(spec.path, root)
    raw = read_table(spec, root, report, id_columns=(key, value))
    if raw.empty or not require_columns(raw, [key, value], path, report, key=config_key):
        return None, path
    keys = raw[key].astype("string").str.strip()
    values = raw[value].astype("string").str.strip()
    conflicting = keys.duplicated(keep=False) & ~pd.DataFrame({"k": keys, "v": values}).duplicated(keep=False)
    if conflicting.any():
        report.error(
            path,
            key,
            f"keys mapped to more than one '{value}'",
            int(conflicting.sum()),
            sorted(set(keys[conflicting].dropna()))[:EXAMPLES],
        )
        return None, path
    usable = keys.notna() & (keys != "")
    table = pd.Series(values[usable].to_numpy(), index=keys[usable].to_numpy())
    return table[~table.index.duplicated()], path


def resolve_event_keys(
    source: EventSource, raw: pd.DataFrame, root: Path, path: Path, report: DataReport, strict: bool
) -> pd.DataFrame:
    """The events file with its type ids replaced by names and its keys by customer ids, through the
    lookup files the source declares. Rows whose id or key the file does not hold are dropped, counted
    and reported with the events file and its own column."""
    columns = source.columns
    keep = pd.Series(True, index=raw.index)
    if source.type_names is not None and columns.type is not None:
        names, lookup_path = _lookup(
            source.type_names,
            source.type_names.id_column,
            source.type_names.name_column,
            "events.type_names",
            root,
            report,
        )
        if names is not None:
            ids = raw[columns.type].astype("string").str.strip()
            ids = ids.str.replace(r"\.0$", "", regex=True)  # ids read as floats where a value is missing
            named = ids.map(names)
            unknown = named.isna() & ids.notna()
            held = ids[unknown].value_counts().head(EXAMPLES)
            counts = ", ".join(f"{name!r}: {n}" for name, n in held.items())
            report.dropped(
                path,
                columns.type,
                f"events whose type id is not in {lookup_path} "
                f"('{source.type_names.id_column}'; ids {counts})",
                unknown,
                strict,
            )
            raw = raw.assign(**{columns.type: named})
            keep &= ~unknown
    if source.customer_keys is not None:
        spec = source.customer_keys
        customers, lookup_path = _lookup(
            spec, spec.key_column, spec.customer_column, "events.customer_keys", root, report
        )
        if customers is not None:
            keys = raw[columns.customer_id].astype("string").str.strip()
            mapped = keys.map(customers)
            unmapped = mapped.isna() & keys.notna() & (keys != "")
            report.dropped(
                path,
                columns.customer_id,
                f"events whose '{columns.customer_id}' has no customer in {lookup_path} "
                f"('{spec.key_column}' -> '{spec.customer_column}')",
                unmapped & keep,
                strict,
            )
            raw = raw.assign(**{columns.customer_id: mapped})
            keep &= ~unmapped
    return raw[keep.to_numpy()]
