"""Alerts in the live loop: `churnguard daily` on two consecutive days raises then updates alerts
(never duplicates them), with reasons in the owner's language, and the alert API on the real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
import yaml
from live_fixtures import LiveWorld, build_live_world, run_cli
from model_fixtures import ServerProcess, start_server

from alerts.receiver import WebhookReceiver
from alerts.store import AlertStore
from churnguard.feedback import load_outcomes
from churnguard.schema import OBSERVATION_COLUMN

pytestmark = pytest.mark.slow
CJK = "\u4e00-\u9fff"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorld]:
    with pytest.MonkeyPatch.context() as patch:
        state = tmp_path_factory.mktemp("alerts-state")
        patch.setenv("CHURNGUARD_STATE_DIR", str(state))
        yield build_live_world(state)


@pytest.fixture(scope="module")
def alerted(world: LiveWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The daily pass on two consecutive days with alerts routed to a loopback webhook."""
    folder = tmp_path_factory.mktemp("alerts-config")
    customers = pd.read_parquet(world.state / "sim" / "customers.parquet")
    owners = sorted(customers["account_owner"].dropna().unique())
    with WebhookReceiver() as receiver:
        config = {
            "channels": {"hub": {"kind": "webhook", "url": receiver.url}},
            "default_channels": ["hub"],
            "language": "zh",  # every owner but one reads Chinese
            "owners": {owners[0]: {"language": "en"}},
        }
        path = folder / "alerts.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        # The daily cap is the scoring policy's (configs/scoring.yaml `alerts:`), set by its override.
        env = {
            **world.environment(),
            "CHURNGUARD_ALERTS_CONFIG": str(path),
            "CHURNGUARD_SCORING__ALERTS__DAILY_CAP": "2",
        }
        last = world.table.frame[OBSERVATION_COLUMN].max()
        days = [f"{last - pd.Timedelta(days=1):%Y-%m-%d}", f"{last:%Y-%m-%d}"]
        runs = []
        for day in [*days, days[-1]]:  # the second day twice: a rerun changes nothing
            done = run_cli(
                ["daily", "--dataset", "crm", "--as-of", day, "--model", str(world.model_dir)], env
            )
            assert done.returncode == 0, done.stderr[-3000:]
            runs.append(done.stdout)
        delivered = run_cli(["alerts", "deliver", "--max-seconds", "30"], env)
        assert delivered.returncode == 0, delivered.stderr[-3000:]
        yield {"runs": runs, "receiver": receiver, "owners": owners, "env": env, "days": days}


def test_two_daily_passes_raise_then_update_alerts(world: LiveWorld, alerted: dict) -> None:
    store = AlertStore.open(world.store_url)
    alerts = store.alerts(limit=1000)
    assert alerts, alerted["runs"][0]
    by_customer = pd.Series([a["customer_id"] for a in alerts])
    assert by_customer.is_unique  # one alert per customer over both days
    first, second, rerun = alerted["runs"]
    assert "raised" in first and "open alerts updated" in second
    assert " 0 raised" in rerun and " 0 open alerts updated" in rerun and "0 messages queued" in rerun
    day_two = alerted["days"][1]
    carried = [a for a in alerts if a["raised_day"] == alerted["days"][0]]
    assert carried and all(a["observation_date"] == day_two for a in carried)  # updated, not duplicated
    snapshot = pd.read_parquet(world.state / "daily" / "churn-crm" / f"{day_two}.parquet").set_index(
        "customer_id"
    )
    for alert in carried:
        assert alert["health_score"] == snapshot.loc[alert["customer_id"], "health_score"]
    receiver: WebhookReceiver = alerted["receiver"]
    singles = [a for a in alerts if a["delivery"] == "single"]
    assert len(receiver.alerts) == len(singles) and set(receiver.alerts.values()) == {1}
    digests = [m for m in receiver.messages.values() if m["kind"] == "digest"]
    assert sum(len(m["alert_ids"]) for m in digests) == len(alerts) - len(singles)
    # The zh owner's messages are in Chinese, reasons included (scored again in their language).
    zh = [m for m in receiver.messages.values() if m["language"] == "zh"]
    assert zh and all(m["recipient"]["name"] != alerted["owners"][0] for m in zh)
    import re

    assert all(
        re.search(f"[{CJK}]", reason["message"]) for m in zh for a in m["alerts"] for reason in a["reasons"]
    )
    store.close()


