"""An alert's life: open -> acknowledged -> in_progress -> resolved, and what a resolution records.

Allowed moves (anything else is a `TransitionNotAllowed`, a 409 in the API):
- acknowledge: from open;
- start: from open or acknowledged (starting the work acknowledges it, if nobody had);
- resolve: from acknowledged or in_progress, with an outcome (saved, churned, false_alarm), a churn
  reason from the outcomes vocabulary (churnguard.feedback: required for a churned customer, optional
  for a saved one, what put them at risk; none for a false alarm) and a note.
An open alert cannot be resolved unseen: someone must at least acknowledge it first.

Resolving writes the outcome into the outcomes store (`<state>/outcomes/`), so `churnguard outcomes
report` and `tune --with-outcomes` use it without a CSV. The outcome is written inside the alert's
transaction, before it commits: if the write fails the alert stays unresolved, and a retry writes
the same (customer, day) outcome again, which the store keeps once.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from alerts.store import AlertStore
from churnguard.config import UsageError
from churnguard.feedback import OUTCOMES, REASON_TAGS, ingest
from churnguard.schema import ID_COLUMN

State = Literal["open", "acknowledged", "in_progress", "resolved"]
STATES: tuple[State, ...] = ("open", "acknowledged", "in_progress", "resolved")
Action = Literal["acknowledge", "start", "resolve"]
ALLOWED_FROM: dict[str, tuple[State, ...]] = {
    "acknowledge": ("open",),
    "start": ("open", "acknowledged"),
    "resolve": ("acknowledged", "in_progress"),
}
TARGET: dict[str, State] = {"acknowledge": "acknowledged", "start": "in_progress", "resolve": "resolved"}
MAX_NOTE = 4000
MAX_ACTOR = 200


class UnknownAlert(LookupError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert {alert_id}")
        self.alert_id = alert_id


class TransitionNotAllowed(UsageError):
    def __init__(self, alert_id: int, action: str, state: str) -> None:
        allowed = ", ".join(ALLOWED_FROM[action])
        super().__init__(f"alert {alert_id} is {state}: {action} is allowed only from {allowed}")
        self.state = state


class BadResolution(UsageError):
    """A resolution that cannot be recorded; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Resolution:
    outcome: str
    churn_reason: str | None
    note: str | None


def check_resolution(outcome: object, churn_reason: object = None, note: object = None) -> Resolution:
    """The resolution, checked against the outcomes vocabulary; raises BadResolution naming the field."""
    if not isinstance(outcome, str) or outcome.strip().lower().replace(" ", "_") not in OUTCOMES:
        raise BadResolution("outcome", f"expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
    kind = outcome.strip().lower().replace(" ", "_")
    reason = churn_reason.strip().lower() if isinstance(churn_reason, str) and churn_reason.strip() else None
    if churn_reason is not None and not isinstance(churn_reason, str):
        raise BadResolution("churn_reason", f"expected text, got {churn_reason!r}")
    if kind == "churned" and reason not in REASON_TAGS:
        got = "nothing" if reason is None else repr(churn_reason)
        raise BadResolution(
            "churn_reason", f"a churned customer needs one of {', '.join(REASON_TAGS)}, got {got}"
        )
    if kind == "saved" and reason is not None and reason not in REASON_TAGS:
        raise BadResolution(
            "churn_reason",
            f"a saved customer's reason (what put them at risk) must be one of {', '.join(REASON_TAGS)}, "
            f"got {churn_reason!r}",
        )
    if kind == "false_alarm" and reason is not None:
        raise BadResolution("churn_reason", "a false alarm carries no churn reason")
    if note is not None and not isinstance(note, str):
        raise BadResolution("note", f"expected text, got {type(note).__name__}")
    if isinstance(note, str) and len(note) > MAX_NOTE:
        raise BadResolution("note", f"at most {MAX_NOTE} characters, got {len(note)}")
    return Resolution(kind, reason, note or None)


def transition(
    store: AlertStore,
    alert_id: int,
    action: Action,
    *,
    actor: str | None = None,
    resolution: Resolution | None = None,
    state_dir: Path | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Move an alert; returns it as stored afterwards. Raises UnknownAlert or TransitionNotAllowed."""
    if action == "resolve" and (resolution is None or state_dir is None):
        raise ValueError("resolve needs a resolution and the state folder of the outcomes store")
    now = time.time() if now is None else now
    with store.transaction() as cursor:
        alert = store.locked_alert(cursor, alert_id)
        if alert is None:
            raise UnknownAlert(alert_id)
        if alert["state"] not in ALLOWED_FROM[action]:
            raise TransitionNotAllowed(alert_id, action, alert["state"])
        fields: dict[str, Any] = {"state": TARGET[action], "updated_at": now, "actor": actor}
        if action in {"acknowledge", "start"} and alert["acknowledged_at"] is None:
            fields["acknowledged_at"] = now
        if action == "start":
            fields["started_at"] = now
        if action == "resolve":
            assert resolution is not None and state_dir is not None
            fields.update(
                resolved_at=now,
                outcome=resolution.outcome,
                churn_reason=resolution.churn_reason,
                note=resolution.note,
            )
            record_outcome(state_dir, alert, resolution, now)
        store.update_alert(cursor, alert_id, fields)
        alert.update(fields)
    return alert


@contextmanager
def _outcomes_lock(state_dir: Path) -> Iterator[None]:
    # The outcomes store is one Parquet file rewritten whole: resolutions take turns.
    folder = state_dir / "outcomes"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".alerts.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_outcome(state_dir: Path, alert: dict[str, Any], resolution: Resolution, now: float) -> Path:
    """The resolution into the outcomes store through its own ingest (same checks, same merge); the
    one-row file stays beside it as the record of where the outcome came from."""
    folder = state_dir / "outcomes" / "alerts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"alert-{alert['alert_id']}.csv"
    day = pd.Timestamp(now, unit="s").strftime("%Y-%m-%d")
    pd.DataFrame(
        {
            ID_COLUMN: [alert["customer_id"]],
            "outcome": [resolution.outcome],
            "outcome_date": [day],
            "churn_reason": [resolution.churn_reason or ""],
            "note": [resolution.note or ""],
            "alert_id": [alert["alert_id"]],
        }
    ).to_csv(path, index=False)
    with _outcomes_lock(state_dir):
        ingest(path, state_dir)
    return path
