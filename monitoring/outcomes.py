"""Outcomes for label-delayed evaluation: did each scored customer churn within the horizon?

A prediction made at time t is labelled once its whole horizon has passed (t + horizon <= the outcomes'
"as of" moment): churned when the churn date falls in (t, t + horizon], else stayed. Before that its
label is unknown, never a guessed zero; and an early churn does not label it either, because counting
churners as soon as they churn, but stayers only later, would bias every realized metric upwards.

Sources: a file with `customer_id` and `churned` (0/1, final outcomes) or `churn_date` (customers not
listed have not churned as of the file's time), or a dataset config (its churn dates, or its
inactivity rule, as of the end of its data; a snapshot's label column).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from churnguard.datasets import SnapshotDataset, load_dataset_config, load_events, load_snapshot
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
from monitoring.inputs import MonitoringInputError, read_frame

log = logging.getLogger(__name__)

SCORED_AT = "scored_at"


@dataclass
class Outcomes:
    kind: Literal["label", "churn_date", "inactivity"]
    frame: pd.DataFrame  # customer_id + churned | churn_date; events for inactivity
    as_of: pd.Timestamp  # outcomes are known up to here
    source: str


def read_outcomes_file(path: Path) -> Outcomes:
    frame = read_frame(Path(path))
    if ID_COLUMN not in frame.columns:
        raise MonitoringInputError(f"{path}: needs a '{ID_COLUMN}' column; it has {list(frame.columns)}")
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    as_of = pd.Timestamp(datetime.fromtimestamp(os.path.getmtime(path), UTC)).tz_localize(None)
    if "churned" in frame.columns:
        churned = pd.to_numeric(frame["churned"], errors="coerce")
        bad = ~churned.isin([0, 1])
        if bad.any():
            raise MonitoringInputError(
                f"{path}: column 'churned' must be 0 or 1; {int(bad.sum())} rows are not "
                f"(e.g. rows {[int(i) + 1 for i in np.flatnonzero(bad.to_numpy())[:5]]})"
            )
        return Outcomes(
            "label", pd.DataFrame({ID_COLUMN: frame[ID_COLUMN], "churned": churned}), as_of, str(path)
        )
    if "churn_date" in frame.columns:
        dates = pd.to_datetime(frame["churn_date"], errors="coerce", utc=True).dt.tz_localize(None)
        if "as_of" in frame.columns:  # optional: when the outcomes were pulled
            as_of = pd.to_datetime(frame["as_of"], utc=True).dt.tz_localize(None).max()
        return Outcomes(
            "churn_date", pd.DataFrame({ID_COLUMN: frame[ID_COLUMN], "churn_date": dates}), as_of, str(path)
        )
    raise MonitoringInputError(
        f"{path}: needs a 'churned' (0/1) or a 'churn_date' column; it has {list(frame.columns)}"
    )


def outcomes_from_dataset(name: str) -> Outcomes:
    config = load_dataset_config(name)
    if isinstance(config, SnapshotDataset):
        data = load_snapshot(config)
        frame = data.frame[[ID_COLUMN, LABEL_COLUMN]].rename(columns={LABEL_COLUMN: "churned"})
        return Outcomes("label", frame, pd.Timestamp.now(tz="UTC").tz_localize(None), f"dataset {name}")
    data = load_events(config)
    as_of = data.data_end
    if data.label_end is not None and data.label_end < data.data_end.normalize():
        # A churn source that ends before the events (right-censoring): nothing is known past its last
        # day, counted as the feature table counts it (explicit churn through that day).
        last_day = (
            data.labels_until if config.churn.kind == "explicit" else data.labels_until + pd.Timedelta(days=1)
        )
        as_of = min(as_of, last_day)
    if data.churn_dates is None:
        events = data.events[[ID_COLUMN, "timestamp"]]
        return Outcomes("inactivity", events, as_of, f"dataset {name} (inactivity churn)")
    dates = data.churn_dates.dropna()
    frame = pd.DataFrame({ID_COLUMN: dates.index.astype(str), "churn_date": dates.to_numpy()})
    return Outcomes("churn_date", frame, as_of, f"dataset {name}")


def label_predictions(predictions: pd.DataFrame, outcomes: Outcomes, horizon_days: int) -> pd.DataFrame:
    """Adds `label` (1.0 / 0.0, NaN while not matured) and `matured` to the predictions.

    Rows scored after the customer had already churned are dropped: there was nothing to predict.
    """
    frame = predictions.copy()
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    scored = frame[SCORED_AT]
    horizon = pd.Timedelta(days=horizon_days)
    if outcomes.kind == "label":
        churned = outcomes.frame.drop_duplicates(ID_COLUMN, keep="last").set_index(ID_COLUMN)["churned"]
        frame["label"] = frame[ID_COLUMN].map(churned).astype(float)
    elif outcomes.kind == "churn_date":
        churn = (
            outcomes.frame.dropna().drop_duplicates(ID_COLUMN, keep="last").set_index(ID_COLUMN)["churn_date"]
        )
        churn_date = frame[ID_COLUMN].map(churn)
        already = churn_date.notna() & (churn_date <= scored)
        if already.any():
            log.info("dropping %s predictions made after the customer had churned", f"{int(already.sum()):,}")
        frame, churn_date, scored = frame[~already], churn_date[~already], scored[~already]
        within = churn_date.notna() & (churn_date <= scored + horizon)
        matured = scored + horizon <= outcomes.as_of
        frame["label"] = np.where(matured, within.astype(float), np.nan)
    else:
        frame["label"] = _inactivity_labels(frame, outcomes, horizon_days)
    frame["matured"] = frame["label"].notna()
    return frame


def _inactivity_labels(frame: pd.DataFrame, outcomes: Outcomes, horizon_days: int) -> np.ndarray:
    from churnguard.features import label_inactivity

    population = pd.DataFrame(
        {
            ID_COLUMN: frame[ID_COLUMN].to_numpy(),
            OBSERVATION_COLUMN: frame[SCORED_AT].dt.normalize().to_numpy(),
        }
    )
    label = label_inactivity(population, outcomes.frame, horizon_days).to_numpy(dtype=float)
    matured = (population[OBSERVATION_COLUMN] + pd.Timedelta(days=horizon_days) <= outcomes.as_of).to_numpy()
    return np.where(matured, label, np.nan)
