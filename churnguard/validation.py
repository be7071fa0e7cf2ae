"""`churnguard validate`: load a dataset strictly and report every problem instead of stopping at one.

Strict loading turns every row that a normal load would drop (unparseable timestamps, events
before signup or in the future, unknown customers) into an error with the file, column and rows.
Then the labels are checked: class counts, too few churners, churn piling up at the data's edge,
and columns that predict the label alone (a leak). `tune` runs the same label checks
(`training.data.load_lab_data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churnguard import features
from churnguard.datasets import (
    DataError,
    DataReport,
    DatasetChecks,
    EventsData,
    EventsDataset,
    SnapshotDataset,
    base_dir,
    check_label_counts,
    config_file,
    load_dataset_config,
    load_events,
    load_snapshot,
)
from churnguard.feature_table import labelled_observation_dates
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
from churnguard.settings import resolve_path

LEAK_FOLDS = 5  # out-of-fold target means for categories, so an id-like column cannot look perfect
# Churn at the latest dates this many times the earlier median (and 10 points above it) is suspicious.
EDGE_RATE_RATIO = 2.0
EDGE_RATE_POINTS = 0.10


def validate_dataset(name_or_path: str | Path) -> DataReport:
    config = load_dataset_config(name_or_path)
    try:
        if isinstance(config, SnapshotDataset):
            data = load_snapshot(config, strict=True)
            source = str(resolve_path(config.source.path, base_dir(config)))
            check_leaks(data.report, data.frame, data.feature_columns, config.checks, source)
            return data.report
        events = load_events(config, strict=True)
        dates = labelled_observation_dates(config, events)
        check_event_labels(config, events, dates)
        return events.report
    except DataError as exc:
        return exc.report


def check_event_labels(config: EventsDataset, data: EventsData, dates: list[pd.Timestamp]) -> None:
    """Labels at the labelled dates, without the event features: class counts, the churn rate per date,
    and leaks among the customers' own columns (event features are point-in-time by construction)."""
    population = features.population(data.customers, dates, data.churn_dates)
    if config.churn.kind == "explicit":
        label = features.label_explicit(population, data.churn_dates, config.horizon_days)
    else:
        label = features.label_inactivity(population, data.events, config.horizon_days)
    frame = population[[ID_COLUMN, OBSERVATION_COLUMN]].assign(**{LABEL_COLUMN: label.to_numpy()})
    static = data.customers.set_index(ID_COLUMN)[data.static_columns]
    frame = pd.concat(
        [
            frame,
            static.reindex(population[ID_COLUMN].to_numpy()).set_axis(population.index),
            features.tenure_days(population, data.customers).rename("tenure_days"),
        ],
        axis=1,
    )
    check_table_labels(data.report, frame, config, label_source(config))
    customers_file = data.customers.attrs.get("source", config_file(config))
    check_leaks(data.report, frame, ["tenure_days", *data.static_columns], config.checks, customers_file)


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


def check_leaks(
    report: DataReport, frame: pd.DataFrame, columns: list[str], checks: DatasetChecks, file: str
) -> None:
    """A column that alone ranks churners almost perfectly is usually the label in disguise (a status
    or a score computed after the fact): a warning naming the column and its AUC."""
    label = frame[LABEL_COLUMN].to_numpy()
    for column in columns:
        auc = single_column_auc(frame[column], label)
        if auc is not None and auc >= checks.leak_roc_auc:
            report.warn(
                file,
                column,
                f"likely leak: this column alone predicts the label with ROC-AUC {auc:.3f} "
                f"(>= `checks.leak_roc_auc` {checks.leak_roc_auc}); drop it unless it is known before churn",
            )
