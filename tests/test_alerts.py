"""Alerts to owners on real parts: SQLite stores, a loopback webhook receiver that fails, hangs and
recovers, a real SMTP server (aiosmtpd), and a delivering process killed mid-send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from alerts.escalation import escalate_overdue
from alerts.lifecycle import (
    BadResolution,
    Resolution,
    TransitionNotAllowed,
    UnknownAlert,
    check_resolution,
    transition,
)
from alerts.outbox import deliver, retry_dead
from alerts.receiver import WebhookReceiver
from alerts.routing import AlertsConfig, load_alerts_config
from alerts.store import AlertStore
from alerts.triggers import raise_alerts
from churnguard.alerting import POLICY_KEYS, AlertPolicy
from churnguard.feedback import load_outcomes
from churnguard.settings import PROJECT_ROOT

SECRET_ENV = "CHURNGUARD_TEST_WEBHOOK_SECRET"
SECRET = "s3cret-for-loopback-only"
DAY = pd.Timestamp("2025-09-01")


def snapshot_row(customer: str, tier: str, priority: int = 5, critical: str | None = None) -> dict[str, Any]:
    reasons = [{"code": "raises_risk:login__count_30d", "feature": "login__count_30d", "group": "activity",
                "value": 0, "impact": 0.4, "message": "no logins in the last 30 days"}]  # fmt: skip
    if critical:
        reasons.insert(0, {"code": f"rule:{critical}", "feature": "x", "group": "payments", "value": 90,
                           "impact": None, "message": f"{critical} fired",
                           "severity": "critical"})  # fmt: skip
    health = {"high": 20, "medium": 45, "low": 80}[tier]
    return {
        "customer_id": customer, "alert_tier": tier, "model_tier": tier, "health_score": health,
        "churn_probability": 1 - health / 100, "value_tier": "high", "priority": priority,
        "model_version": "1", "reasons": json.dumps(reasons),
    }  # fmt: skip


def write_snapshot(folder: Path, day: pd.Timestamp, rows: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day:%Y-%m-%d}.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def make_config(tmp: Path, **overrides: Any) -> tuple[AlertsConfig, Path]:
    data: dict[str, Any] = {
        "channels": {"hub": {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret_env": SECRET_ENV}},
        "default_channels": ["hub"],
        "owners": {"Bo Chen": {"language": "zh", "manager": "Dana Wu"}, "Ana Lima": {"manager": "Dana Wu"}},
        "delivery": {"timeout_seconds": 0.5, "backoff_seconds": 0.05, "backoff_max_seconds": 0.4,
                     "max_attempts": 1000, "lease_seconds": 1.0},
    }  # fmt: skip
    # The triggers, cool-down and daily cap are configs/scoring.yaml's (`alerts:`), not this file's.
    policy = AlertPolicy(**{key: overrides.pop(key) for key in POLICY_KEYS if key in overrides})
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    path = tmp / "alerts.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_alerts_config(path, policy), path


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(tmp_path / "state"))


def open_store(tmp: Path) -> AlertStore:
    return AlertStore.open(f"sqlite:///{tmp / 'events.db'}")


def with_url(config: AlertsConfig, url: str) -> AlertsConfig:
    channels = {name: channel.model_copy(update={"url": url}) for name, channel in config.channels.items()}
    return config.model_copy(update={"channels": channels})


# -------------------------------------------------------------------------------------------- triggers


def test_triggers_raise_once_per_customer_and_later_passes_update(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path)
    store = open_store(tmp_path)
    folder = tmp_path / "daily" / "churn-crm"
    owners = {c: "Ana Lima" for c in "ABCDE"}
    first = write_snapshot(folder, DAY, [
        snapshot_row("A", "high"), snapshot_row("B", "medium"),
        snapshot_row("C", "low", critical="payment_overdue"),
        snapshot_row("D", "low"), snapshot_row("E", "low"),
    ])  # fmt: skip
    summary = raise_alerts(store, config, first, owners, "churn-crm")
    alerts = {a["customer_id"]: a for a in store.alerts()}
    # No earlier snapshot: a high customer enters the high tier; medium is not a rise from nothing.
    assert set(alerts) == {"A", "C"} and summary.raised == 2
    assert alerts["A"]["triggers"] == ["enter_high"]
    assert alerts["C"]["triggers"] == ["critical_rule:payment_overdue"] and alerts["C"]["rules"] == [
        "payment_overdue"
    ]

    second = write_snapshot(folder, DAY + pd.Timedelta(days=1), [
        snapshot_row("A", "high"), snapshot_row("B", "high"), snapshot_row("C", "low"),
        snapshot_row("D", "medium"), snapshot_row("E", "low"),
    ])  # fmt: skip
    summary = raise_alerts(store, config, second, owners, "churn-crm")
    alerts = {a["customer_id"]: a for a in store.alerts()}
    assert set(alerts) == {"A", "B", "C", "D"} and summary.raised == 2 and summary.updated == 2
    assert (
        alerts["B"]["triggers"] == ["enter_high", "rise_by_tier"] and alerts["B"]["previous_tier"] == "medium"
    )
    assert alerts["D"]["triggers"] == ["rise_by_tier"]
    # Still high: the open alert follows the customer, no second alert, no new trigger counted.
    assert alerts["A"]["observation_date"] == "2025-09-02" and alerts["A"]["updates"] == 0
    queued = store.outbox_counts()
    again = raise_alerts(store, config, second, owners, "churn-crm")  # the same day once more
    assert (again.raised, again.updated, again.queued) == (0, 0, 0)
    assert len(store.alerts()) == 4 and store.outbox_counts() == queued

    # A customer with an open alert who triggers again: the alert is updated, and a higher tier is told.
    third = write_snapshot(folder, DAY + pd.Timedelta(days=2), [
        snapshot_row("A", "high", critical="payment_overdue"), snapshot_row("B", "high"),
        snapshot_row("C", "high"), snapshot_row("D", "medium"), snapshot_row("E", "low"),
    ])  # fmt: skip
    summary = raise_alerts(store, config, third, owners, "churn-crm")
    alerts = {a["customer_id"]: a for a in store.alerts()}
    assert summary.raised == 0 and len(alerts) == 4
    assert (
        alerts["A"]["triggers"] == ["enter_high", "critical_rule:payment_overdue"]
        and alerts["A"]["updates"] == 1
    )
    assert alerts["C"]["tier"] == "high"
    kinds = [d["kind"] for d in store.deliveries() if d["alert_id"] == alerts["C"]["alert_id"]]
    assert kinds == ["alert", "update"]


def test_cool_down_after_resolution_and_the_outcome_is_stored(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path, cooldown_days=7)
    store = open_store(tmp_path)
    folder = tmp_path / "daily" / "m"
    raise_alerts(
        store, config, write_snapshot(folder, DAY, [snapshot_row("A", "high")]), {"A": "Ana Lima"}, "m"
    )
    alert = store.alerts()[0]
    transition(store, alert["alert_id"], "acknowledge", actor="Ana Lima")
    resolved_at = time.time()
    transition(
        store, alert["alert_id"], "resolve",
        resolution=check_resolution("churned", "price", "went to a rival"),
        state_dir=tmp_path / "state", now=resolved_at,
    )  # fmt: skip
    outcomes = load_outcomes(tmp_path / "state")
    assert outcomes[["customer_id", "outcome", "churn_reason"]].values.tolist() == [["A", "churned", "price"]]

    # Low for a day, then high again: entering high, but within the cool-down nothing is raised.
    write_snapshot(folder, DAY + pd.Timedelta(days=1), [snapshot_row("A", "low")])
    back = write_snapshot(folder, DAY + pd.Timedelta(days=2), [snapshot_row("A", "high")])
    cooling = raise_alerts(store, config, back, {"A": "Ana Lima"}, "m", now=resolved_at + 3 * 86400)
    assert (cooling.cooling_down, cooling.raised) == (1, 0) and len(store.alerts()) == 1
    later = raise_alerts(store, config, back, {"A": "Ana Lima"}, "m", now=resolved_at + 8 * 86400)
    assert later.raised == 1 and len(store.alerts(state="open")) == 1


def test_daily_cap_sends_the_most_urgent_and_puts_the_rest_in_one_digest(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path, daily_cap=2)
    store = open_store(tmp_path)
    rows = [snapshot_row(f"C{i}", "high", priority=p) for i, p in enumerate([4, 1, 2, 2, 1])]
    owners = {row["customer_id"]: "Bo Chen" for row in rows} | {"C9": "Ana Lima"}
    rows.append(snapshot_row("C9", "high", priority=9))
    raise_alerts(store, config, write_snapshot(tmp_path / "d" / "m", DAY, rows), owners, "m")
    bo = store.alerts(owner="Bo Chen")
    singles = {a["customer_id"] for a in bo if a["delivery"] == "single"}
    assert singles == {"C1", "C4"}  # priority 1 first
    messages = store.deliveries()
    digests = [m for m in messages if m["kind"] == "digest"]
    assert len(digests) == 1 and digests[0]["recipient"] == "Bo Chen"
    by_id = {a["alert_id"]: a for a in bo}
    assert [by_id[i]["priority"] for i in digests[0]["alert_ids"]] == [2, 2, 4]  # by priority
    assert digests[0]["payload"]["language"] == "zh" and "按优先级" in digests[0]["payload"]["text"]
    assert sum(m["kind"] == "alert" for m in messages) == 3  # Bo's two and Ana's one


# ------------------------------------------------------------------------------------------- lifecycle


def test_lifecycle_moves_and_refusals(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path)
    store = open_store(tmp_path)
    raise_alerts(
        store, config, write_snapshot(tmp_path / "d" / "m", DAY, [snapshot_row("A", "high")]), {}, "m"
    )
    alert_id = store.alerts()[0]["alert_id"]
    state = tmp_path / "state"
    with pytest.raises(TransitionNotAllowed, match="resolve is allowed only from acknowledged"):
        transition(store, alert_id, "resolve", resolution=check_resolution("saved"), state_dir=state)
    assert transition(store, alert_id, "acknowledge")["state"] == "acknowledged"
    with pytest.raises(TransitionNotAllowed):
        transition(store, alert_id, "acknowledge")
    assert transition(store, alert_id, "start")["state"] == "in_progress"
    done = transition(store, alert_id, "resolve", resolution=check_resolution("False alarm"), state_dir=state)
    assert (done["state"], done["outcome"], done["churn_reason"]) == ("resolved", "false_alarm", None)
    with pytest.raises(TransitionNotAllowed):
        transition(store, alert_id, "start")
    with pytest.raises(UnknownAlert):
        transition(store, 999, "acknowledge")
    for args, field in [(("maybe",), "outcome"), (("churned",), "churn_reason"),
                        (("churned", "weather"), "churn_reason"),
                        (("false_alarm", "price"), "churn_reason"), (("saved", "weather"), "churn_reason"),
                        (("saved", None, 5), "note")]:  # fmt: skip
        with pytest.raises(BadResolution) as caught:
            check_resolution(*args)
        assert caught.value.field == field
    # A saved customer may say what put them at risk, from the same vocabulary.
    assert check_resolution("saved", "Price", "discount agreed") == Resolution(
        "saved", "price", "discount agreed"
    )


def test_unacknowledged_alerts_escalate_to_the_manager_once(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path, owners={"Dana Wu": {"language": "zh"}})
    store = open_store(tmp_path)
    snapshot = write_snapshot(
        tmp_path / "d" / "m", DAY, [snapshot_row("A", "high"), snapshot_row("B", "high")]
    )
    raised_at = time.time()
    raise_alerts(store, config, snapshot, {"A": "Ana Lima", "B": "Nobody"}, "m", now=raised_at)
    assert escalate_overdue(store, config, now=raised_at + 3600).overdue == 0  # within 24 h
    summary = escalate_overdue(store, config, now=raised_at + 25 * 3600)
    assert (summary.overdue, summary.escalated, summary.without_manager) == (2, 1, 1)
    escalations = [d for d in store.deliveries() if d["kind"] == "escalation"]
    assert len(escalations) == 1 and escalations[0]["recipient"] == "Dana Wu"
    assert escalations[0]["payload"]["language"] == "zh" and "未确认" in escalations[0]["payload"]["subject"]
    assert escalate_overdue(store, config, now=raised_at + 26 * 3600).escalated == 0  # only once


# -------------------------------------------------------------------------------------------- delivery


def delivery_trial(tmp: Path, alerts: int, outage_seconds: float, hangs: int = 3) -> dict[str, int]:
    """Raise `alerts` alerts and deliver them to a receiver that answers 500 for `outage_seconds`,
    then hangs past the sender's timeout `hangs` times, then recovers. Returns the counts."""
    config, _ = make_config(tmp, daily_cap=alerts)
    store = open_store(tmp)
    rows = [snapshot_row(f"C{i:06d}", "high") for i in range(alerts)]
    raise_alerts(store, config, write_snapshot(tmp / "d" / "m", DAY, rows), {}, "m")
    started = time.monotonic()
    hung = {"n": 0}

    def fault() -> str:
        if time.monotonic() - started < outage_seconds:
            return "fail"
        if hung["n"] < hangs:
            hung["n"] += 1
            return "hang"
        return "ok"

    with WebhookReceiver(SECRET, fault, hang_seconds=config.delivery.timeout_seconds * 3) as receiver:
        summary = deliver(store, with_url(config, receiver.url), max_seconds=outage_seconds + 120)
        time.sleep(config.delivery.timeout_seconds * 3)  # let hung requests finish on the receiver
    counts = store.outbox_counts()
    return {
        "alerts": alerts,
        "outage_seconds": int(outage_seconds),
        "requests": receiver.requests,
        "failed_answers": receiver.failed,
        "hung": receiver.hung,
        "received_once": sum(1 for n in receiver.alerts.values() if n == 1),
        "lost": alerts - len(receiver.alerts),
        "doubled": sum(1 for n in receiver.alerts.values() if n > 1),
        "duplicates_dropped": receiver.duplicates,
        "bad_signatures": receiver.bad_signatures,
        "sent": counts.get("sent", 0),
        "dead": counts.get("dead", 0),
        "delivered": summary.sent,
    }


