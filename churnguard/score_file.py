"""`churnguard score`: a Parquet or CSV file of customers scored offline, streamed in chunks, with the
same checks and the same results as the service."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from churnguard.inputs import CheckedFrame
from churnguard.predict import Predictor, ScoredBatch

T = TypeVar("T")

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ offline scoring


@dataclass
class ScoreSummary:
    model_uri: str
    model_version: str
    input_path: Path
    output_path: Path
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    errors_path: Path | None = None
    tiers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def format(self) -> str:
        rate = self.rows_scored / self.seconds if self.seconds else 0.0
        lines = [
            f"scored {self.rows_scored:,} of {self.rows_read:,} rows with model version {self.model_version} "
            f"into {self.output_path} ({self.seconds:.1f}s, {rate:,.0f} rows/s)",
            "  tiers: " + ", ".join(f"{tier} {count:,}" for tier, count in sorted(self.tiers.items())),
        ]
        if self.rows_rejected:
            lines.append(
                f"  {self.rows_rejected:,} rows could not be scored; each is listed in {self.errors_path}"
            )
        return "\n".join(lines)


def arrow_to_frame(table: object, categorical: Sequence[str]) -> pd.DataFrame:
    """An Arrow table as a frame, text categoricals as pandas Categoricals (hashed once per value)."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    for name in categorical:
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                table = table.set_column(table.column_names.index(name), name, column.dictionary_encode())
    try:
        return table.to_pandas()
    except (KeyError, TypeError, ValueError):  # corrupt pandas metadata: the columns themselves still read
        return table.replace_schema_metadata(None).to_pandas()


def csv_options(categorical: Sequence[str]) -> dict[str, object]:
    """pandas.read_csv options: every cell as text (a bad cell is reported for its row), categoricals
    as Categoricals, and only empty cells missing."""
    from collections import defaultdict

    dtypes: defaultdict[str, str] = defaultdict(lambda: "str")
    dtypes.update(dict.fromkeys(categorical, "category"))
    return {"dtype": dtypes, "keep_default_na": False, "na_values": [""], "low_memory": False}


def read_chunks(path: Path, chunk_rows: int, categorical: Sequence[str]) -> Iterator[pd.DataFrame]:
    """Stream a Parquet or CSV file in chunks (see `csv_options` for how CSV cells are read)."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield arrow_to_frame(pa.Table.from_batches([batch]), categorical)
    elif suffix in {".csv", ".txt"} or suffix.endswith(".gz"):
        yield from pd.read_csv(path, chunksize=chunk_rows, **csv_options(categorical))  # type: ignore[call-overload]
    else:
        raise ValueError(f"{path}: unsupported input format '{suffix}' (use .parquet or .csv)")


_END = object()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What is loaded by now (the libraries, the model) kept out of the collector's passes while a long
    batch runs: full passes would walk those millions of objects again and again while the batch makes
    its own (2.3-2.7 s of 300,000 rows scored with reasons)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of `items`, the next one made in a thread while the caller works on this one: the
    work that holds no GIL (Arrow, CatBoost, most of numpy) takes the core the Python work leaves."""
    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as worker:
        pending = worker.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = worker.submit(next, items, _END)
            yield item


def count_rows(path: Path) -> int | None:
    if path.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


