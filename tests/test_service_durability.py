"""Killing the server (SIGKILL, every process at once) loses no acknowledged prediction."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from model_fixtures import start_server, telco_artifact_dir, telco_rows

from churnguard.prediction_log import PredictionLog

pytestmark = pytest.mark.slow


def test_sigkill_loses_nothing_acknowledged(tmp_path) -> None:
    server = start_server(
        str(telco_artifact_dir()),
        tmp_path / "state",
        workers=2,
        env={"CHURNGUARD_SERVICE__PREDICTION_LOG__BATCH_ROWS": "30"},  # both storage paths in use
    )
    rows = telco_rows(60, seed=31)
    records = [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_thread(thread: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                size = (1, 5, 45)[i % 3]
                batch = [
                    {**records[(i + j) % 60], "customer_id": f"kill-{thread}-{i}-{j}"} for j in range(size)
                ]
                try:
                    if size == 1:
                        response = client.post("/predict", json={"customer": batch[0], "explain": False})
                    else:
                        response = client.post(
                            "/predict_batch", json={"customers": batch, "explain": i % 2 == 0}
                        )
                except httpx.HTTPError:
                    return  # the server is gone: whatever was in flight was never acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(c["customer_id"] for c in batch)
                i += 1

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    with lock:
        before_kill = len(acknowledged)
    assert len(server.tree()) >= 4  # launcher, bentoml, and two workers at least
    server.kill()  # SIGKILL to the launcher, the arbiter and both workers while requests are in flight
    stop.set()
    for thread in threads:
        thread.join()
    assert before_kill > 100, "the load did not get going"

    logged = PredictionLog.open(f"sqlite:///{tmp_path / 'state' / 'predictions.db'}").read()
    ids = logged["customer_id"]
    assert ids.is_unique
    missing = set(acknowledged) - set(ids)
    assert not missing, f"{len(missing)} acknowledged predictions were lost, e.g. {sorted(missing)[:3]}"
    # Anything logged beyond the acknowledged was in flight when the server died: at most a few requests.
    assert len(ids) - len(acknowledged) <= 6 * 45
