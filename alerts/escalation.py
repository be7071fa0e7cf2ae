"""Alerts nobody acknowledged in time go to the owner's manager, through the same routing.

An open alert past its `due_at` (raised + the owner's `sla_hours`) is escalated once: the manager
named for the owner (or their team) gets an `escalation` message on their own channels, in their own
language. An owner with no manager is counted, not silently dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from alerts.routing import AlertsConfig
from alerts.store import AlertStore
from alerts.triggers import queue_messages


@dataclass
class EscalationSummary:
    overdue: int = 0
    escalated: int = 0
    without_manager: int = 0
    queued: int = 0

    def format(self) -> str:
        return (
            f"{self.overdue:,} open alerts past their SLA: {self.escalated:,} escalated to a manager, "
            f"{self.without_manager:,} with no manager in configs/alerts.yaml; "
            f"{self.queued:,} messages queued"
        )


def escalate_overdue(store: AlertStore, config: AlertsConfig, now: float | None = None) -> EscalationSummary:
    now = time.time() if now is None else now
    summary = EscalationSummary()
    with store.transaction() as cursor:
        overdue = cursor.execute(
            "SELECT * FROM alerts WHERE state = 'open' AND due_at < ? AND escalated_at IS NULL "
            "ORDER BY priority, alert_id",
            [now],
        ).dicts()
        summary.overdue = len(overdue)
        for alert in overdue:
            manager = config.route(alert["owner"] or None).manager
            if manager is None:
                summary.without_manager += 1
                continue
            route = config.route(manager)
            summary.queued += queue_messages(store, cursor, "escalation", [alert], route, config, now)
            store.update_alert(cursor, alert["alert_id"], {"escalated_at": now, "escalated_to": manager})
            summary.escalated += 1
    return summary
