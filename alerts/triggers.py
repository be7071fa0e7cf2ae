"""When an alert is raised, from the daily pass's snapshot (the handoff: `DailySummary.snapshot`).

A scored customer triggers when they (configs/scoring.yaml, `alerts:`):
- enter the high tier: high today, not high in the previous snapshot (or no previous one);
- rise by a tier against their last scored tier (the latest earlier snapshot of the same model);
- fire a `critical` rule (a reason with that severity).
Then:
- a customer has at most one unresolved alert: a new trigger, and every later pass, update it;
- after a resolution, `cooldown_days` pass before the customer can be alerted again;
- an owner gets at most `daily_cap` alerts one by one per day, the most urgent first (priority, then
  probability); the rest go into one digest per owner and day, ordered by priority.
The alert and its messages are written in one transaction; keys make a second run of the same day
change nothing, also when two run at once (on two hosts): their writing transactions take turns.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from alerts.messages import compose
from alerts.routing import AlertsConfig, Route
from alerts.store import AlertStore, Cursor
from churnguard.alerting import AlertPolicy
from churnguard.schema import ID_COLUMN
from churnguard.tiers import TIER_RANK, tier_ranks

log = logging.getLogger(__name__)

SNAPSHOT_COLUMNS = [
    ID_COLUMN, "alert_tier", "model_tier", "health_score", "churn_probability", "value_tier",
    "priority", "model_version", "reasons",
]  # fmt: skip
DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Reasons in other languages for these customers (the snapshot holds English): {language: {id: [...]}}.
Localizer = Callable[[Sequence[str]], dict[str, dict[str, list[dict]]]]


@dataclass
class RaiseSummary:
    day: str
    scored: int = 0
    triggered: int = 0
    raised: int = 0
    in_digest: int = 0
    updated: int = 0
    unchanged: int = 0  # open alerts this pass left as they were (already at this day, or not scored)
    cooling_down: int = 0
    queued: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        return (
            f"alerts as of {self.day}: {self.triggered:,} of {self.scored:,} customers triggered; "
            f"{self.raised:,} raised ({self.in_digest:,} of them in digests over the daily cap), "
            f"{self.updated:,} open alerts updated, {self.unchanged:,} unchanged, "
            f"{self.cooling_down:,} in cool-down; "
            f"{self.queued:,} messages queued ({self.seconds:.1f} s)"
        )


def previous_snapshot(snapshot: Path) -> Path | None:
    """The latest snapshot of the same model dated before this one."""
    earlier = sorted(
        path
        for path in snapshot.parent.glob("*.parquet")
        if DATED.match(path.stem) and path.stem < snapshot.stem
    )
    return earlier[-1] if earlier else None


def critical_rules(reasons: pd.Series) -> list[list[str]]:
    """Per row, the codes of the critical rules hit (only rows that mention one are parsed)."""
    out: list[list[str]] = [[] for _ in range(len(reasons))]
    text = reasons.fillna("").astype(str)
    for position in np.flatnonzero(text.str.contains('"critical"', regex=False).to_numpy()).tolist():
        out[position] = [
            str(reason["code"]).removeprefix("rule:")
            for reason in json.loads(text.iloc[position])
            if reason.get("severity") == "critical" and str(reason.get("code", "")).startswith("rule:")
        ]
    return out


def detect(snapshot: pd.DataFrame, previous: pd.DataFrame | None, triggers: AlertPolicy) -> pd.DataFrame:
    """The snapshot with `previous_tier` and `triggers` (a list per customer, empty when none)."""
    frame = snapshot.reset_index(drop=True).copy()
    if previous is not None:
        last = previous.drop_duplicates(ID_COLUMN, keep="last").set_index(ID_COLUMN)["alert_tier"]
        frame["previous_tier"] = frame[ID_COLUMN].map(last)
    else:
        frame["previous_tier"] = None
    tier = frame["alert_tier"].to_numpy(dtype=object)
    before = frame["previous_tier"].to_numpy(dtype=object)
    known = pd.notna(before)
    entered = (tier == "high") & (before != "high") if triggers.enter_high else np.zeros(len(frame), bool)
    rose = known & (tier_ranks(tier) > tier_ranks(np.where(known, before, "low")))
    rose &= triggers.rise_by_tier
    rules = critical_rules(frame["reasons"]) if triggers.critical_rule else [[] for _ in range(len(frame))]
    frame["critical_rules"] = rules
    frame["triggers"] = [
        [
            *(["enter_high"] if e else []),
            *(["rise_by_tier"] if r else []),
            *(f"critical_rule:{c}" for c in cr),
        ]
        for e, r, cr in zip(entered.tolist(), rose.tolist(), rules, strict=True)
    ]
    return frame


def _reasons(row: Any, localized: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    english = json.loads(row.reasons) if isinstance(row.reasons, str) else []
    out = {"en": english}
    for language, by_customer in localized.items():
        out[language] = by_customer.get(row.customer_id, english)
    return out


def raise_alerts(
    store: AlertStore,
    config: AlertsConfig,
    snapshot_path: Path,
    owners: dict[str, str],
    model: str,
    *,
    localize: Localizer | None = None,
    now: float | None = None,
) -> RaiseSummary:
    """Raise and update alerts from one snapshot; queue their messages. See the module docstring."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    snapshot_path = Path(snapshot_path)
    day = snapshot_path.stem
    summary = RaiseSummary(day)
    present = set(pq.read_schema(snapshot_path).names)
    snapshot = pd.read_parquet(snapshot_path, columns=[c for c in SNAPSHOT_COLUMNS if c in present])
    if "reasons" not in snapshot.columns:  # a pass run without explanations: no reasons to quote
        snapshot["reasons"] = None
        log.warning(
            "%s has no reasons (daily --no-explain): critical rules and messages go without them",
            snapshot_path,
        )
    summary.scored = len(snapshot)
    earlier = previous_snapshot(snapshot_path)
    previous = pd.read_parquet(earlier, columns=[ID_COLUMN, "alert_tier"]) if earlier else None
    frame = detect(snapshot, previous, config.policy)
    triggered = frame[frame["triggers"].map(len) > 0]
    summary.triggered = len(triggered)

    unresolved = {
        row["customer_id"]: row for row in store.query("SELECT * FROM alerts WHERE state <> 'resolved'")
    }
    scored = frame.set_index(ID_COLUMN, drop=False)
    to_update = [c for c, row in unresolved.items() if c in scored.index and row["observation_date"] < day]
    fresh = triggered[~triggered[ID_COLUMN].isin(list(unresolved))]
    with store.transaction() as cursor:
        resolved_at = store.last_resolved(cursor, fresh[ID_COLUMN].tolist())
    cooldown = config.policy.cooldown_days * 86400.0
    cooling = fresh[ID_COLUMN].map(lambda c: c in resolved_at and now - resolved_at[c] < cooldown)
    summary.cooling_down = int(cooling.sum())
    fresh = fresh[~cooling.to_numpy(dtype=bool)]
    # Reasons in another language only for the customers whose alert is written now, and of those only
    # the ones whose owner reads another language (each is scored again to get them).
    written = [
        *((c, owners.get(c) or "") for c in fresh[ID_COLUMN].tolist()),
        *((c, unresolved[c]["owner"]) for c in to_update),
    ]
    other_language = [c for c, owner in written if config.route(owner or None).language != "en"]
    localized = localize(other_language) if localize and other_language else {}
    summary.unchanged = len(unresolved) - len(to_update)

    with store.transaction() as cursor:
        # Another pass of the same day (a second host's daily run) may have committed since the read
        # above: after the lock, what it raised or updated is seen and not raised or updated twice.
        store.lock_for_raising(cursor)
        now_unresolved = store.unresolved_by_customer(cursor, [*to_update, *fresh[ID_COLUMN]])
        candidates = len(to_update) + len(fresh)
        to_update = [
            c for c in to_update if c in now_unresolved and now_unresolved[c]["observation_date"] < day
        ]
        fresh = fresh[~fresh[ID_COLUMN].isin(list(now_unresolved))]
        summary.unchanged += candidates - len(to_update) - len(fresh)  # the other pass wrote them
        for customer in to_update:
            summary.queued += _update(
                store, cursor, config, now_unresolved[customer], scored.loc[customer], localized, day, now
            )
            summary.updated += 1
        fresh = fresh.assign(owner=fresh[ID_COLUMN].map(lambda c: owners.get(c) or ""))
        fresh = fresh.sort_values(["owner", "priority", "churn_probability"], ascending=[True, True, False])
        for owner, group in fresh.groupby("owner", sort=True):
            route = config.route(owner or None)
            room = max(route.daily_cap - store.singles_on_day(cursor, owner, day), 0)
            digest: list[dict[str, Any]] = []
            for position, row in enumerate(group.itertuples(index=False)):
                single = position < room
                alert = _new_alert(store, cursor, row, owner, model, day, route, single, localized, now)
                summary.raised += 1
                if single:
                    summary.queued += queue_messages(store, cursor, "alert", [alert], route, config, now)
                else:
                    digest.append(alert)
            if digest:
                summary.in_digest += len(digest)
                summary.queued += queue_messages(store, cursor, "digest", digest, route, config, now, day=day)
    summary.seconds = time.perf_counter() - started
    log.info(summary.format())
    return summary


