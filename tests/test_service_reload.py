"""Model reload with a real MLflow registry, and bearer-key auth, against the real server.

The served URI is `models:/churn-svc-test@champion`. Moving the alias to a new version switches the
running service over without a failed request; a version that breaks its contract is refused and
the old one keeps serving.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from model_fixtures import (
    ServerProcess,
    build_telco_artifact,
    register_artifact,
    start_server,
    telco_artifact_dir,
    telco_rows,
)

pytestmark = pytest.mark.slow

NAME = "churn-svc-test"
KEYS = {"CHURNGUARD_API_KEYS": "client-key-1,client-key-2", "CHURNGUARD_ADMIN_API_KEYS": "admin-key"}
CLIENT = {"Authorization": "Bearer client-key-2"}
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    register_artifact(uri, NAME, telco_artifact_dir(), alias="champion")
    return uri


@pytest.fixture(scope="module")
def server(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        **KEYS,
        "MLFLOW_TRACKING_URI": registry,
        "MLFLOW_REGISTRY_URI": registry,
        "CHURNGUARD_SERVICE__RELOAD__POLL_SECONDS": "1",
    }
    process = start_server(f"models:/{NAME}@champion", tmp_path_factory.mktemp("reload-state"), env=env)
    yield process
    process.stop()


def customer() -> dict:
    row = telco_rows(1, seed=21).iloc[0].to_dict()
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def test_bearer_keys(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        body = {"customer": customer()}
        refused = client.post("/predict", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            client.post("/predict", json=body, headers={"Authorization": "Basic client-key-1"}).status_code
            == 401
        )
        served = client.post("/predict", json=body, headers=CLIENT)
        assert served.status_code == 200 and served.json()["model_version"] == "1"
        assert client.get("/model").status_code == 401
        assert client.get("/docs.json", headers=CLIENT).status_code == 200
        for probe in ("/livez", "/readyz"):
            assert client.get(probe).status_code == 200
        assert client.get("/metrics").status_code == 401  # it names versions and traffic: a key is needed
        assert client.get("/metrics", headers=CLIENT).status_code == 200
        assert client.post("/admin/reload", headers=CLIENT).status_code == 401  # a client key is not admin
        unchanged = client.post("/admin/reload", headers=ADMIN)
        assert unchanged.status_code == 200 and unchanged.json()["status"] == "unchanged"
    assert "client-key" not in server.log_path.read_text()  # keys never reach the logs


def test_alias_move_switches_without_a_failed_request(
    server: ServerProcess, registry: str, tmp_path: Path
) -> None:
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60, headers=CLIENT) as client:
            while not stop.is_set():
                response = client.post(
                    "/predict", json={"customer": customer(), "explain": len(statuses) % 2 == 0}
                )
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        second = build_telco_artifact(tmp_path / "v2", iterations=60, depth=4, seed=1)
        assert register_artifact(registry, NAME, second, alias="champion") == "2"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not versions or versions[-1] != "2"):
            time.sleep(0.2)
        time.sleep(1.0)  # keep traffic on the new version for a moment
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert versions[0] == "1" and versions[-1] == "2"
    switch = versions.index("2")
    assert set(versions[switch:]) == {"2"}  # one worker: once switched, never back
    with httpx.Client(base_url=server.base_url, timeout=60, headers=CLIENT) as client:
        meta = client.get("/model").json()
        assert meta["model_version"] == "2" and meta["reload"]["alias"] == f"{NAME}@champion"


def test_a_version_that_breaks_its_contract_is_refused(
    server: ServerProcess, registry: str, tmp_path: Path
) -> None:
    broken = shutil.copytree(telco_artifact_dir(), tmp_path / "broken")
    (broken / "model.cbm").write_bytes(b"not a CatBoost model")
    version = register_artifact(registry, NAME, broken, alias="champion")
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        outcome = client.post("/admin/reload", headers=ADMIN)
        assert outcome.status_code == 409, outcome.text
        assert outcome.json()["status"] == "refused" and outcome.json()["model_version"] == "2"
        assert f"version {version} of {NAME} cannot be served" in outcome.json()["message"]
        assert "CatBoost cannot load it" in outcome.json()["message"]
        time.sleep(2.5)  # a few polls: still refused, still serving
        served = client.post("/predict", json={"customer": customer()}, headers=CLIENT)
        assert served.status_code == 200 and served.json()["model_version"] == "2"
        meta = client.get("/model", headers=CLIENT).json()
        assert meta["model_version"] == "2" and meta["reload"]["refused_versions"] == [version]