def test_delivery_through_an_outage_and_hangs_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    counts = delivery_trial(tmp_path, alerts=150, outage_seconds=1.5)
    assert counts["failed_answers"] > 0 and counts["hung"] == 3  # the faults happened
    assert counts["lost"] == 0 and counts["doubled"] == 0 and counts["received_once"] == 150
    assert counts["bad_signatures"] == 0 and counts["sent"] == 150 and counts["dead"] == 0
    # A hung request reached the receiver after the sender gave up: sent again, dropped by its key.
    assert counts["duplicates_dropped"] >= 1


def test_dead_letters_and_retrying_them(tmp_path: Path) -> None:
    config, _ = make_config(tmp_path, delivery={"max_attempts": 2})
    store = open_store(tmp_path)
    raise_alerts(
        store, config, write_snapshot(tmp_path / "d" / "m", DAY, [snapshot_row("A", "high")]), {}, "m"
    )
    down = {"on": True}
    with WebhookReceiver(SECRET, lambda: "fail" if down["on"] else "ok") as receiver:
        configured = with_url(config, receiver.url)
        summary = deliver(store, configured, max_seconds=5)
        assert summary.dead == 1 and store.outbox_counts() == {"dead": 1}
        dead = store.deliveries("dead")[0]
        assert dead["attempts"] == 2 and dead["last_error"] == "HTTP 500"
        down["on"] = False
        assert retry_dead(store) == 1
        assert deliver(store, configured, max_seconds=5).sent == 1
    assert store.outbox_counts() == {"sent": 1} and len(receiver.alerts) == 1


