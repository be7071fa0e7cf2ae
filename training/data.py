"""Feature tables for the lab, with the churn dates that alert lead times need (events data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from churnguard.datasets import DatasetConfig, EventsDataset, load_events
from churnguard.feature_table import FeatureTable, build_feature_table, events_table

log = logging.getLogger(__name__)


@dataclass
class LabData:
    table: FeatureTable
    churn_dates: pd.Series | None  # by customer_id; None for snapshot data and inactivity churn


def load_lab_data(config: DatasetConfig) -> LabData:
    if isinstance(config, EventsDataset):
        events = load_events(config)
        table = events_table(config, events)
        return LabData(table, events.churn_dates)
    return LabData(build_feature_table(config), None)
