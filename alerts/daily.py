"""Alerts from a daily pass: the snapshot `churnguard daily` just wrote is the handoff (churnguard/
does not import alerts/). Used by the command line and the demo, so both raise alerts the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from alerts.escalation import EscalationSummary, escalate_overdue
from alerts.reasons import localized_reasons
from alerts.routing import AlertsConfig
from alerts.store import AlertStore
from alerts.triggers import RaiseSummary, raise_alerts
from churnguard.history import LoggedHistory
from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog
from churnguard.schema import ID_COLUMN
from churnguard.scoring import load_scoring_config
from churnguard.store.events import EventStore


def alerts_from_pass(
    config: AlertsConfig,
    predictor: Predictor,
    store: EventStore,
    prediction_log: PredictionLog | None,
    snapshot: Path,
    as_of: pd.Timestamp,
) -> tuple[RaiseSummary, EscalationSummary]:
    """Raise and update alerts from the pass's snapshot, then escalate the overdue ones."""
    owner_column = load_scoring_config().worklist.owner_feature
    customers = store.customers(records_only=True)  # owners are attributes: no first-event scan
    owners = (
        dict(zip(customers[ID_COLUMN].astype(str), customers[owner_column].fillna(""), strict=True))
        if owner_column in customers.columns
        else {}
    )
    routes = [*config.owners.values(), *config.teams.values()]
    others = sorted({config.language, *(route.language for route in routes if route.language)})
    languages = [language for language in others if language and language != "en"]
    history = LoggedHistory(prediction_log) if prediction_log is not None else None

    def localize(customer_ids: Sequence[str]) -> dict[str, dict[str, list[dict]]]:
        # Scored again only when some owner reads another language.
        if not languages or not customer_ids:
            return {}
        return localized_reasons(predictor, store, as_of, customer_ids, languages, history)

    alert_store = AlertStore.open(store.url)
    try:
        model = Path(snapshot).parent.name
        raised = raise_alerts(alert_store, config, Path(snapshot), owners, model, localize=localize)
        return raised, escalate_overdue(alert_store, config)
    finally:
        alert_store.close()