def test_robot_formats_and_signatures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNGUARD_TEST_ROBOT_SECRET", "robot-secret")
    with WebhookReceiver() as receiver:
        channels = {
            "slack": {"kind": "slack", "url": receiver.url},
            "feishu": {"kind": "feishu", "url": receiver.url, "secret_env": "CHURNGUARD_TEST_ROBOT_SECRET"},
            "dingtalk": {
                "kind": "dingtalk",
                "url": receiver.url,
                "secret_env": "CHURNGUARD_TEST_ROBOT_SECRET",
            },
            "wecom": {"kind": "wecom", "url": receiver.url},
        }
        config, _ = make_config(tmp_path, channels=channels, default_channels=list(channels))
        store = open_store(tmp_path)
        raise_alerts(
            store, config, write_snapshot(tmp_path / "d" / "m", DAY, [snapshot_row("A", "high")]), {}, "m"
        )
        assert deliver(store, config, max_seconds=5).sent == 4
    bodies = {key.rsplit(":", 1)[1]: body for key, body in receiver.messages.items()}
    assert "Churn risk" in bodies["slack"]["text"] and "health 20/100" in bodies["slack"]["text"]
    assert (
        bodies["feishu"]["msg_type"] == "text" and bodies["feishu"]["sign"] and bodies["feishu"]["timestamp"]
    )
    assert bodies["dingtalk"]["msgtype"] == "markdown" and "#1" in bodies["dingtalk"]["markdown"]["text"]
    assert bodies["wecom"]["msgtype"] == "markdown"


