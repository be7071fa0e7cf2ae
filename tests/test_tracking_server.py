"""The lab, the service and the monitors against a real `mlflow server` over HTTP.

The server keeps runs and the registry in a fresh PostgreSQL database and proxies artifacts to a
local folder (`--artifacts-destination`), as a team server does with an object store. The Optuna
study lives in PostgreSQL too. `churnguard tune`, `promote`, `serve` (with its hot reload) and
`drift` only get `MLFLOW_TRACKING_URI=http://...`: nothing of the store is on their disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
import pytest
from conftest import LAB_FAST_SEARCH
from live_fixtures import run_cli
from model_fixtures import ServerProcess, free_port, start_server, telco_rows
from pg_fixtures import fresh_database

from churnguard.tracking import CHALLENGER, CHAMPION, configure_mlflow
from training.studies import open_storage, sqlalchemy_url

pytestmark = pytest.mark.slow

MODEL = "churn-telco"
STUDY = "over-http"
TRIALS = 2
# As tests/test_lab_promote.py: two trees of depth one, clearly worse than the tuned model.
WEAK_SEARCH = {
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__LOW": "2",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__HIGH": "2",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__LOW": "1",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HIGH": "1",
    "CHURNGUARD_TRAINING__SEARCH__PRUNING__ENABLED": "false",
}


@dataclass
class Lab:
    url: str  # the tracking server
    artifacts: Path  # its --artifacts-destination
    studies: str  # the Optuna storage, plain postgresql://
    state: Path
    env: dict[str, str]


def start_tracking_server(backend: str, artifacts: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        sqlalchemy_url(backend),  # psycopg 3, the locked driver
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log_path.open("w") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"mlflow server not up after 120 s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("tracking-server")
    with (
        fresh_database("churnguard_mlflow") as backend,
        fresh_database("churnguard_studies") as studies,
        pytest.MonkeyPatch.context() as patch,
    ):
        process, url = start_tracking_server(backend, folder / "artifacts", folder / "mlflow-server.log")
        try:
            env = {
                "MLFLOW_TRACKING_URI": url,
                "CHURNGUARD_STATE_DIR": str(folder / "state"),
                "CHURNGUARD_SERVICE__RELOAD__POLL_SECONDS": "1",
                **LAB_FAST_SEARCH,
            }
            for name, value in env.items():
                patch.setenv(name, value)
            # Nothing local: the registry is the server's, artifacts go where the server says.
            patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
            patch.delenv("CHURNGUARD_ARTIFACT_ROOT", raising=False)
            configure_mlflow()
            yield Lab(url, folder / "artifacts", studies, folder / "state", env)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            configure_mlflow()


def cli(lab: Lab, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # run_cli passes os.environ, which the fixture patched: the child has no local registry either.
    return run_cli(list(args), lab.env, timeout=timeout)


@pytest.fixture(scope="module")
def tuned(lab: Lab) -> subprocess.CompletedProcess:
    done = cli(lab, "tune", "--dataset", "telco", "--trials", str(TRIALS), "--storage", lab.studies,
               "--study", STUDY, "--seed", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_tune_tracks_and_registers_through_the_server(lab: Lab, tuned: subprocess.CompletedProcess) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, CHALLENGER)
    assert str(version.version) == "1" and version.tags["study"] == STUDY
    experiment = client.get_experiment_by_name("churnguard-telco")
    # The server chose the artifact location (proxied), and the files landed in its destination.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert not (lab.state / "mlartifacts").exists()
    stored = {path.name for path in lab.artifacts.rglob("*") if path.is_file()}
    assert {"model.cbm", "contract.json", "roc.png"} <= stored, sorted(stored)[:20]

    parent_run_id = version.tags["run_id"]
    trials = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    study = optuna.load_study(study_name=STUDY, storage=open_storage(lab.studies))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == len(trials) == TRIALS  # the PostgreSQL study and the server agree


def test_promote_moves_the_champion_alias_on_the_server(lab: Lab, tuned: subprocess.CompletedProcess) -> None:
    from mlflow import MlflowClient

    done = cli(lab, "promote", "--dataset", "telco")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "promoted" in done.stdout and "first registered model" in done.stdout
    aliases = MlflowClient().get_registered_model(MODEL).aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {CHAMPION: "1"}


@pytest.fixture(scope="module")
def server(lab: Lab, tuned: subprocess.CompletedProcess) -> Iterator[ServerProcess]:
    process = start_server(f"models:/{MODEL}@{CHAMPION}", lab.state / "serve", env=lab.env)
    yield process
    process.stop()


def customers(count: int) -> list[dict]:
    rows = telco_rows(count, seed=5)
    return [{k: (None if v != v else v) for k, v in row.items()} for row in rows.to_dict("records")]


def test_serve_loads_from_the_server_and_follows_the_alias(
    lab: Lab, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from training.promote import run_promote
    from training.tune import run_tune

    body = {"customer": customers(1)[0]}
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        first = client.post("/predict", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["model_version"] == "1"

        # A second, weak model through the same server: the gate refuses it ...
        for name, value in WEAK_SEARCH.items():
            monkeypatch.setenv(name, value)
        weak = run_tune("telco", trials=1, timeout=None, storage=lab.studies, study="weak", seed=1)
        assert weak.model_version == "2"
        refused = run_promote(model_name=MODEL, dataset=None)
        assert not refused.promoted and refused.champion_version == "1"
        assert client.post("/predict", json=body).json()["model_version"] == "1"

        # ... and an operator moves the alias anyway: the running service follows within its poll.
        MlflowClient().set_registered_model_alias(MODEL, CHAMPION, "2")
        deadline = time.monotonic() + 60
        versions = []
        while time.monotonic() < deadline:
            answer = client.post("/predict", json=body)
            assert answer.status_code == 200, answer.text
            versions.append(answer.json()["model_version"])
            if versions[-1] == "2":
                break
            time.sleep(0.3)
        assert versions[-1] == "2", server.log_tail()
        assert client.get("/model").json()["reload"]["alias"] == f"{MODEL}@{CHAMPION}"


def test_drift_reads_the_reference_and_logs_through_the_server(
    lab: Lab, tuned: subprocess.CompletedProcess, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    current = tmp_path / "current.parquet"
    telco_rows(800, seed=9).to_parquet(current)
    done = cli(lab, "drift", "--model", f"models:/{MODEL}/1", "--current", str(current),
               "--out", str(tmp_path / "drift"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert (tmp_path / "drift").is_dir() and list((tmp_path / "drift").rglob("*.html"))
    run = MlflowClient().get_run(MlflowClient().get_model_version(MODEL, "1").tags["run_id"])
    assert any(key.startswith("drift.") for key in run.data.metrics), sorted(run.data.metrics)
    logged = {path.name for path in lab.artifacts.rglob("*.html")}
    assert logged, "the drift report should be uploaded to the server's artifact store"
