"""Train / validation / test splits that never leak.

Customers are assigned by a seeded hash of their id, not by row position, so the same seed gives the
same split on the same data whatever the row order, and a customer keeps their side when data grows.

- snapshot: stratified by label: within each class, customers ranked by hash; the first `test` share
  goes to test, the next `validation` share to validation, the rest to train.
- events: out of time *and* out of customer. The latest `test_dates` labelled observation dates are
  test, the `validation_dates` before them validation, earlier ones train. A hashed share of customers is
  held out for test and never appears in train or validation rows; another share is validation-only, so
  early stopping and the search reward generalising to new customers, not remembering known ones (a
  churner is positive on several consecutive dates, which a customer-overlapping validation rewards).

K-fold cross-validation (`fold_indices`) only ever splits the non-test rows: the search's objective
on snapshot data and the final model's fold models both use it, with the same seed, so they see the
same folds.

Only the final model's single evaluation reads the test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from churnguard.feature_table import FeatureTable
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
from training.config import EventsSplit, SnapshotSplit, SplitConfig

TEST_KEYS_FILE = "test_keys.parquet"  # logged in the training run's split/ folder


@dataclass(frozen=True)
class Split:
    """Boolean row masks over `FeatureTable.frame`, plus what they mean."""

    kind: Literal["snapshot", "events"]
    seed: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    final: np.ndarray  # rows the final model refits on: all of train and validation's time span
    window: dict[str, str | None] = field(default_factory=dict)  # dates and sizes, for the contract

    def sizes(self) -> dict[str, int]:
        return {
            "train": int(self.train.sum()),
            "validation": int(self.validation.sum()),
            "test": int(self.test.sum()),
            "final": int(self.final.sum()),
        }


def customer_hash(customer_ids: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, fixed by the seed (pandas' hash is stable across runs)."""
    ids = np.asarray(customer_ids, dtype=object).astype(str)
    key = f"churnguard{seed:06d}"[-16:]
    return pd.util.hash_array(ids, hash_key=key, categorize=True).astype(np.float64) / 2.0**64


def make_split(table: FeatureTable, config: SplitConfig, seed: int | None = None) -> Split:
    seed = config.seed if seed is None else seed
    if table.kind == "snapshot":
        return snapshot_split(table.frame, config.snapshot, seed)
    return events_split(table.frame, config.events, seed)


def snapshot_split(frame: pd.DataFrame, config: SnapshotSplit, seed: int) -> Split:
    rank_key = customer_hash(frame[ID_COLUMN], seed)
    label = frame[LABEL_COLUMN].to_numpy()
    test = np.zeros(len(frame), dtype=bool)
    validation = np.zeros(len(frame), dtype=bool)
    for value in np.unique(label):
        rows = np.flatnonzero(label == value)
        # Ties in the hash are vanishingly rare; the id breaks them so the order is total.
        order = rows[np.lexsort((frame[ID_COLUMN].to_numpy()[rows].astype(str), rank_key[rows]))]
        n_test = round(config.test * len(rows))
        n_validation = round(config.validation * len(rows))
        test[order[:n_test]] = True
        validation[order[n_test : n_test + n_validation]] = True
    train = ~(test | validation)
    window = {
        "split": "stratified",
        "split_seed": str(seed),
        "test_share": str(config.test),
        "validation_share": str(config.validation),
        "train_rows": str(int(train.sum())),
        "test_rows": str(int(test.sum())),
    }
    return Split("snapshot", seed, train, validation, test, train | validation, window)


def events_split(frame: pd.DataFrame, config: EventsSplit, seed: int) -> Split:
    dates = np.sort(frame[OBSERVATION_COLUMN].unique())
    needed = config.test_dates + config.validation_dates + 1
    if len(dates) < needed:
        raise ValueError(
            f"an out-of-time split needs at least {needed} labelled observation dates "
            f"({config.test_dates} test, {config.validation_dates} validation, 1 train); the data has "
            f"{len(dates)}. Widen `observation` in the dataset config or lower `split.events.*_dates`."
        )
    test_dates = dates[-config.test_dates :]
    validation_dates = dates[-needed + 1 : -config.test_dates]
    train_dates = dates[: -needed + 1]

    held_out = customer_hash(frame[ID_COLUMN], seed)
    test_customer = held_out < config.test_customers
    validation_customer = ~test_customer & (held_out < config.test_customers + config.validation_customers)
    observed = frame[OBSERVATION_COLUMN].to_numpy()
    in_train_dates = np.isin(observed, train_dates)
    in_validation_dates = np.isin(observed, validation_dates)

    train = in_train_dates & ~test_customer & ~validation_customer
    validation = in_validation_dates & validation_customer
    test = np.isin(observed, test_dates) & test_customer
    final = (in_train_dates | in_validation_dates) & ~test_customer

    def day(value: np.datetime64) -> str:
        return str(pd.Timestamp(value).date())

    window = {
        "split": "out_of_time",
        "split_seed": str(seed),
        "train_start": day(train_dates[0]),
        "train_end": day(train_dates[-1]),
        "validation_start": day(validation_dates[0]),
        "validation_end": day(validation_dates[-1]),
        "test_start": day(test_dates[0]),
        "test_end": day(test_dates[-1]),
        "test_customers_share": str(config.test_customers),
        "test_dates": ",".join(day(d) for d in test_dates),
    }
    return Split("events", seed, train, validation, test, final, window)


def held_out_keys(frame: pd.DataFrame, split: Split) -> pd.DataFrame:
    """The test rows' keys, logged with the run so the promotion gate can rebuild the same rows."""
    columns = [ID_COLUMN, OBSERVATION_COLUMN] if OBSERVATION_COLUMN in frame.columns else [ID_COLUMN]
    return frame.loc[split.test, columns].reset_index(drop=True)


def latest_rows_of(frame: pd.DataFrame, keys: pd.DataFrame, dates: int) -> np.ndarray:
    """Promotion rows: for snapshot data the stored test rows; for events data the stored test customers
    at the latest `dates` labelled observation dates of the current data (newer labels, same customers)."""
    if OBSERVATION_COLUMN not in frame.columns:
        return frame[ID_COLUMN].isin(keys[ID_COLUMN]).to_numpy()
    latest = np.sort(frame[OBSERVATION_COLUMN].unique())[-dates:]
    return (frame[ID_COLUMN].isin(keys[ID_COLUMN]) & frame[OBSERVATION_COLUMN].isin(latest)).to_numpy()


def fold_indices(
    label: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold positions; with `groups` (events rows' customer ids) a customer stays in one fold."""
    positions = np.arange(len(label))
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(positions, label))
    grouped = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(grouped.split(positions, label, groups))