class _ResultWriter:
    """Appends result chunks to Parquet or CSV, chosen by the output file's suffix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parquet = path.suffix.lower() in {".parquet", ".pq"}
        if not self.parquet and path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: unsupported output format '{path.suffix}' (use .parquet or .csv)")
        self._writer = None
        self._schema = None
        self._header = True
        # Written behind: the next chunk is scored while this one is encoded and compressed.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self._pending: Future | None = None

    def write(self, frame: pd.DataFrame) -> None:
        self._wait()
        self._pending = self._thread.submit(self._write, frame)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a failed write raises here

    def _write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema)
            if self._writer is None:
                self._schema = table.schema
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
        else:
            frame.to_csv(self.path, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._thread.shutdown()
            if self._writer is not None:
                self._writer.close()


@dataclass
class ScoredChunk:
    results: pd.DataFrame | None  # row_number, then the prediction contract's columns; None: no valid row
    errors: list[dict]  # row_number, customer_id, field, message per problem
    rejected: int  # rows not scored
    tiers: dict[str, int]


def check_chunk(predictor: Predictor, chunk: pd.DataFrame, first_row: int) -> CheckedFrame:
    """The input rules on one chunk of a file whose first data row is `first_row` (1-based)."""
    chunk.index = pd.RangeIndex(len(chunk))  # in place: reset_index copies every column
    return predictor.rules.check_frame(chunk, first_row=first_row, allow_extra=True)


def chunk_errors(checked: CheckedFrame) -> list[dict]:
    """row_number, customer_id, field and message of every problem the checks found."""
    ids = dict(zip(checked.row_numbers.tolist(), checked.customer_ids, strict=True))
    return [
        {"row_number": e.row, "customer_id": ids.get(e.row, ""), "field": e.field, "message": e.message}
        for e in checked.errors
    ]


def chunk_results(checked: CheckedFrame, batch: ScoredBatch, explain: bool) -> pd.DataFrame:
    """The scored rows as the output file holds them: row_number, then the prediction contract."""
    frame = batch.to_frame(explain_columns=explain)
    frame.insert(0, "row_number", checked.row_numbers[checked.valid])
    return frame


def tier_counts(batch: ScoredBatch) -> dict[str, int]:
    return {str(t): int(n) for t, n in zip(*np.unique(batch.tier, return_counts=True), strict=True)}


def score_chunk(predictor: Predictor, chunk: pd.DataFrame, first_row: int, explain: bool) -> ScoredChunk:
    """Check and score one chunk in one call (the Spark engine's batches), with the same pieces as
    `score_file`'s two stages."""
    checked = check_chunk(predictor, chunk, first_row)
    errors = chunk_errors(checked) if checked.errors else []
    rejected = int((~checked.valid).sum())
    valid = checked.only_valid()
    if not len(valid):
        return ScoredChunk(None, errors, rejected, {})
    batch = predictor.score_checked(valid, explain=explain)
    return ScoredChunk(chunk_results(checked, batch, explain), errors, rejected, tier_counts(batch))


def score_file(
    model_uri: str,
    input_path: Path,
    output_path: Path,
    chunk_rows: int = 100_000,
    explain: bool = False,
) -> ScoreSummary:
    """Score a Parquet or CSV file of customers in chunks; same results as the service.

    Rows that fail the input rules are not scored and not dropped silently: each one is written to
    `<output>.errors.csv` with its data row number (1-based), field and message. The output keeps a
    `row_number` column so results join back to the input. Extra input columns are ignored.
    """
    from tqdm import tqdm

    from churnguard.tracking import resolve_model

    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ValueError(f"{input_path}: input file not found")
    resolved = resolve_model(model_uri)
    predictor = Predictor.load(resolved.local_dir, resolved.version)
    summary = ScoreSummary(model_uri, predictor.model_version, input_path, output_path)
    errors_path = output_path.with_name(output_path.name + ".errors.csv")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    writer = _ResultWriter(output_path)
    error_rows: list[dict] = []
    error_header = True
    tiers: dict[str, int] = {}
    progress = tqdm(total=count_rows(input_path), unit="rows", desc="scoring", disable=None)

    def checked_chunks() -> Iterator[tuple[int, CheckedFrame, CheckedFrame]]:
        first_row = 1
        for chunk in read_chunks(input_path, chunk_rows, predictor.schema.categorical_names):
            checked = check_chunk(predictor, chunk, first_row)
            first_row += len(chunk)
            yield len(chunk), checked, checked.only_valid()

    def scored_chunks() -> Iterator[tuple[int, CheckedFrame, ScoredBatch | None]]:
        for rows, checked, valid in ahead(checked_chunks()):
            yield rows, checked, predictor.score_checked(valid, explain=explain) if len(valid) else None

    try:
        with frozen_heap():
            # Three stages, each a chunk ahead of the next: reading (Arrow) and checking, scoring (CatBoost
            # and the SHAP contributions, the longest), and the results and reasons written out (the
            # reasons chosen there too: ScoredBatch builds them when first asked for). Balanced so that
            # the scoring stage does nothing the other two can do.
            for rows, checked, batch in ahead(scored_chunks()):
                summary.rows_read += rows
                if checked.errors:
                    summary.rows_rejected += int((~checked.valid).sum())
                    error_rows.extend(chunk_errors(checked))
                if batch is not None:
                    writer.write(chunk_results(checked, batch, explain))
                    summary.rows_scored += len(batch)
                    for tier, count in tier_counts(batch).items():
                        tiers[tier] = tiers.get(tier, 0) + count
                if error_rows:
                    pd.DataFrame(error_rows).to_csv(
                        errors_path, mode="w" if error_header else "a", header=error_header, index=False
                    )
                    error_header = False
                    error_rows = []
                progress.update(rows)
    finally:
        progress.close()
        writer.close()
    if summary.rows_scored == 0 and summary.rows_read == 0:
        log.warning("%s: no rows to score", input_path)
    summary.errors_path = errors_path if summary.rows_rejected else None
    if not summary.rows_rejected and errors_path.exists():
        errors_path.unlink()
    summary.tiers = tiers
    summary.seconds = time.perf_counter() - started
    log.info(summary.format())
    return summary
