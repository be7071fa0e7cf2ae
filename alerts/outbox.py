"""Delivering the outbox: each queued message sent once per channel, whatever fails on the way.

A sender claims a due message (pending, or `sending` under a lease that ran out because the process
that claimed it died), commits the claim, sends, then marks it sent. A failure puts it back with an
exponential backoff (`backoff_seconds` x 2^(tries-1), at most `backoff_max_seconds`); after
`max_attempts` tries it is a dead letter until `churnguard alerts retry-dead` puts it back.

Sending is at least once: a process killed after the receiver took a message but before it recorded
that sends it again. Each message carries its idempotency key (header and body), so the receiver keeps
one copy: exactly once as the owner sees it. Claims are conditional updates, so two senders never
send the same message at the same time; on PostgreSQL the claim's SELECT also skips rows another
sender holds (FOR UPDATE SKIP LOCKED), so replicas sharing one outbox never queue behind each other.
`run_sender` is the loop a service worker runs in the background (service.yaml `outbox:`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alerts.channels import DeliveryFailed, send
from alerts.routing import AlertsConfig, ChannelConfig
from alerts.store import STORE_ERRORS, AlertStore
from churnguard.config import ConfigError

log = logging.getLogger(__name__)

Sender = Callable[[ChannelConfig, dict[str, Any], float], None]


@dataclass
class DeliverySummary:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    left: dict[str, int] = field(default_factory=dict)  # outbox states afterwards

    def add(self, other: DeliverySummary) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dead += other.dead
        self.left = other.left

    def format(self) -> str:
        states = ", ".join(f"{state} {count:,}" for state, count in sorted(self.left.items())) or "empty"
        return (
            f"delivered {self.sent:,}, failed {self.failed:,} (to be retried), {self.dead:,} newly dead; "
            f"outbox: {states}"
        )


def backoff(config: AlertsConfig, attempts: int) -> float:
    delivery = config.delivery
    return min(delivery.backoff_seconds * 2 ** max(attempts - 1, 0), delivery.backoff_max_seconds)


def claim(store: AlertStore, config: AlertsConfig, now: float, limit: int) -> list[dict[str, Any]]:
    """Due messages, claimed under a lease (committed before anything is sent)."""
    # The lease covers sending the whole claim, so a live sender's messages are not taken from it.
    lease = now + config.delivery.lease_seconds + limit * config.delivery.timeout_seconds
    claimed = []
    with store.transaction() as cursor:
        due = cursor.execute(
            "SELECT delivery_id FROM outbox WHERE (state = 'pending' AND next_attempt_at <= ?) "
            "OR (state = 'sending' AND lease_until < ?) ORDER BY next_attempt_at, delivery_id LIMIT ?"
            + store.claim_lock,
            [now, now, limit],
        ).dicts()
        for row in due:
            cursor.execute(
                "UPDATE outbox SET state = 'sending', lease_until = ?, attempts = attempts + 1 "
                "WHERE delivery_id = ? AND ((state = 'pending' AND next_attempt_at <= ?) "
                "OR (state = 'sending' AND lease_until < ?))",
                [lease, row["delivery_id"], now, now],
            )
            if cursor.rowcount == 1:  # another sender did not take it first
                claimed.append(row["delivery_id"])
        if not claimed:
            return []
        marks = ",".join("?" * len(claimed))
        return cursor.execute(
            f"SELECT * FROM outbox WHERE delivery_id IN ({marks}) ORDER BY delivery_id", claimed
        ).dicts()


def deliver_due(
    store: AlertStore,
    config: AlertsConfig,
    *,
    now: float | None = None,
    limit: int = 10,
    sender: Sender = send,
) -> DeliverySummary:
    """One round: claim what is due and send it. Returns what happened."""
    summary = DeliverySummary()
    now = time.time() if now is None else now
    for message in claim(store, config, now, limit):
        channel = config.channels.get(message["channel"])
        try:
            if channel is None:
                raise DeliveryFailed(f"channel {message['channel']!r} is no longer in configs/alerts.yaml")
            sender(channel, message["payload"], config.delivery.timeout_seconds)
        except (DeliveryFailed, ConfigError) as exc:
            _failed(store, config, message, str(exc))
            summary.failed += 1
            if message["attempts"] >= config.delivery.max_attempts:
                summary.dead += 1
            continue
        with store.transaction() as cursor:
            cursor.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ?, lease_until = NULL, last_error = NULL "
                "WHERE delivery_id = ?",
                [time.time(), message["delivery_id"]],
            )
        summary.sent += 1
    summary.left = store.outbox_counts()
    return summary


def _failed(store: AlertStore, config: AlertsConfig, message: dict[str, Any], error: str) -> None:
    attempts = int(message["attempts"])
    dead = attempts >= config.delivery.max_attempts
    log.warning(
        "delivery %s (%s on %s) failed, try %d: %s%s",
        message["delivery_id"],
        message["kind"],
        message["channel"],
        attempts,
        error,
        "; now a dead letter" if dead else "",
    )
    with store.transaction() as cursor:
        cursor.execute(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, lease_until = NULL, last_error = ? "
            "WHERE delivery_id = ?",
            [
                "dead" if dead else "pending",
                time.time() + backoff(config, attempts),
                error,
                message["delivery_id"],
            ],
        )


def deliver(
    store: AlertStore,
    config: AlertsConfig,
    *,
    max_seconds: float = 0.0,
    limit: int = 10,
    sender: Sender = send,
    poll_seconds: float = 0.2,
) -> DeliverySummary:
    """Deliver until nothing is due; with `max_seconds`, keep going (waiting for backoffs and leases)
    until every message is sent or dead, or the time is up."""
    total = DeliverySummary()
    deadline = time.monotonic() + max_seconds
    while True:
        round_ = deliver_due(store, config, limit=limit, sender=sender)
        total.add(round_)
        waiting = round_.left.get("pending", 0) + round_.left.get("sending", 0)
        if round_.sent or round_.failed:
            continue
        if not waiting or time.monotonic() >= deadline:
            return total
        time.sleep(poll_seconds)


def run_sender(
    store: AlertStore, config: AlertsConfig, stop: threading.Event, poll_seconds: float, limit: int = 10
) -> None:
    """Deliver what is due every `poll_seconds` until `stop` is set. A store that is down is logged and
    tried again on the next round: messages wait in the outbox, they are not lost."""
    while not stop.is_set():
        try:
            round_ = deliver_due(store, config, limit=limit)
        except STORE_ERRORS as exc:
            log.warning("outbox delivery paused, the store is unavailable: %s", exc)
            round_ = DeliverySummary()
        if round_.sent or round_.failed:
            log.info("outbox: %s", round_.format())
            continue  # more may be due at once
        stop.wait(poll_seconds)


def retry_dead(store: AlertStore, delivery_ids: list[int] | None = None) -> int:
    """Dead letters back to pending, due now, with their tries counted from zero."""
    where = "state = 'dead'"
    params: list[object] = [time.time()]
    if delivery_ids:
        where += f" AND delivery_id IN ({','.join('?' * len(delivery_ids))})"
        params += delivery_ids
    with store.transaction() as cursor:
        cursor.execute(
            f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL "
            f"WHERE {where}",
            params,
        )
        return cursor.rowcount
