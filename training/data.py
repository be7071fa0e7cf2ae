"""Feature tables for the lab, with the churn dates that alert lead times need (events data).

The labels are checked as `churnguard validate` checks them (class counts, too few churners, churn at
the data's edge, likely leaks) before any trial: a study on one class would only fail trial by trial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from churnguard.datasets import DatasetConfig, EventsDataset, load_events
from churnguard.feature_table import FeatureTable, build_feature_table, events_table
from churnguard.feedback import LabelUpdate, apply_confirmed_labels
from churnguard.validation import check_leaks, check_table_labels, label_source
from training.bgnbd import purchase_days, purchase_types

log = logging.getLogger(__name__)


@dataclass
class LabData:
    table: FeatureTable
    churn_dates: pd.Series | None  # by customer_id; None for snapshot data and inactivity churn
    label_update: LabelUpdate | None = None  # set when confirmed outcomes decided some labels
    # Transaction data only (training.baselines.purchase_types): distinct purchase days, for BG/NBD.
    purchases: pd.DataFrame | None = None


def load_lab_data(config: DatasetConfig, confirmed_labels: pd.DataFrame | None = None) -> LabData:
    """The dataset's feature table; `confirmed_labels` (churnguard.feedback.confirmed_labels) decide
    the labels of the rows they cover."""
    if isinstance(config, EventsDataset):
        events = load_events(config)
        data = LabData(events_table(config, events), events.churn_dates)
        if types := purchase_types(config):
            data.purchases = purchase_days(events.events, types)
        check_table_labels(events.report, data.table.frame, config, label_source(config))
    else:
        data = LabData(build_feature_table(config), None)
    table = data.table
    check_leaks(table, config)  # every feature the model will see, as `validate` checks them
    if table.report is not None:
        table.report.raise_for_errors()
    if confirmed_labels is not None:
        data.table, data.label_update = apply_confirmed_labels(data.table, confirmed_labels)
        log.info("%s", data.label_update.format())
    return data
