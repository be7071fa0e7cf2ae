"""`churnguard validate`: load a dataset strictly and report every problem instead of stopping at one.

Strict loading turns every row that a normal load would drop (unparseable timestamps, events
before signup or in the future, unknown customers) into an error with the file, column and rows.
"""

from __future__ import annotations

from pathlib import Path

from churnguard.datasets import (
    DataError,
    DataReport,
    SnapshotDataset,
    load_dataset_config,
    load_events,
    load_snapshot,
)
from churnguard.feature_table import labelled_observation_dates


def validate_dataset(name_or_path: str | Path) -> DataReport:
    config = load_dataset_config(name_or_path)
    try:
        if isinstance(config, SnapshotDataset):
            return load_snapshot(config, strict=True).report
        data = load_events(config, strict=True)
        labelled_observation_dates(config, data)
        return data.report
    except DataError as exc:
        return exc.report