def _new_alert(
    store: AlertStore,
    cursor: Cursor,
    row: Any,
    owner: str,
    model: str,
    day: str,
    route: Route,
    single: bool,
    localized: dict[str, dict[str, list[dict]]],
    now: float,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "customer_id": row.customer_id,
        "owner": owner,
        "state": "open",
        "model": model,
        "raised_day": day,
        "observation_date": day,
        "tier": row.alert_tier,
        "model_tier": row.model_tier,
        "previous_tier": row.previous_tier if isinstance(row.previous_tier, str) else None,
        "health_score": int(row.health_score),
        "churn_probability": float(row.churn_probability),
        "value_tier": row.value_tier,
        "priority": int(row.priority),
        "triggers": list(row.triggers),
        "rules": list(row.critical_rules),
        "reasons": _reasons(row, localized),
        "model_version": row.model_version,
        "delivery": "single" if single else "digest",
        "raised_at": now,
        "updated_at": now,
        "updates": 0,
        "due_at": now + route.sla_hours * 3600.0,
    }
    alert_id = store.insert_alert(cursor, fields)
    return {"alert_id": alert_id, **fields}


def _update(
    store: AlertStore,
    cursor: Cursor,
    config: AlertsConfig,
    alert: dict[str, Any],
    row: Any,
    localized: dict[str, dict[str, list[dict]]],
    day: str,
    now: float,
) -> int:
    """Today's scores into an open alert; a new trigger is added to it, and a higher tier than the
    alert had is announced once per tier."""
    fields: dict[str, Any] = {
        "observation_date": day,
        "tier": row["alert_tier"],
        "model_tier": row["model_tier"],
        "health_score": int(row["health_score"]),
        "churn_probability": float(row["churn_probability"]),
        "value_tier": row["value_tier"],
        "priority": int(row["priority"]),
        "reasons": _reasons(row, localized),
        "model_version": row["model_version"],
        "updated_at": now,
    }
    new_triggers = [t for t in row["triggers"] if t not in alert["triggers"]]
    if row["triggers"]:
        fields["updates"] = int(alert["updates"]) + 1
        fields["triggers"] = [*alert["triggers"], *new_triggers]
        fields["rules"] = sorted({*alert["rules"], *row["critical_rules"]})
    store.update_alert(cursor, alert["alert_id"], fields)
    if TIER_RANK[str(row["alert_tier"])] > TIER_RANK[str(alert["tier"])]:
        route = config.route(alert["owner"] or None)
        return queue_messages(store, cursor, "update", [{**alert, **fields}], route, config, now)
    return 0


def queue_messages(
    store: AlertStore,
    cursor: Cursor,
    kind: str,
    alerts: list[dict[str, Any]],
    route: Route,
    config: AlertsConfig,
    now: float,
    *,
    day: str | None = None,
) -> int:
    first = alerts[0]
    messages = []
    for channel in route.channels:
        if kind == "digest":
            key = f"digest:{route.person}:{day}:{channel}"
        elif kind == "update":
            key = f"update:{first['alert_id']}:{first['tier']}:{channel}"
        else:
            key = f"{kind}:{first['alert_id']}:{channel}"
        messages.append(
            {
                "idempotency_key": key,
                "alert_id": first["alert_id"] if kind != "digest" else None,
                "alert_ids": [alert["alert_id"] for alert in alerts],
                "kind": kind,
                "channel": channel,
                "recipient": route.person,
                "payload": compose(kind, alerts, route, config, key=key, owner=route.person, day=day),
            }
        )
    return store.enqueue(cursor, messages, now)
