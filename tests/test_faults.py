"""Faults, against the real server (2 workers) and a real MLflow registry (SQLite store).

One server for the module, started while its registry is unavailable, so it comes up on the model
this host served last. Then, in order: a short 32-client load from a second process; the registry
unavailable during reloads; a corrupt, an incompatible and a pickled version refused; the prediction
log locked and its disk full; a worker killed mid-load; SIGTERM during load (which ends the server).
A registry that is down is made real two ways: a SQLite store locked by another process (MLflow
answers TEMPORARILY_UNAVAILABLE), and an HTTP tracking URI with nothing listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from model_fixtures import (
    ServerProcess,
    build_telco_artifact,
    free_port,
    register_artifact,
    start_server,
    telco_artifact_dir,
    telco_rows,
)

from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog
from churnguard.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

NAME = "churn-faults"
URI = f"models:/{NAME}@champion"
CLIENT_KEY = "faults-client-key"
ADMIN_KEY = "faults-admin-key"
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LOG_DISK_BYTES = 256 * 1024 * 1024  # room for the short load (about 1 KB a customer)


def records(count: int, seed: int = 0, prefix: str = "c") -> list[dict]:
    rows = telco_rows(count, seed=seed)
    return [
        {
            **{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()},
            "customer_id": f"{prefix}-{i}",
        }
        for i, row in enumerate(rows.to_dict("records"))
    ]


@contextlib.contextmanager
def locked(database: Path, mode: str = "EXCLUSIVE") -> Iterator[None]:
    """Another process's lock on a SQLite file: EXCLUSIVE stops readers of a rollback-journal store
    (MLflow's), IMMEDIATE stops other writers of a WAL file (the prediction log)."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    connection.execute(f"BEGIN {mode}")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


# ------------------------------------------------------------------- the registry unreachable at start


def test_unreachable_registry_at_start_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from service.run import EXIT_REFUSED, prepare_environment, serve

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", dead)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the default backs off for minutes
    monkeypatch.delenv("CHURNGUARD_API_KEYS", raising=False)
    with pytest.raises(SystemExit, match=rf"cannot fetch model {URI} from the registry at {dead}") as refusal:
        prepare_environment(URI, "127.0.0.1", 3999, 1, False)
    assert "serve_cached" in str(refusal.value)  # says how to serve the last model instead
    assert serve(URI, "127.0.0.1", 3999, 1, False) == EXIT_REFUSED
    monkeypatch.setenv("CHURNGUARD_SERVICE__MODEL__ON_REGISTRY_ERROR", "serve_cached")
    with pytest.raises(SystemExit, match="no cached copy of models:/churn-faults@champion on this host"):
        prepare_environment(URI, "127.0.0.1", 3999, 1, False)


def test_unreachable_registry_serves_the_cached_model_when_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from service.run import prepare_environment

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_artifact(registry, NAME, telco_artifact_dir(), alias="champion")
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
    monkeypatch.setenv("CHURNGUARD_SERVICE__MODEL__ON_REGISTRY_ERROR", "serve_cached")
    _, _, _, fetched = prepare_environment(URI, "127.0.0.1", 3999, 1, False)  # reachable: fetched, remembered
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", dead)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env, _, _, cached = prepare_environment(URI, "127.0.0.1", 3999, 1, False)
    assert (cached.version, cached.local_dir) == ("1", fetched.local_dir)
    assert env["CHURNGUARD_MODEL_DIR"] == str(fetched.local_dir) and env["CHURNGUARD_MODEL_VERSION"] == "1"
    assert "serving the cached version 1" in caplog.text
    # A definitive answer is not papered over: an alias the registry says does not exist still fails.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
    with pytest.raises(SystemExit, match="cannot fetch model models:/churn-faults@retired"):
        prepare_environment(f"models:/{NAME}@retired", "127.0.0.1", 3999, 1, False)


# ----------------------------------------------------------------------------- the module's server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("faults-registry") / "mlflow.db"
    register_artifact(f"sqlite:///{database}", NAME, telco_artifact_dir(), alias="champion")
    return database


@pytest.fixture(scope="module")
def log_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bool]]:
    """A small filesystem of its own for the prediction log (a tmpfs), so that it can really fill up;
    a plain folder where mounting is not allowed (the disk-full test then skips)."""
    folder = tmp_path_factory.mktemp("faults-log-disk")
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={LOG_DISK_BYTES}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    yield folder, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def server(
    registry: Path, log_disk: tuple[Path, bool], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    state = tmp_path_factory.mktemp("faults-state")
    uri = f"sqlite:///{registry}"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "CHURNGUARD_API_KEYS": CLIENT_KEY,
        "CHURNGUARD_ADMIN_API_KEYS": ADMIN_KEY,
        "CHURNGUARD_SERVICE__RELOAD__POLL_SECONDS": "1",
        "CHURNGUARD_SERVICE__MODEL__ON_REGISTRY_ERROR": "serve_cached",
        # a locked log fails a request after 2 s (30 s by default)
        "CHURNGUARD_SERVICE__PREDICTION_LOG__URL": f"{log_url(log_disk)}?lock_timeout=2",
    }
    # This host served version 1 before (the launcher remembers what it fetched) ...
    fetch = "from service.run import prepare_environment; prepare_environment(None, None, None, None, None)"
    subprocess.run(
        [sys.executable, "-c", fetch],
        env={**os.environ, **env, "CHURNGUARD_STATE_DIR": str(state), "CHURNGUARD_MODEL_URI": URI},
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    # ... and the registry is unavailable when it starts again.
    with locked(registry):
        process = start_server(URI, state, env=env, workers=2, wait=False)
        deadline = time.monotonic() + 60
        while (
            "serving the cached version" not in process.log_path.read_text() and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def log_url(log_disk: tuple[Path, bool]) -> str:
    return f"sqlite:///{log_disk[0] / 'predictions.db'}"


def prediction_log(server: ServerProcess, log_disk: tuple[Path, bool]) -> PredictionLog:
    return PredictionLog.open(log_url(log_disk))


def logged_ids(server: ServerProcess, log_disk: tuple[Path, bool], prefix: str) -> list[str]:
    log = prediction_log(server, log_disk)
    try:
        ids = log.read()["customer_id"]
    finally:
        log.close()
    return [i for i in ids if i.startswith(prefix)]


def predict(client: httpx.Client, customer: dict) -> httpx.Response:
    return client.post("/predict", json={"customer": customer, "explain": False}, headers=CLIENT)


def test_started_on_the_cached_model_while_the_registry_was_unavailable(server: ServerProcess) -> None:
    text = server.log_path.read_text()
    assert "cannot fetch model models:/churn-faults@champion from the registry" in text
    assert "serving the cached version 1" in text and "database is locked" in text
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = predict(client, records(1)[0])
        assert response.status_code == 200 and response.json()["model_version"] == "1"


# ---------------------------------------------------------------------------------------------- load


def test_short_load_from_a_second_process_no_errors_and_a_complete_log(
    server: ServerProcess, log_disk: tuple[Path, bool], tmp_path: Path
) -> None:
    """The 5-minute scenario of benchmarks/load.py, for 15 seconds: 32 locust clients, mixed calls."""
    summary_path = tmp_path / "load.json"
    load = [
        str(PROJECT_ROOT / "benchmarks" / "load.py"),
        "--url",
        server.base_url,
        "--log",
        log_url(log_disk),
    ]
    options = ["--users", "32", "--duration", "15", "--api-key", CLIENT_KEY, "--json", str(summary_path)]
    run = subprocess.run(
        [sys.executable, *load, *options],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert summary_path.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["requests"] > 100 and set(summary["per_call"]) >= {"single, reasons", "csv upload 100"}
    assert summary["log_complete"] and summary["log_entries"] == summary["customers_scored"] > 0, summary
    assert run.returncode == 0, run.stdout[-2000:]


# ------------------------------------------------------------------------- the registry during reload


def test_registry_unavailable_during_reload_keeps_the_old_model(
    server: ServerProcess, registry: Path, tmp_path: Path
) -> None:
    statuses: list[int] = []
    # Per client: its keep-alive connection stays with one worker, and the workers switch at their own
    # polls, so the merged order could end on a slow answer from a worker that had not polled yet.
    versions: list[list[str]] = [[] for _ in range(3)]
    stop = threading.Event()

    def traffic(seen: list[str]) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            customer = records(1, seed=3)[0]
            while not stop.is_set():
                response = predict(client, customer)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    seen.append(response.json()["model_version"])

    threads = [threading.Thread(target=traffic, args=(seen,)) for seen in versions]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client, locked(registry):
            time.sleep(3)  # polls fail meanwhile
            outcome = client.post("/admin/reload", headers=ADMIN)  # so does an explicit reload
            assert outcome.status_code == 409, outcome.text
            assert outcome.json()["model_version"] == "1"
            assert "registry lookup failed" in outcome.json()["message"]
            meta = client.get("/model", headers=CLIENT).json()
            assert meta["model_version"] == "1" and "registry lookup failed" in meta["reload"]["last_error"]
            assert meta["reload"]["refused_versions"] == []  # not the model's fault: nothing refused
        # The registry is back: a new champion is picked up by both workers.
        second = build_telco_artifact(tmp_path / "v2", iterations=60, depth=4, seed=1)
        assert register_artifact(f"sqlite:///{registry}", NAME, second, alias="champion") == "2"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(seen[-20:].count("2") < 20 for seen in versions):
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    for seen in versions:  # every client started on version 1 and ended on version 2
        assert seen[0] == "1" and seen[-20:] == ["2"] * 20, seen[-25:]


# ------------------------------------------------------------------------------- bad model versions


class _Trap:
    """A pickle that, if anything ever unpickled it, would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def register_pickled_model(registry: Path, folder: Path, marker: Path) -> str:
    """An MLflow pyfunc model the usual pickled way (python_model.pkl), registered as a new version."""
    import mlflow
    from mlflow import MlflowClient

    folder.mkdir(parents=True)
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Trap(marker)))
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n    python_version: 3.11.7\n"
    )
    uri = f"sqlite:///{registry}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("service-tests")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    version = client.create_model_version(NAME, f"{run.info.artifact_uri}/model", run.info.run_id).version
    client.set_registered_model_alias(NAME, "champion", str(version))
    return str(version)


def test_corrupt_incompatible_and_pickled_versions_are_refused(
    server: ServerProcess, registry: Path, tmp_path: Path
) -> None:
    corrupt = shutil.copytree(telco_artifact_dir(), tmp_path / "corrupt")
    (corrupt / "reference.parquet").write_bytes(b"PAR1 truncated")
    incompatible = shutil.copytree(telco_artifact_dir(), tmp_path / "incompatible")
    contract = json.loads((incompatible / "contract.json").read_text())
    contract["artifact_version"] = 99
    (incompatible / "contract.json").write_text(json.dumps(contract))
    marker = tmp_path / "unpickled"
    cases = [
        (
            lambda: register_artifact(f"sqlite:///{registry}", NAME, corrupt, alias="champion"),
            "Parquet magic bytes not found",
        ),
        (
            lambda: register_artifact(f"sqlite:///{registry}", NAME, incompatible, alias="champion"),
            "artifact version 99 is not supported",
        ),
        (
            lambda: register_pickled_model(registry, tmp_path / "pickled", marker),
            "not a churnguard model artifact",
        ),
    ]
    refused: list[str] = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for register, reason in cases:
            version = register()
            refused.append(version)
            outcome = client.post("/admin/reload", headers=ADMIN)
            assert outcome.status_code == 409, outcome.text
            assert outcome.json()["model_version"] == "2"
            assert f"version {version} of {NAME} cannot be served" in outcome.json()["message"]
            assert reason in outcome.json()["message"], outcome.json()["message"]
        time.sleep(2.5)  # both workers poll meanwhile and refuse the same version
        for customer in records(10, seed=4):
            response = predict(client, customer)
            assert response.status_code == 200 and response.json()["model_version"] == "2"
        meta = client.get("/model", headers=CLIENT).json()
        assert meta["model_version"] == "2" and refused[-1] in meta["reload"]["refused_versions"]
    assert not marker.exists(), "the registry's pickle was loaded"


# ------------------------------------------------------------------------------- the prediction log


def _drive(server: ServerProcess, prefix: str, seconds: float, outcomes: dict[str, list]) -> None:
    """Single and batch requests for `seconds`; records acknowledged ids and refusals."""
    batch = records(15, seed=6)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            customers = [
                {**c, "customer_id": f"{prefix}-{i}-{j}"} for j, c in enumerate(batch[: 1 + i % 2 * 14])
            ]
            if len(customers) == 1:
                response = predict(client, customers[0])
            else:
                response = client.post("/predict_batch", json={"customers": customers}, headers=CLIENT)
            if response.status_code == 200:
                outcomes["acknowledged"].extend(c["customer_id"] for c in customers)
            else:
                outcomes["refused"].append((response.status_code, response.json()["error"]))
            i += 1


def test_locked_prediction_log_fails_requests_clearly_and_recovers(
    server: ServerProcess, log_disk: tuple[Path, bool]
) -> None:
    outcomes: dict[str, list] = {"acknowledged": [], "refused": []}
    with locked(log_disk[0] / "predictions.db", "IMMEDIATE"):  # another writer holds the log
        started = time.monotonic()
        drivers = [
            threading.Thread(target=_drive, args=(server, f"locked{n}", 3.0, outcomes)) for n in range(3)
        ]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
        assert time.monotonic() - started < 15  # each request waits lock_timeout (2 s), no longer
    assert outcomes["acknowledged"] == []
    assert outcomes["refused"] and {status for status, _ in outcomes["refused"]} == {503}
    assert "the prediction log is unavailable; nothing was scored" in outcomes["refused"][0][1]
    assert "prediction log write failed" in server.log_path.read_text()
    _drive(server, "unlocked", 2.0, outcomes)  # the lock is gone: served again
    assert outcomes["acknowledged"]
    assert sorted(logged_ids(server, log_disk, "locked")) == []  # nothing refused was logged
    assert sorted(logged_ids(server, log_disk, "unlocked")) == sorted(outcomes["acknowledged"])


def test_full_prediction_log_disk_fails_requests_clearly_and_recovers(
    server: ServerProcess, log_disk: tuple[Path, bool]
) -> None:
    folder, mounted = log_disk
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root); the locked-log test covers the 503 path")
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte, unbuffered
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * size)
    finally:
        os.close(descriptor)
    assert shutil.disk_usage(folder).free < 64 * 1024
    outcomes: dict[str, list] = {"acknowledged": [], "refused": []}
    try:
        _drive(server, "full", 4.0, outcomes)
        assert outcomes["refused"], "nothing was refused on a full disk"
        assert {status for status, _ in outcomes["refused"]} == {503}
        assert "the prediction log is unavailable; nothing was scored" in outcomes["refused"][-1][1]
        assert "database or disk is full" in server.log_path.read_text()
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.get("/readyz").status_code == 200  # the service itself is fine
    finally:
        filler.unlink()
    acknowledged_while_full = list(outcomes["acknowledged"])  # pages SQLite had free already
    outcomes["acknowledged"].clear()
    _drive(server, "freed", 2.0, outcomes)
    assert outcomes["acknowledged"] and len(outcomes["refused"]) >= 1
    assert sorted(logged_ids(server, log_disk, "full")) == sorted(acknowledged_while_full)
    assert sorted(logged_ids(server, log_disk, "freed")) == sorted(outcomes["acknowledged"])


# ------------------------------------------------------------------------------- a worker killed


def worker_pids(server: ServerProcess) -> list[int]:
    pids = []
    for pid in server.tree():
        with contextlib.suppress(psutil.NoSuchProcess):
            if "_bentoml_impl.worker.service" in " ".join(psutil.Process(pid).cmdline()):
                pids.append(pid)
    return pids


def test_worker_killed_mid_load_is_replaced_and_loses_nothing_acknowledged(
    server: ServerProcess, log_disk: tuple[Path, bool]
) -> None:
    acknowledged: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    batch = records(25, seed=7)

    def client_thread(thread: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60, headers=CLIENT) as client:
            i = 0
            while not stop.is_set():
                customers = [
                    {**c, "customer_id": f"kill1-{thread}-{i}-{j}"}
                    for j, c in enumerate(batch[: 1 + i % 3 * 12])
                ]
                try:
                    if len(customers) == 1:
                        response = client.post("/predict", json={"customer": customers[0]})
                    else:
                        response = client.post("/predict_batch", json={"customers": customers})
                except httpx.HTTPError as exc:  # in flight on the killed worker: never acknowledged
                    with lock:
                        failures.append(repr(exc))
                    i += 1
                    continue
                with lock:
                    if response.status_code == 200:
                        acknowledged.extend(c["customer_id"] for c in customers)
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                i += 1

    before = worker_pids(server)
    assert len(before) == 2
    initialized = server.log_path.read_text().count("Service churnguard initialized")
    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    os.kill(before[0], signal.SIGKILL)
    killed_at = time.monotonic()
    deadline = killed_at + 120
    while time.monotonic() < deadline:  # the arbiter starts a replacement, which loads the model
        if server.log_path.read_text().count("Service churnguard initialized") > initialized:
            break
        time.sleep(0.3)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    after = worker_pids(server)
    assert len(after) == 2 and before[0] not in after and before[1] in after, (before, after)
    assert all("HTTPError" in f or "Error(" in f for f in failures), failures[:5]  # no 5xx, only resets
    # After the restart every request succeeds, on both workers.
    with httpx.Client(base_url=server.base_url, timeout=60, headers=CLIENT) as client:
        for i, customer in enumerate(records(40, seed=8, prefix="kill2")):
            response = client.post("/predict", json={"customer": customer, "explain": i % 2 == 0})
            assert response.status_code == 200, response.text
            acknowledged.append(customer["customer_id"])
    logged = set(logged_ids(server, log_disk, "kill"))
    missing = set(acknowledged) - logged
    assert not missing, f"{len(missing)} acknowledged predictions were lost, e.g. {sorted(missing)[:3]}"
    assert len(acknowledged) > 50


# -------------------------------------------------------------------------------- SIGTERM under load


def test_sigterm_during_load_finishes_in_flight_requests_and_exits_cleanly(
    server: ServerProcess, log_disk: tuple[Path, bool]
) -> None:
    big = records(3000, seed=9)
    results: dict[str, object] = {}

    def big_request(n: int) -> None:
        customers = [{**c, "customer_id": f"term-{n}-{j}"} for j, c in enumerate(big)]
        try:
            response = httpx.post(
                f"{server.base_url}/predict_batch", json={"customers": customers}, headers=CLIENT, timeout=120
            )
            results[f"term-{n}"] = response.status_code
        except httpx.HTTPError as exc:
            results[f"term-{n}"] = repr(exc)

    threads = [threading.Thread(target=big_request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # bodies sent, scoring under way
    pids = server.tree()
    os.kill(server.process.pid, signal.SIGTERM)  # what a container runtime sends (the launcher forwards it)
    for thread in threads:
        thread.join()
    code = server.process.wait(timeout=60)
    assert results == {f"term-{n}": 200 for n in range(4)}, results  # every in-flight request finished
    assert code == 0, server.log_tail()
    text = server.log_path.read_text()
    assert text.count("Completed cleanup hook: shutdown") == 2  # both workers closed the log and poller
    deadline = time.monotonic() + 20
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in _processes(pids)):
        assert time.monotonic() < deadline, "processes left behind"
        time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/livez", timeout=5)
    logged = logged_ids(server, log_disk, "term-")
    assert len(logged) == len(set(logged)) == 4 * 3000


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def test_the_log_api_reports_disk_and_lock_errors_without_half_writes(tmp_path: Path) -> None:
    """In-process: a failed append raises (so the service answers 503), writes nothing, and the log
    works again once the cause is gone (SQLite's own rollback is not masked by ours)."""
    predictor = Predictor.load(telco_artifact_dir(), "1")
    path = tmp_path / "log.db"
    log = PredictionLog.open(f"sqlite:///{path}?lock_timeout=0.2", batch_rows=50)
    frame = telco_rows(20, seed=2)
    with locked(path, "IMMEDIATE"):
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            log.append(predictor.score_frame(frame), "while-locked")
        assert time.monotonic() - started < 5
    assert log.append(predictor.score_frame(frame), "after") == 20
    assert log.count() == 20 and set(log.read()["request_id"]) == {"after"}
    with pytest.raises(ValueError, match="unknown option"):
        PredictionLog.open(f"sqlite:///{path}?timeout=3")
    log.close()
