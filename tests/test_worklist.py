"""The worklist and the early-warning fields over HTTP, against the real server on loopback, plus
owner filtering and unscorable logged rows on the worklist builder itself."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from model_fixtures import ServerProcess, start_server, telco_artifact_dir, telco_customers, telco_rows

from churnguard.predict import Predictor
from churnguard.tiers import TIER_RANK
from churnguard.value import WorklistConfig
from churnguard.worklist import WorklistError, WorklistRequest, build_worklist

pytestmark = pytest.mark.slow
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        str(telco_artifact_dir()), tmp_path_factory.mktemp("worklist-state"), env={"CHURNGUARD_API_KEYS": ""}
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "local")


def urgency(entry: dict) -> tuple:
    return (
        entry["priority"],
        -TIER_RANK[entry["alert_tier"]],
        -entry["value_score"],
        -entry["churn_probability"],
        entry["customer_id"],
    )


def fields_of(response: httpx.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


# ------------------------------------------------------------------------------------------------ HTTP


def test_worklist_orders_every_scored_customer_by_priority(
    client: httpx.Client, predictor: Predictor
) -> None:
    batch = telco_customers(60, seed=21)
    assert client.post("/predict_batch", json={"customers": batch}).status_code == 200
    response = client.post("/worklist", json={})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 60 and body["owner"] is None and body["skipped"] == []
    listed = body["customers"]
    expected = sorted(predictor.score_frame(pd.DataFrame(batch)).results(), key=urgency)
    assert [e["customer_id"] for e in listed] == [r["customer_id"] for r in expected]
    assert [e["priority"] for e in listed] == sorted(e["priority"] for e in listed)
    for entry, result in zip(listed, expected, strict=True):
        assert (entry["alert_tier"], entry["value_tier"]) == (result["alert_tier"], result["value_tier"])
        assert len(entry["reasons"]) <= 3  # rule hits and risk-raising drivers only
        assert entry["reasons"] or entry["alert_tier"] == "low"
        assert all(r["code"].startswith(("rule:", "raises_risk:")) for r in entry["reasons"])
        assert entry["last_scored_at"]
    top = client.post("/worklist", json={"limit": 5}).json()
    assert [e["customer_id"] for e in top["customers"]] == [e["customer_id"] for e in listed[:5]]
    assert top["count"] == 60
    chinese = client.post("/worklist", json={"lang": "zh", "limit": 3}).json()["customers"]
    assert all(CJK.search(r["message"]) for entry in chinese for r in entry["reasons"])


def test_bad_worklist_requests_get_400_naming_the_field(client: httpx.Client) -> None:
    cases = [
        ({"owner": "Ana Lima"}, "owner"),  # the Telco model has no account_owner feature
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"lang": "fr"}, "lang"),
        ({"owner": 7}, "owner"),
        ({"ownr": "x"}, "ownr"),
    ]
    for body, field in cases:
        response = client.post("/worklist", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in fields_of(response), (body, response.json())
    assert client.post("/worklist", content=b"[1, 2]").status_code == 400
    assert client.post("/worklist", content=b"{not json").status_code == 400


def test_predict_answers_in_the_requested_language(client: httpx.Client, predictor: Predictor) -> None:
    customer = telco_customers(1, seed=22)[0]
    english = client.post("/predict", json={"customer": customer}).json()
    chinese = client.post("/predict", json={"customer": customer, "lang": "zh"}).json()
    expected = predictor.score_record(customer).results(language="zh")[0]
    assert chinese["reasons"] == expected["reasons"]
    assert all(CJK.search(r["message"]) for r in chinese["reasons"])
    assert not any(CJK.search(r["message"]) for r in english["reasons"])
    assert [r["code"] for r in chinese["reasons"]] == [r["code"] for r in english["reasons"]]
    for key in ("value_tier", "value_score", "priority", "model_tier", "escalated_by"):
        assert english[key] == expected[key]
    response = client.post("/predict", json={"customer": customer, "lang": "fr"})
    assert response.status_code == 400 and fields_of(response) == ["lang"]

    batch = telco_customers(4, seed=23)
    body = client.post("/predict_batch", json={"customers": batch, "lang": "zh"}).json()
    assert all(CJK.search(r["reasons"][0]["message"]) for r in body["results"])
    assert client.post("/predict_batch", json={"customers": batch, "lang": "de"}).status_code == 400
    csv = pd.DataFrame(batch).to_csv(index=False).encode()
    upload = client.post("/predict_batch?lang=zh", content=csv, headers={"content-type": "text/csv"})
    assert upload.status_code == 200, upload.text
    assert all(CJK.search(r["reasons"][0]["message"]) for r in upload.json()["results"])
    wrong = client.post("/predict_batch?lang=xx", content=csv, headers={"content-type": "text/csv"})
    assert wrong.status_code == 400 and fields_of(wrong) == ["lang"]
    parquet = client.post(
        "/predict_batch?lang=zh",
        content=csv,
        headers={"content-type": "text/csv", "accept": "application/vnd.apache.parquet"},
    )
    table = pd.read_parquet(io.BytesIO(parquet.content))
    assert {"value_tier", "priority", "model_tier"} <= set(table.columns)
    assert CJK.search(json.loads(table["reasons"][0])[0]["message"])


def test_health_drop_from_the_prediction_log_escalates_over_http(
    client: httpx.Client, server: ServerProcess, predictor: Predictor
) -> None:
    pool = telco_customers(80, seed=24)
    scored = predictor.score_frame(pd.DataFrame(pool))
    lows = np.flatnonzero(scored.tier == "low")
    low = int(lows[np.argmin(scored.health[lows])])
    customer, health = pool[low], int(scored.health[low])
    assert health <= 80
    # A score logged 40 days ago, when the customer was perfectly healthy.
    with sqlite3.connect(server.state_dir / "predictions.db") as connection:
        connection.execute(
            "INSERT INTO predictions (logged_at, request_id, model_version, customer_id, inputs, "
            "churn_probability, health_score, alert_tier) "
            "VALUES (?, 'past', 'local', ?, '{}', 0.01, 100, 'low')",
            (
                (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="microseconds"),
                customer["customer_id"],
            ),
        )
    result = client.post("/predict", json={"customer": customer}).json()
    assert (result["model_tier"], result["alert_tier"]) == ("low", "medium")
    assert result["escalated_by"] == ["rule:health_drop"]
    first = result["reasons"][0]
    assert first["code"] == "rule:health_drop" and first["escalated"] is True and first["impact"] is None
    assert first["message"] == f"health score down {100 - health} points in 90 days"
    chinese = client.post("/predict", json={"customer": customer, "lang": "zh"}).json()
    assert chinese["reasons"][0]["message"] == f"健康分在 90 天内下降了 {100 - health} 分"
    listed = client.post("/worklist", json={"limit": 10_000}).json()["customers"]
    (entry,) = [e for e in listed if e["customer_id"] == customer["customer_id"]]
    assert entry["escalated_by"] == ["rule:health_drop"] and entry["reasons"][0]["code"] == "rule:health_drop"


def test_model_says_which_rules_are_active(client: httpx.Client) -> None:
    model = client.get("/model").json()
    assert [rule["code"] for rule in model["rules"]["active"]] == ["rule:health_drop"]
    assert {rule["code"] for rule in model["rules"]["inactive"]} >= {
        "rule:no_recent_order",
        "rule:ticket_surge",
    }
    assert model["value"]["components"]["contract"]["feature"] == "MonthlyCharges"


# ----------------------------------------------------------------------------------------- the builder


def logged_frame(count: int, seed: int) -> pd.DataFrame:
    frame = telco_rows(count, seed=seed)
    frame.insert(
        0, "logged_at", pd.Timestamp("2025-06-01", tz="UTC") + pd.to_timedelta(np.arange(count), "s")
    )
    return frame


def test_worklist_of_one_owner(predictor: Predictor) -> None:
    config = WorklistConfig(owner_feature="PaymentMethod")  # the Telco data has no account owner
    logged = logged_frame(120, seed=25)
    body = build_worklist(predictor, logged, config, WorklistRequest(owner="Electronic check", limit=1000))
    mine = logged[logged["PaymentMethod"] == "Electronic check"]
    assert body["count"] == len(mine) > 0
    assert {e["owner"] for e in body["customers"]} == {"Electronic check"}
    assert [e["customer_id"] for e in body["customers"]] == [
        r["customer_id"]
        for r in sorted(predictor.score_frame(mine.drop(columns="logged_at")).results(), key=urgency)
    ]
    everyone = build_worklist(predictor, logged, config, WorklistRequest())
    assert everyone["count"] == 120 and len(everyone["customers"]) == 100  # the default limit
    with pytest.raises(WorklistError, match="no 'account_owner' feature"):
        build_worklist(predictor, logged, WorklistConfig(), WorklistRequest(owner="x"))


def test_the_latest_logged_row_counts_and_unscorable_rows_are_listed(predictor: Predictor) -> None:
    logged = logged_frame(3, seed=26)
    again = logged.iloc[[0]].copy()
    again["logged_at"] += pd.Timedelta(days=1)
    again["tenure"] = 71.0
    broken = logged.iloc[[1]].copy()
    broken["logged_at"] += pd.Timedelta(days=1)
    broken["Contract"] = None  # never missing in training: cannot be scored
    body = build_worklist(predictor, pd.concat([logged, again, broken]), WorklistConfig(), WorklistRequest())
    assert body["count"] == 2
    assert body["skipped"] == [
        {"customer_id": logged["customer_id"][1], "field": "Contract",
         "message": "must not be missing (it was never missing in training)"}
    ]  # fmt: skip
    rescored = predictor.score_frame(again.drop(columns="logged_at")).results()[0]
    (entry,) = [e for e in body["customers"] if e["customer_id"] == logged["customer_id"][0]]
    assert entry["churn_probability"] == pytest.approx(rescored["churn_probability"])


def test_each_customer_shows_their_open_alert(predictor: Predictor, tmp_path) -> None:
    from alerts.lifecycle import check_resolution, transition
    from alerts.store import AlertStore

    logged = logged_frame(30, seed=27)
    ids = logged["customer_id"].astype(str).tolist()
    store = AlertStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    fields = {"owner": "Ana Lima", "state": "open", "model": "m", "raised_day": "2025-06-01",
              "observation_date": "2025-06-01", "tier": "high", "triggers": ["enter_high"], "rules": [],
              "reasons": {"en": []}, "delivery": "single", "raised_at": 0.0, "updated_at": 0.0,
              "due_at": 86400.0}  # fmt: skip
    with store.transaction() as cursor:
        opened = {c: store.insert_alert(cursor, {**fields, "customer_id": c}) for c in ids[:3]}
    transition(store, opened[ids[1]], "acknowledge")
    transition(store, opened[ids[2]], "acknowledge")
    transition(store, opened[ids[2]], "resolve", resolution=check_resolution("saved"), state_dir=tmp_path)
    body = build_worklist(predictor, logged, WorklistConfig(), WorklistRequest(), None, store.open_alerts)
    by_id = {entry["customer_id"]: entry["alert"] for entry in body["customers"]}
    assert body["alerts_known"] and len(by_id) == 30
    assert by_id[ids[0]] == {"alert_id": opened[ids[0]], "state": "open", "tier": "high",
                             "due_at": 86400.0, "raised_day": "2025-06-01"}  # fmt: skip
    assert by_id[ids[1]]["state"] == "acknowledged" and by_id[ids[1]]["alert_id"] == opened[ids[1]]
    assert by_id[ids[2]] is None  # resolved: no open alert
    assert all(by_id[c] is None for c in ids[3:])
    # An alert store that cannot answer: no alert shown, and the list says it does not know.
    unknown = build_worklist(predictor, logged, WorklistConfig(), WorklistRequest(), None, lambda ids: None)
    assert not unknown["alerts_known"] and all(e["alert"] is None for e in unknown["customers"])
    assert not build_worklist(predictor, logged, WorklistConfig(), WorklistRequest())["alerts_known"]
    store.close()
