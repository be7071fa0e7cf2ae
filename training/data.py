"""Feature tables for the lab, with the churn dates that alert lead times need (events data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from churnguard.datasets import DatasetConfig, EventsDataset, load_events
from churnguard.feature_table import FeatureTable, build_feature_table, events_table
from churnguard.feedback import LabelUpdate, apply_confirmed_labels

log = logging.getLogger(__name__)


@dataclass
class LabData:
    table: FeatureTable
    churn_dates: pd.Series | None  # by customer_id; None for snapshot data and inactivity churn
    label_update: LabelUpdate | None = None  # set when confirmed outcomes decided some labels


def load_lab_data(config: DatasetConfig, confirmed_labels: pd.DataFrame | None = None) -> LabData:
    """The dataset's feature table; `confirmed_labels` (churnguard.feedback.confirmed_labels) decide
    the labels of the rows they cover."""
    if isinstance(config, EventsDataset):
        events = load_events(config)
        data = LabData(events_table(config, events), events.churn_dates)
    else:
        data = LabData(build_feature_table(config), None)
    if confirmed_labels is not None:
        data.table, data.label_update = apply_confirmed_labels(data.table, confirmed_labels)
        log.info("%s", data.label_update.format())
    return data