def test_email_over_a_real_smtp_server(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler
    from model_fixtures import free_port

    received: list[Any] = []

    class Collect(MessageHandler):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channels = {"mail": {"kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                             "sender": "churnguard@example.com"}}  # fmt: skip
        owners = {"Bo Chen": {"language": "zh", "email": "bo.chen@example.com", "channels": ["mail"]}}
        config, _ = make_config(tmp_path, channels=channels, default_channels=[], owners=owners)
        store = open_store(tmp_path)
        snapshot = write_snapshot(
            tmp_path / "d" / "m", DAY, [snapshot_row("A", "high"), snapshot_row("B", "high")]
        )
        raise_alerts(store, config, snapshot, {"A": "Bo Chen", "B": "Bo Chen"}, "m")
        assert deliver(store, config, max_seconds=10).sent == 2
        assert deliver(store, config).sent == 0  # sent is sent: nothing goes twice
    finally:
        controller.stop()
    assert len(received) == 2 and {m["To"] for m in received} == {"bo.chen@example.com"}
    assert len({m["Message-ID"] for m in received}) == 2
    from email.header import decode_header, make_header

    assert all("流失预警" in str(make_header(decode_header(m["Subject"]))) for m in received)


def test_a_killed_delivering_process_is_resumed_without_loss(tmp_path: Path) -> None:
    alerts = 40
    config, path = make_config(tmp_path, daily_cap=alerts)
    store = open_store(tmp_path)
    rows = [snapshot_row(f"C{i:03d}", "high") for i in range(alerts)]
    raise_alerts(store, config, write_snapshot(tmp_path / "d" / "m", DAY, rows), {}, "m")
    slow = {"on": True}
    # Every request takes 0.3 s while slow: the process is killed with a message in flight.
    with WebhookReceiver(SECRET, lambda: "hang" if slow["on"] else "ok", hang_seconds=0.3) as receiver:
        data = yaml.safe_load(path.read_text())
        data["channels"]["hub"]["url"] = receiver.url
        path.write_text(yaml.safe_dump(data))
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "CHURNGUARD_ALERTS_CONFIG": str(path),
               "CHURNGUARD_EVENT_STORE": store.url}  # fmt: skip
        command = [sys.executable, "-m", "churnguard.cli", "alerts", "deliver", "--max-seconds", "60"]
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and receiver.requests < 5:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        interrupted = store.outbox_counts()
        # Killed mid-send: claimed messages left under a lease, the rest not sent yet.
        assert interrupted.get("sending", 0) >= 1 and interrupted.get("sent", 0) < alerts
        slow["on"] = False
        resumed = subprocess.run(
            [*command[:-1], "10"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        time.sleep(0.5)
    assert store.outbox_counts() == {"sent": alerts}
    assert len(receiver.alerts) == alerts and set(receiver.alerts.values()) == {1}  # each exactly once


def test_alerts_and_outbox_on_postgresql(tmp_path: Path) -> None:
    from pg_fixtures import fresh_database

    config, _ = make_config(tmp_path, daily_cap=1)
    with fresh_database("alerts") as url:
        store = AlertStore.open(url)
        rows = [snapshot_row("A", "high", priority=1), snapshot_row("B", "high", priority=2)]
        snapshot = write_snapshot(tmp_path / "d" / "m", DAY, rows)
        assert raise_alerts(store, config, snapshot, {"A": "Ana Lima", "B": "Ana Lima"}, "m").raised == 2
        assert raise_alerts(store, config, snapshot, {"A": "Ana Lima", "B": "Ana Lima"}, "m").raised == 0
        with WebhookReceiver(SECRET) as receiver:
            assert (
                deliver(store, with_url(config, receiver.url), max_seconds=5).sent == 2
            )  # one alert, one digest
        alert_id = store.alerts(customer_id="A")[0]["alert_id"]
        transition(store, alert_id, "acknowledge")
        with pytest.raises(TransitionNotAllowed):
            transition(store, alert_id, "acknowledge")
        store.close()
    assert len(receiver.alerts) == 1 and [m["kind"] for m in receiver.messages.values()].count("digest") == 1


def test_triggers_are_set_in_scoring_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from churnguard.config import ConfigError
    from churnguard.scoring import load_scoring_config

    shipped = load_alerts_config()  # configs/alerts.yaml routes; configs/scoring.yaml says when
    assert shipped.policy == load_scoring_config().alerts
    assert shipped.policy.daily_cap == 20 and shipped.policy.cooldown_days == 14
    monkeypatch.setenv("CHURNGUARD_SCORING__ALERTS__DAILY_CAP", "3")
    monkeypatch.setenv("CHURNGUARD_SCORING__ALERTS__ENTER_HIGH", "false")
    overridden = load_alerts_config()
    assert overridden.policy.daily_cap == 3 and overridden.route("anyone").daily_cap == 3
    assert not overridden.policy.enter_high and overridden.policy.rise_by_tier
    # An owner's own cap (routing, in alerts.yaml) still wins over the policy's.
    config, path = make_config(tmp_path, owners={"Bo Chen": {"daily_cap": 7}}, daily_cap=2)
    assert config.route("Bo Chen").daily_cap == 7 and config.route("Ana Lima").daily_cap == 2
    # The old places are refused, naming the new one, not silently ignored.
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "daily_cap": 5, "triggers": {"enter_high": False}}))
    with pytest.raises(ConfigError, match=r"daily_cap, triggers moved to configs/scoring.yaml"):
        load_alerts_config(path)
    monkeypatch.setenv("CHURNGUARD_ALERTS__COOLDOWN_DAYS", "3")
    with pytest.raises(ConfigError, match=r"cooldown_days moved to configs/scoring\.yaml"):
        load_alerts_config()
    monkeypatch.delenv("CHURNGUARD_ALERTS__COOLDOWN_DAYS")
    monkeypatch.setenv("CHURNGUARD_SCORING__ALERTS__DAILY_CAP", "-1")
    with pytest.raises(ConfigError, match=r"scoring.yaml.*\n.*alerts.daily_cap"):
        load_alerts_config()


def test_measures_from_a_store_with_known_times(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from alerts.measures import measures_from_store, prometheus_text
    from churnguard.cli import main

    config, _ = make_config(tmp_path)  # sla_hours 24
    store = open_store(tmp_path)
    raised = 1_000_000.0
    rows = [snapshot_row("A", "high"), snapshot_row("B", "high", critical="payment_overdue"),
            snapshot_row("C", "high"), snapshot_row("D", "high")]  # fmt: skip
    owners = {"A": "Ana Lima", "B": "Ana Lima", "C": "Bo Chen", "D": "Bo Chen"}
    raise_alerts(store, config, write_snapshot(tmp_path / "d" / "m", DAY, rows), owners, "m", now=raised)
    ids = {a["customer_id"]: a["alert_id"] for a in store.alerts()}
    state = tmp_path / "state"

    def act(customer: str, action: str, after: float, resolution: Any = None) -> None:
        transition(store, ids[customer], action, resolution=resolution, state_dir=state, now=raised + after)

    act("A", "acknowledge", 600)
    act("A", "resolve", 3600, check_resolution("saved", note="discount"))
    act("B", "start", 1800)  # starting acknowledges
    act("B", "resolve", 7200, check_resolution("churned", "price", "too dear"))
    act("C", "acknowledge", 3000)  # D: nobody acknowledges it, and its 24 h pass
    now = raised + 90_000
    measures = measures_from_store(store, now=now)
    assert measures is not None
    overall = measures["overall"]
    # Acknowledged after 600, 1800, 3000 s; resolved after 3600 and 7200 s; p90 linearly interpolated.
    assert overall["time_to_acknowledge"] == {
        "count": 3, "median_seconds": 1800.0, "p90_seconds": 2760.0, "sum_seconds": 5400.0,
    }  # fmt: skip
    assert overall["time_to_resolve"] == {
        "count": 2, "median_seconds": 5400.0, "p90_seconds": 6840.0, "sum_seconds": 10800.0,
    }  # fmt: skip
    outcome = [overall[key] for key in ("saved", "churned", "save_rate", "open_past_sla")]
    assert outcome == [1, 1, 0.5, 1]
    ana, bo = measures["per_owner"]["Ana Lima"], measures["per_owner"]["Bo Chen"]
    assert ana["time_to_acknowledge"]["median_seconds"] == 1200.0
    assert ana["time_to_acknowledge"]["p90_seconds"] == 1680.0 and ana["open_past_sla"] == 0
    assert bo["time_to_acknowledge"]["median_seconds"] == 3000.0 and bo["time_to_resolve"]["count"] == 0
    assert bo["save_rate"] is None and bo["open_past_sla"] == 1
    assert set(measures["per_rule"]) == {"enter_high", "rule:payment_overdue"}
    rule = measures["per_rule"]["rule:payment_overdue"]
    assert rule["alerts"] == 1 and rule["save_rate"] == 0.0
    assert rule["time_to_resolve"]["median_seconds"] == 7200.0
    assert measures["per_rule"]["enter_high"]["alerts"] == 4 and measures["per_tier"]["high"]["alerts"] == 4
    assert measures_from_store(store, now=raised + 3600)["overall"]["open_past_sla"] == 0  # within the SLA

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(prometheus_text(measures))
        for sample in family.samples
    }
    assert samples[("churnguard_alert_time_to_acknowledge_seconds",
                    (("by", "owner"), ("group", "Ana Lima"), ("quantile", "0.5")))] == 1200.0  # fmt: skip
    assert samples[("churnguard_alert_time_to_resolve_seconds",
                    (("by", "all"), ("group", "all"), ("quantile", "0.9")))] == 6840.0  # fmt: skip
    assert samples[("churnguard_alert_save_rate", (("by", "all"), ("group", "all")))] == 0.5
    assert samples[("churnguard_alert_open_past_sla", (("by", "owner"), ("group", "Bo Chen")))] == 1.0
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "churnguard_alert_acknowledge_duration_seconds_bucket"
    }
    assert buckets["900.0"] == 1 and buckets["3600.0"] == 3 and buckets["+Inf"] == 3

    # The outcomes report shows them, in text and HTML, beside the outcomes the resolutions wrote.
    assert main(["outcomes", "report", "--store", store.url]) == 0
    text = capsys.readouterr().out
    assert "alert measures" in text and "30 min / 46 min (3)" in text  # 1,800 s / 2,760 s
    assert "Bo Chen" in text and "50%" in text
    page = (state / "outcomes" / "report.html").read_text()
    assert "Alerts: time to act" in page and "rule:payment_overdue" in page and "Ana Lima" in page
    report = json.loads((state / "outcomes" / "report.json").read_text())
    assert report["alert_measures"]["overall"]["save_rate"] == 0.5 and report["outcomes"] == 2
    store.close()


