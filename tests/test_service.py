"""HTTP tests against the real `bentoml serve` (started by `churnguard serve`'s code) on loopback."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from model_fixtures import ServerProcess, start_server, telco_artifact_dir, telco_customers, telco_rows

from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog

pytestmark = pytest.mark.slow

MAX_ROWS = 300
MAX_BODY = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("service-state")
    process = start_server(
        str(telco_artifact_dir()),
        state,
        env={
            "CHURNGUARD_SERVICE__LIMITS__MAX_BATCH_ROWS": str(MAX_ROWS),
            "CHURNGUARD_SERVICE__LIMITS__MAX_BODY_BYTES": str(MAX_BODY),
            "CHURNGUARD_SERVICE__PREDICTION_LOG__BATCH_ROWS": "100",
            "CHURNGUARD_API_KEYS": "",
        },
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


def error_fields(response: httpx.Response) -> list[tuple[int | None, str]]:
    return [(error.get("row"), error["field"]) for error in response.json()["errors"]]


# --------------------------------------------------------------------------------------------- scoring


def test_predict_returns_the_contract_with_the_predictors_values(
    client: httpx.Client, predictor: Predictor
) -> None:
    customer = telco_customers(1, seed=11)[0]
    response = client.post("/predict", json={"customer": customer})
    assert response.status_code == 200, response.text
    result = response.json()
    expected = predictor.score_record(customer).results()[0]
    assert set(result) == {
        "customer_id", "churn_probability", "health_score", "alert_tier", "model_tier", "escalated_by",
        "value_tier", "value_score", "priority", "reasons", "group_scores", "flags", "model_version",
    }  # fmt: skip
    assert result["customer_id"] == customer["customer_id"]
    assert result["churn_probability"] == pytest.approx(expected["churn_probability"], abs=1e-12)
    assert result["health_score"] == expected["health_score"]
    assert result["alert_tier"] == expected["alert_tier"]
    assert result["reasons"] == expected["reasons"]
    assert result["group_scores"] == expected["group_scores"]
    assert result["model_version"] == "local" == response.headers["x-model-version"]
    assert len(response.headers["x-request-id"]) == 32


def test_client_request_id_is_kept(client: httpx.Client, server: ServerProcess) -> None:
    response = client.post(
        "/predict",
        json={"customer": telco_customers(1)[0], "explain": False},
        headers={"X-Request-ID": "crm-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "crm-42"
    assert response.json()["reasons"] is None and response.json()["group_scores"] is None
    logged = PredictionLog.open(f"sqlite:///{server.state_dir / 'predictions.db'}").read()
    assert logged.loc[logged["request_id"] == "crm-42", "customer_id"].tolist() == [
        telco_customers(1)[0]["customer_id"]
    ]


def test_batch_json_keeps_input_order(client: httpx.Client, predictor: Predictor) -> None:
    batch = telco_customers(120, seed=12)
    response = client.post("/predict_batch", json={"customers": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 120 and body["model_version"] == "local"
    assert [r["customer_id"] for r in body["results"]] == [c["customer_id"] for c in batch]
    expected = predictor.score_frame(pd.DataFrame(batch))
    np.testing.assert_allclose(
        [r["churn_probability"] for r in body["results"]], expected.probability, atol=1e-12
    )
    assert [r["reasons"] for r in body["results"]] == expected.reasons


def test_parquet_csv_and_multipart_uploads(client: httpx.Client, predictor: Predictor) -> None:
    rows = telco_rows(150, seed=13)
    expected = predictor.score_frame(rows, explain=False).probability
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    uploads = [
        {"content": parquet.getvalue(), "headers": {"Content-Type": "application/vnd.apache.parquet"}},
        {"content": rows.to_csv(index=False).encode(), "headers": {"Content-Type": "text/csv"}},
        {"files": {"file": ("customers.parquet", parquet.getvalue(), "application/octet-stream")}},
        {"files": {"file": ("customers.csv", rows.to_csv(index=False).encode(), "text/csv")}},
    ]
    for upload in uploads:
        response = client.post("/predict_batch", params={"explain": "false"}, **upload)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["customer_id"] for r in results] == rows["customer_id"].tolist()
        np.testing.assert_allclose([r["churn_probability"] for r in results], expected, atol=1e-12)
        assert results[0]["reasons"] is None
    response = client.post(
        "/predict_batch",
        content=parquet.getvalue(),
        headers={
            "Content-Type": "application/vnd.apache.parquet",
            "Accept": "application/vnd.apache.parquet",
        },
    )
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pd.read_parquet(io.BytesIO(response.content))
    assert table["customer_id"].tolist() == rows["customer_id"].tolist()
    assert {"churn_probability", "health_score", "alert_tier", "reasons", "flags"} <= set(table.columns)


def test_unknown_category_is_served_and_flagged(client: httpx.Client) -> None:
    customer = {**telco_customers(1)[0], "PaymentMethod": "Barter"}
    response = client.post("/predict", json={"customer": customer})
    assert response.status_code == 200
    assert response.json()["flags"] == [{"code": "unknown_category", "field": "PaymentMethod"}]


# ------------------------------------------------------------------------------------------ bad input


def test_bad_single_requests_get_400_naming_the_field(client: httpx.Client) -> None:
    good = telco_customers(1)[0]
    cases: list[tuple[object, str]] = [
        ({"customer": {k: v for k, v in good.items() if k != "tenure"}}, "tenure"),
        ({"customer": {**good, "shoe_size": 44}}, "shoe_size"),
        ({"customer": {**good, "MonthlyCharges": "70"}}, "MonthlyCharges"),
        ({"customer": {**good, "tenure": 10_000}}, "tenure"),
        ({"customer": {**good, "Contract": None}}, "Contract"),
        ({"customer": {**good, "Contract": ["Month-to-month"]}}, "Contract"),
        ({"customer": {**good, "customer_id": None}}, "customer_id"),
        ({"customer": good, "explain": "no"}, "explain"),
        ({"customer": good, "verbose": True}, "verbose"),
        ({"customers": [good]}, "customer"),
        ({"customer": "7590-VHVEG"}, "customer"),
    ]
    for body, field in cases:
        response = client.post("/predict", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in [f for _, f in error_fields(response)], response.text
        assert field in response.json()["error"]


def test_malformed_bodies_get_4xx(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    for body in [b"", b"{", b"[1, 2]", b'{"customer": {"tenure": NaN}}', b"\xff\xfe"]:
        response = client.post("/predict", content=body, headers=json_type)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]
    assert client.post("/predict", content=b"a=1", headers={"Content-Type": "text/plain"}).status_code == 415
    response = client.post(
        "/predict_batch",
        content=b"PAR1 not parquet",
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    assert response.status_code == 400 and "Parquet" in response.json()["error"]


def test_bad_batch_rows_are_named_by_row(client: httpx.Client) -> None:
    batch = telco_customers(6, seed=14)
    batch[2] = {**batch[2], "tenure": -1}
    batch[4] = {k: v for k, v in batch[4].items() if k != "Partner"}
    batch[5] = {**batch[5], "MonthlyCharges": math.inf}
    response = client.post(
        "/predict_batch",
        content=json.dumps({"customers": batch}).encode(),
        headers={"Content-Type": "application/json"},
    )
    # Python's json writes Infinity, which is not JSON: the whole body is malformed.
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
    batch[5] = {**batch[5], "MonthlyCharges": True}
    response = client.post("/predict_batch", json={"customers": batch})
    assert response.status_code == 400
    assert error_fields(response) == [(2, "tenure"), (4, "Partner"), (5, "MonthlyCharges")]
    assert response.json()["error"].startswith("invalid input: row 2, tenure:")
    text = telco_rows(5).astype(str)
    text.loc[3, "tenure"] = "many"
    response = client.post(
        "/predict_batch", content=text.to_csv(index=False).encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 400 and error_fields(response) == [(3, "tenure")]
    response = client.post(
        "/predict_batch",
        content=telco_rows(5).drop(columns=["tenure"]).to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 400 and error_fields(response) == [(None, "tenure")]


def test_empty_and_oversized_requests(client: httpx.Client, server: ServerProcess) -> None:
    response = client.post("/predict_batch", json={"customers": []})
    assert response.status_code == 400 and error_fields(response) == [(None, "customers")]
    response = client.post("/predict_batch", json={"customers": telco_customers(1) * (MAX_ROWS + 1)})
    assert response.status_code == 413 and "max_batch_rows" in response.json()["error"]
    response = client.post(
        "/predict_batch", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "max_body_bytes" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(MAX_BODY // 10_000 + 2):
            yield b" " * 10_000

    response = client.post("/predict_batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert client.get("/livez").status_code == 200  # the server is fine afterwards


# -------------------------------------------------------------------------------------- metadata, docs


def test_model_metadata(client: httpx.Client, predictor: Predictor) -> None:
    meta = client.get("/model").json()
    contract = predictor.contract
    assert meta["model_version"] == "local" and meta["model_name"] == contract.model_name
    assert meta["dataset"] == "telco" and meta["created_at"] == contract.created_at
    assert meta["metrics"] == contract.metrics
    assert meta["thresholds"]["high"] == contract.thresholds.high
    assert [f["name"] for f in meta["feature_schema"]] == predictor.schema.names
    assert meta["explain_method"] == "leaf_tables" and meta["reasons_top"] == 3
    assert meta["reload"]["poll_seconds"] == 0  # a local folder is pinned


def test_probes_metrics_and_openapi(client: httpx.Client, predictor: Predictor) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_" in metrics.text
    spec = client.get("/docs.json").json()
    assert {"/predict", "/predict_batch", "/model", "/admin/reload"} <= set(spec["paths"])
    customer = spec["components"]["schemas"]["Customer"]
    assert set(customer["required"]) == {"customer_id", *predictor.schema.names}
    assert customer["properties"]["tenure"]["type"] == "number"
    assert customer["properties"]["tenure"]["minimum"] == 0
    assert {"type": "string"} in customer["properties"]["Contract"]["anyOf"]
    assert customer["additionalProperties"] is False


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_fuzzing_never_gets_a_server_error(server: ServerProcess, mode: str) -> None:
    """Schemathesis cases from the service's own OpenAPI document: valid ones are scored, invalid
    ones get a 4xx, and nothing gets a 5xx. (Driven through Hypothesis directly: schemathesis'
    lazy pytest fixture does not work with pytest 9.)"""
    from hypothesis import given
    from schemathesis.generation.modes import GenerationMode

    api = schemathesis.openapi.from_url(f"{server.base_url}/docs.json")
    seen: dict[str, set[int]] = {}

    # Enough cases to reach every operation: the document grew from 9 to 16 (events, customers, alerts).
    @given(case=api.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        response = case.call(base_url=server.base_url, timeout=60)
        if mode == "negative" and case.path == "/predict" and response.status_code == 200:
            print("negative case scored:", case.method, case.path, case.headers, case.query, case.body)
        seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if case.path in {"/predict", "/predict_batch"}:
            if mode == "positive" and isinstance(case.body, dict):  # BentoML marks the body optional
                assert response.status_code == 200, (case.body, response.text)
            elif response.status_code != 200:
                assert response.status_code in {400, 413, 415}, response.text
                assert response.json()["error"]

    run()
    if mode == "positive":
        assert {"GET /model", "GET /livez", "GET /metrics"} <= set(seen), seen
        assert 200 in seen["POST /predict"] and 200 in seen["POST /predict_batch"], seen
    else:  # operations without inputs have no invalid cases
        assert seen["POST /predict"] == {400} and 400 in seen["POST /predict_batch"], seen


# -------------------------------------------------------------------------------------- the log, under load


def test_concurrent_requests_log_each_customer_once(server: ServerProcess) -> None:
    acknowledged: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_thread(thread: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as session:
            for i in range(15):
                batch = [
                    {**c, "customer_id": f"load-{thread}-{i}-{j}"}
                    for j, c in enumerate(telco_customers(1 + i % 4 * 40, seed=i))
                ]
                if len(batch) == 1:
                    response = session.post("/predict", json={"customer": batch[0], "explain": i % 2 == 0})
                else:
                    response = session.post(
                        "/predict_batch", json={"customers": batch, "explain": i % 3 == 0}
                    )
                with lock:
                    if response.status_code == 200:
                        acknowledged.extend(c["customer_id"] for c in batch)
                    else:
                        failures.append(response.text)

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    logged = PredictionLog.open(f"sqlite:///{server.state_dir / 'predictions.db'}").read()
    loaded = logged[logged["customer_id"].str.startswith("load-")]
    assert len(loaded) == len(acknowledged) == 12 * sum(1 + i % 4 * 40 for i in range(15))
    assert sorted(loaded["customer_id"]) == sorted(acknowledged)


def test_state_dir_holds_the_log(server: ServerProcess) -> None:
    assert Path(server.state_dir / "predictions.db").is_file()