@pytest.fixture(scope="module")
def server(
    world: LiveWorld, alerted: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_server(
        str(world.model_dir),
        world.state,
        env={"CHURNGUARD_API_KEYS": "", "CHURNGUARD_EVENT_STORE": world.store_url},
        workers=2,  # /metrics must say the same whichever worker answers
    )
    yield process
    process.stop()


def test_alert_api_lifecycle_over_the_real_server(world: LiveWorld, server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        listed = client.get("/alerts", params={"state": "open", "limit": 5})
        assert listed.status_code == 200 and listed.json()["count"] >= 2
        first, second = listed.json()["alerts"][:2]
        assert client.get(f"/alerts/{first['alert_id']}").json()["customer_id"] == first["customer_id"]
        assert client.get("/alerts/999999").status_code == 404
        assert client.post("/alerts/999999/acknowledge").status_code == 404
        bad_id = client.get("/alerts/abc")
        assert bad_id.status_code == 400 and "alert_id" in bad_id.json()["error"]
        bad_filter = client.get("/alerts", params={"state": "sleeping"})
        assert bad_filter.status_code == 400 and "state" in bad_filter.json()["error"]

        path = f"/alerts/{first['alert_id']}"
        assert client.post(f"{path}/resolve", json={"outcome": "saved"}).status_code == 409  # not seen yet
        assert client.post(f"{path}/acknowledge", json={"actor": "Ana"}).json()["state"] == "acknowledged"
        again = client.post(f"{path}/acknowledge")
        assert again.status_code == 409 and again.json()["state"] == "acknowledged"
        assert client.post(f"{path}/start").json()["state"] == "in_progress"
        missing_reason = client.post(f"{path}/resolve", json={"outcome": "churned"})
        assert missing_reason.status_code == 400 and "churn_reason" in missing_reason.json()["error"]
        unknown_field = client.post(f"{path}/resolve", json={"outcome": "saved", "mood": "good"})
        assert unknown_field.status_code == 400 and "mood" in unknown_field.json()["error"]
        resolved = client.post(
            f"{path}/resolve",
            json={"outcome": "churned", "churn_reason": "competitor", "note": "lost to a rival"},
        )
        assert resolved.status_code == 200 and resolved.json()["outcome"] == "churned"
        assert client.post(f"{path}/start").status_code == 409  # resolved is final

        acknowledged = client.post(f"/alerts/{second['alert_id']}/acknowledge")
        assert acknowledged.status_code == 200
    outcomes = load_outcomes(world.state)
    row = outcomes[outcomes["customer_id"] == first["customer_id"]]
    assert row[["outcome", "churn_reason"]].values.tolist() == [["churned", "competitor"]]
    report = run_cli(["outcomes", "report"], world.environment())
    assert report.returncode == 0 and "churned 1" in report.stdout, report.stdout + report.stderr


def test_metrics_and_the_worklist_show_the_alerts(world: LiveWorld, server: ServerProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from alerts.measures import measures_from_store

    store = AlertStore.open(world.store_url)
    expected = measures_from_store(store)
    assert expected is not None and expected["overall"]["time_to_acknowledge"]["count"] >= 2
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for _ in range(4):  # two workers: each answer carries the store's measures
            text = client.get("/metrics").text
            assert "bentoml_service_request_total" in text  # BentoML's own metrics stay
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            everyone = (("by", "all"), ("group", "all"))
            ack = expected["overall"]["time_to_acknowledge"]
            assert samples[("churnguard_alert_acknowledged", everyone)] == ack["count"]
            median = samples[
                ("churnguard_alert_time_to_acknowledge_seconds", (*everyone, ("quantile", "0.5")))
            ]
            assert median == pytest.approx(ack["median_seconds"])
            assert samples[("churnguard_alert_save_rate", everyone)] == expected["overall"]["save_rate"]
            assert samples[("churnguard_alert_open_past_sla", everyone)] == 0  # raised today, 24 h SLA
            for owner, part in expected["per_owner"].items():
                assert samples[("churnguard_alert_outcomes", (("by", "owner"), ("group", owner),
                                ("outcome", "churned")))] == part["churned"]  # fmt: skip

        listed = client.post("/worklist", json={"limit": 200})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["alerts_known"] and body["customers"]
        open_now = store.open_alerts([entry["customer_id"] for entry in body["customers"]])
        shown = {e["customer_id"]: e["alert"] for e in body["customers"] if e["alert"] is not None}
        assert shown and set(shown) == set(open_now)
        for customer, alert in shown.items():
            assert (alert["alert_id"], alert["state"]) == (
                open_now[customer]["alert_id"],
                open_now[customer]["state"],
            )
    store.close()