def test_secrets_stay_out_of_logs_and_only_named_addresses_are_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    token = "T0SECRET/B0SECRET/xoxb-token-for-loopback-only"
    caplog.set_level(logging.DEBUG)  # everything any logger says, httpx's and httpcore's included
    with (
        WebhookReceiver() as elsewhere,
        WebhookReceiver(fault=iter(["fail"] + ["ok"] * 10).__next__) as robot,
    ):
        redirects: list[str] = []

        class Redirect(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # an address the configuration names, sending us to one it does not
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                redirects.append(self.path)
                self.send_response(307)
                self.send_header("Location", elsewhere.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

        redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=redirector.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv("CHURNGUARD_TEST_SLACK_URL", f"{robot.url}/{token}")
            channels = {
                "hub": {"kind": "webhook", "url": f"http://127.0.0.1:{redirector.server_address[1]}/hook",
                        "secret_env": SECRET_ENV},
                "slack": {"kind": "slack", "url_env": "CHURNGUARD_TEST_SLACK_URL"},
            }  # fmt: skip
            config, _ = make_config(tmp_path, channels=channels, default_channels=["hub", "slack"])
            store = open_store(tmp_path)
            raise_alerts(
                store, config, write_snapshot(tmp_path / "d" / "m", DAY, [snapshot_row("A", "high")]), {}, "m"
            )
            summary = deliver(store, config, max_seconds=2)
        finally:
            redirector.shutdown()
            redirector.server_close()
    assert redirects and elsewhere.requests == 0  # the redirect was not followed
    assert summary.sent == 1 and robot.failed == 1 and len(robot.messages) == 1  # the robot, after a failure
    (hub,) = [d for d in store.deliveries() if d["channel"] == "hub"]
    assert hub["state"] == "pending" and hub["last_error"] == "HTTP 307"
    logged = caplog.text + json.dumps(store.deliveries())
    assert "HTTP 307" in caplog.text and "HTTP 500" in caplog.text  # the failures are logged...
    for secret_text in (SECRET, token, "xoxb", str(robot.url)):
        assert secret_text not in logged  # ...never the URL with its token, nor the signing secret
    store.close()


def test_two_passes_at_once_on_postgresql_raise_each_alert_once(tmp_path: Path) -> None:
    """Two hosts run the same day's pass together: the second waits for the first, then sees its
    alerts, instead of failing on the one-open-alert index or raising them again."""
    import threading

    from pg_fixtures import fresh_database

    config, _ = make_config(tmp_path, daily_cap=100)
    customers = [f"R{number:02d}" for number in range(30)]
    rows = [snapshot_row(customer, "high", priority=1 + n % 5) for n, customer in enumerate(customers)]
    snapshot = write_snapshot(tmp_path / "d" / "m", DAY, rows)
    owners = dict.fromkeys(customers, "Ana Lima")
    with fresh_database("alerts_race") as url:
        stores = [AlertStore.open(url), AlertStore.open(url)]
        together = threading.Barrier(2)
        raised: list[int] = []
        errors: list[BaseException] = []

        def run(store: AlertStore) -> None:
            together.wait()
            try:
                raised.append(raise_alerts(store, config, snapshot, owners, "m").raised)
            except BaseException as exc:  # reported below: the test must see a failed pass
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert not errors, errors
            assert sorted(raised) == [0, len(customers)]
            assert len(stores[0].alerts(limit=1000)) == len(customers)
            assert stores[0].outbox_counts() == {"pending": len(customers)}
        finally:
            for store in stores:
                store.close()


def test_two_senders_on_one_postgresql_outbox_send_each_message_once(tmp_path: Path) -> None:
    """Two replicas delivering from one outbox at once: both send, and no message is sent twice (the
    claim skips rows the other sender holds)."""
    import threading
    from collections import Counter

    from pg_fixtures import fresh_database

    from alerts.channels import send
    from alerts.outbox import deliver_due

    config, _ = make_config(tmp_path, daily_cap=1000)
    customers = [f"S{number:02d}" for number in range(60)]
    snapshot = write_snapshot(tmp_path / "d" / "m", DAY, [snapshot_row(c, "high") for c in customers])

    def slow() -> str:
        time.sleep(0.01)  # a receiver that takes a moment: both senders have claims in flight together
        return "ok"

    with fresh_database("alerts_senders") as url, WebhookReceiver(SECRET, fault=slow) as receiver:
        config = with_url(config, receiver.url)
        stores = [AlertStore.open(url), AlertStore.open(url)]
        raised = raise_alerts(stores[0], config, snapshot, dict.fromkeys(customers, "Ana Lima"), "m")
        assert raised.raised == len(customers)
        sent_by: Counter[str] = Counter()
        together = threading.Barrier(2)

        def sender(name: str, store: AlertStore) -> None:
            def counted(channel: Any, payload: dict[str, Any], timeout: float) -> None:
                send(channel, payload, timeout)
                sent_by[name] += 1

            together.wait()
            while deliver_due(store, config, limit=3, sender=counted).left.get("pending", 0):
                pass

        threads = [threading.Thread(target=sender, args=(n, s)) for n, s in zip("ab", stores, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        try:
            assert stores[0].outbox_counts() == {"sent": len(customers)}
        finally:
            for store in stores:
                store.close()
    assert sent_by["a"] > 0 and sent_by["b"] > 0 and sent_by.total() == len(customers)
    assert len(receiver.alerts) == len(customers) and set(receiver.alerts.values()) == {1}
    assert receiver.duplicates == 0 and receiver.requests == len(customers)
