"""`churnguard validate`: load a dataset strictly and report every problem instead of stopping at one.

Strict loading turns every row that a normal load would drop (unparseable timestamps, events
before signup or in the future, unknown customers) into an error with the file, column and rows.
Then the feature table is built as `tune` builds it, and the labels are checked: class counts, too few
churners, churn piling up at the data's edge, and features that predict the label alone (a leak): every
feature the model will see, the dates turned into days-since or age and the event features included.
`tune` runs the same checks (`training.data.load_lab_data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churnguard.datasets import (
    DataError,
    DataReport,
    DatasetConfig,
    EventsDataset,
    SnapshotDataset,
    base_dir,
    check_label_counts,
    config_file,
    load_dataset_config,
    load_events,
)
from churnguard.feature_table import FeatureTable, events_table, snapshot_table
from churnguard.schema import LABEL_COLUMN, OBSERVATION_COLUMN, FeatureSpec
from churnguard.settings import resolve_path

LEAK_FOLDS = 5  # out-of-fold target means for categories, so an id-like column cannot look perfect
# Churn at the latest dates this many times the earlier median (and 10 points above it) is suspicious.
EDGE_RATE_RATIO = 2.0
EDGE_RATE_POINTS = 0.10


def validate_dataset(name_or_path: str | Path) -> DataReport:
    config = load_dataset_config(name_or_path)
    try:
        if isinstance(config, SnapshotDataset):
            table = snapshot_table(config, strict=True)
        else:
            # The labelled dates only (right-censoring), with every feature the model will see.
            table = events_table(config, load_events(config, strict=True))
            check_table_labels(table.report, table.frame, config, label_source(config))
        check_leaks(table, config)
        return table.report
    except DataError as exc:
        return exc.report


def label_source(config: EventsDataset) -> str:
    """The file the churn definition reads, for messages about labels."""
    root = base_dir(config)
    if config.churn.subscriptions is not None:
        return str(resolve_path(config.churn.subscriptions.path, root))
    if config.churn.column is not None and config.customers is not None:
        return str(resolve_path(config.customers.path, root))
    return ", ".join(str(resolve_path(source.path, root)) for source in config.events)


def check_table_labels(report: DataReport, frame: pd.DataFrame, config: EventsDataset, file: str) -> None:
    """Class counts and the churn rate per observation date of an events table."""
    labels = frame[LABEL_COLUMN]
    check_label_counts(report, labels, config.checks, file, None)
    rates = labels.groupby(frame[OBSERVATION_COLUMN]).mean().sort_index()
    report.label_rates = {f"{day:%Y-%m-%d}": float(rate) for day, rate in rates.items()}
    check_edge_rates(report, rates, config_file(config))


def check_edge_rates(report: DataReport, rates: pd.Series, yaml: str) -> None:
    """Churn that jumps at the latest dates usually means a source that defines churn ends before the
    events do: every still-running term then ends inside the last horizons and looks like churn."""
    if len(rates) < 3:
        return
    earlier = rates.iloc[:-2] if len(rates) >= 4 else rates.iloc[:-1]
    baseline = float(earlier.median())
    latest = rates.iloc[len(earlier) :]
    jumps = latest[(latest >= EDGE_RATE_RATIO * baseline) & (latest >= baseline + EDGE_RATE_POINTS)]
    if len(jumps):
        report.warn(
            yaml,
            "observation",
            f"the churn rate jumps at the latest observation dates (median {baseline:.1%} before): churn "
            "piling up at the data's edge usually means a source that defines churn ends before the "
            "events (right-censoring); declare its `data_end` (or `start_column` for subscriptions)",
            0,
            [f"{day:%Y-%m-%d}: {rate:.1%}" for day, rate in jumps.items()],
        )


def single_column_auc(values: pd.Series, label: np.ndarray) -> float | None:
    """ROC-AUC of one column alone, in its better direction (0.5..1); None when it cannot rank.

    Numbers rank as they are (missing as the lowest value); categories by their churn rate in the
    other folds, so a category seen once scores the prior and an id column stays near 0.5.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        if np.isnan(numbers).all():
            return None
        score = np.where(np.isnan(numbers), np.nanmin(numbers) - 1.0, numbers)
    else:
        codes = pd.Series(pd.factorize(values.astype("string").fillna("<missing>"))[0])
        fold = np.random.default_rng(0).integers(0, LEAK_FOLDS, len(codes))
        score = np.empty(len(codes))
        prior = float(label.mean())  # one value for every unseen category: a tie, so it ranks nothing
        for number in range(LEAK_FOLDS):
            held_out = fold == number
            rates = pd.Series(label[~held_out]).groupby(codes[~held_out].to_numpy()).mean()
            score[held_out] = codes[held_out].map(rates).fillna(prior).to_numpy()
    positives = label == 1
    churners, others = int(positives.sum()), int((~positives).sum())
    if not churners or not others:
        return None
    ranks = pd.Series(score).rank(method="average").to_numpy()
    auc = (ranks[positives].sum() - churners * (churners + 1) / 2) / (churners * others)
    return float(max(auc, 1.0 - auc))


def feature_origin(config: DatasetConfig, spec: FeatureSpec) -> tuple[str, str, str]:
    """Where a feature comes from, for a message: (file, the file's own column, what the feature is).

    A date column's derived feature names the date column; event and contract features are the lab's
    own, built from the sources as the YAML says, and name the YAML (or the contracts file) and the feature.
    """
    root = base_dir(config)
    if isinstance(config, SnapshotDataset):
        file = str(resolve_path(config.source.path, root))
    elif config.customers is not None and spec.kind in ("static", "tenure", "days_since", "age_years"):
        file = str(resolve_path(config.customers.path, root))
    elif config.contracts is not None and spec.kind == "contract":
        file = str(resolve_path(config.contracts.path, root))
    else:
        file = config_file(config)
    if spec.kind in ("days_since", "age_years") and spec.source_column:
        what = "age in years" if spec.kind == "age_years" else "days since the date"
        return file, spec.source_column, f"its derived feature '{spec.name}' ({what})"
    signup = (
        config.customers.signup_column if isinstance(config, EventsDataset) and config.customers else None
    )
    if spec.kind == "tenure" and signup:
        return file, signup, f"the tenure counted from it ('{spec.name}')"
    return file, spec.name, "this column" if spec.kind == "static" else "this feature"


def check_leaks(table: FeatureTable, config: DatasetConfig) -> None:
    """A feature that alone ranks churners almost perfectly is usually the label in disguise (a status
    or a score computed after the fact): a warning naming where it comes from and its AUC. Every feature
    of the table is checked: the columns as read, the dates turned into days-since or age, the event
    and contract features."""
    if table.report is None:
        return
    checks = config.checks
    label = table.frame[LABEL_COLUMN].to_numpy()
    for spec in table.schema.features:
        auc = single_column_auc(table.frame[spec.name], label)
        if auc is not None and auc >= checks.leak_roc_auc:
            file, column, what = feature_origin(config, spec)
            table.report.warn(
                file,
                column,
                f"likely leak: {what} alone predicts the label with ROC-AUC {auc:.3f} "
                f"(>= `checks.leak_roc_auc` {checks.leak_roc_auc}); drop it unless it is known before churn",
            )
