"""`churnguard score --engine spark`: a Parquet file too large for one machine, scored in Spark's
batches by the same `Predictor` and the same `score_chunk` as `churnguard score`.

The model artifact travels with the job as bytes (it is small), so executors need no access to the
registry or to the driver's disk; each Python worker unpacks and loads it once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnguard.config import UsageError
from churnguard.predict import Predictor
from churnguard.score_file import ScoreSummary, arrow_to_frame, score_chunk

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ROW = "__row_number"  # the input's 1-based data row, from Parquet's row index
_PREDICTORS: dict[str, Predictor] = {}  # per Python worker: artifact digest -> loaded predictor
ERROR_COLUMNS = {"row_number": "long", "customer_id": "string", "field": "string", "message": "string"}


def _pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    return buffer.getvalue()


def _predictor(packed: bytes, version: str) -> Predictor:
    digest = hashlib.sha256(packed).hexdigest()
    if digest not in _PREDICTORS:
        folder = Path(tempfile.mkdtemp(prefix="churnguard-model-"))
        with zipfile.ZipFile(io.BytesIO(packed)) as archive:
            archive.extractall(folder)
        # One CatBoost thread: Spark runs one task per core already.
        _PREDICTORS[digest] = Predictor.load(folder, version, thread_count=1)
    return _PREDICTORS[digest]


def _result_schema(predictor: Predictor, explain: bool) -> pa.Schema:
    """The columns `score_chunk` gives, typed (a column of Nones alone would not say its type)."""
    import pyarrow as pa

    from churnguard.predict import _reference_frame

    sample = score_chunk(predictor, _reference_frame(predictor.artifact).head(3), 1, explain).results
    assert sample is not None, "the model's own reference rows fail its input checks"
    types = {
        "row_number": pa.int64(),
        "customer_id": pa.string(),
        "churn_probability": pa.float64(),
        "health_score": pa.int64(),
        "value_score": pa.float64(),
        "priority": pa.int64(),
    }
    return pa.schema(
        [
            (name, types.get(name, pa.int64() if name.startswith("group_score_") else pa.string()))
            for name in sample.columns
        ]
    )


def _chunk(batch: pa.RecordBatch, categorical: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """A batch as `churnguard score` reads a chunk, and its rows' numbers in the file."""
    import pyarrow as pa

    rows = batch.column(ROW).to_numpy()
    table = pa.Table.from_batches([batch]).drop_columns([ROW])
    return arrow_to_frame(table, categorical), rows


def score_file_on_spark(
    model_uri: str, input_path: Path, output_path: Path, spark: SparkSession, explain: bool = False
) -> ScoreSummary:
    """Score a Parquet file (or folder) into the Parquet folder `output_path`, results equal to
    `score_file`'s. Rows failing the input rules go, with row number, field and message, to the CSV
    folder `<output>.errors.csv`; none is dropped silently."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    from churnguard.tracking import resolve_model

    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise ValueError(f"{input_path}: input file not found")
    if input_path.is_file() and input_path.suffix.lower() not in {".parquet", ".pq"}:
        raise UsageError(
            f"{input_path}: the Spark engine scores Parquet; convert the file or use --engine pandas"
        )
    resolved = resolve_model(model_uri)
    predictor = Predictor.load(resolved.local_dir, resolved.version)
    packed, version = _pack(resolved.local_dir), predictor.model_version
    categorical = list(predictor.schema.categorical_names)
    arrow_schema = _result_schema(predictor, explain)
    summary = ScoreSummary(model_uri, version, input_path, output_path)

    source = spark.read.parquet(str(input_path))
    source = source.select("*", (F.col("_metadata.row_index") + 1).alias(ROW))

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _predictor(packed, version)
        for batch in batches:
            chunk, rows = _chunk(batch, categorical)
            results = score_chunk(scorer, chunk, 0, explain).results
            if results is not None:
                results["row_number"] = rows[results["row_number"].to_numpy()]
                yield from pa.Table.from_pandas(
                    results, schema=arrow_schema, preserve_index=False
                ).to_batches()

    def errors(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _predictor(packed, version)
        for batch in batches:
            chunk, rows = _chunk(batch, categorical)
            chunk.index = pd.RangeIndex(len(chunk))
            checked = scorer.rules.check_frame(chunk, first_row=0, allow_extra=True)
            if checked.errors:
                ids = dict(zip(checked.row_numbers.tolist(), checked.customer_ids, strict=True))
                frame = pd.DataFrame(
                    {
                        "row_number": [int(rows[e.row]) for e in checked.errors],
                        "customer_id": [ids.get(e.row, "") for e in checked.errors],
                        "field": [e.field for e in checked.errors],
                        "message": [e.message for e in checked.errors],
                    }
                )
                yield pa.RecordBatch.from_pandas(frame, preserve_index=False)

    from pyspark.sql.pandas.types import from_arrow_schema

    spark_schema: StructType = from_arrow_schema(arrow_schema)
    source.mapInArrow(score, spark_schema).write.mode("overwrite").parquet(str(output_path))
    errors_path = output_path.with_name(output_path.name + ".errors.csv")
    error_schema = ", ".join(f"{name} {kind}" for name, kind in ERROR_COLUMNS.items())
    source.mapInArrow(errors, error_schema).write.mode("overwrite").csv(str(errors_path), header=True)

    summary.rows_read = spark.read.parquet(str(input_path)).count()
    written = spark.read.parquet(str(output_path))
    summary.tiers = {
        row["alert_tier"]: int(row["count"]) for row in written.groupBy("alert_tier").count().collect()
    }
    summary.rows_scored = sum(summary.tiers.values())
    rejected = (
        spark.read.csv(str(errors_path), header=True, schema=error_schema)
        .select("row_number")
        .distinct()
        .count()
    )
    summary.rows_rejected = rejected
    if rejected:
        summary.errors_path = errors_path
    else:
        shutil.rmtree(errors_path, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    log.info(summary.format())
    return summary
