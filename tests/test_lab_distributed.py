"""Distributed tuning: two `tune` processes on one storage share one study and one MLflow parent run,
use the study's trial budget between them, and exactly one registers the final model. The storage is
a journal file (workers on one machine or a shared disk) or the real PostgreSQL server (workers on
many machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient

from churnguard.settings import PROJECT_ROOT
from churnguard.tracking import configure_mlflow
from training.studies import WORKER_ATTR, open_storage

pytestmark = pytest.mark.slow

BUDGET = 6
# Each worker waits twice for the other: after its (slow) imports, so both open the study together,
# and again on reaching the trial loop, so both start trials together. On a loaded machine one worker
# could otherwise use the whole budget while the other still loads data or waits for the parent run.
WORKER = """
import dataclasses, json, logging, os, pathlib, sys, time
logging.basicConfig(level=logging.INFO)
from training.trials import TrialRunner
from training.tune import run_tune
storage, study, budget, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])

def wait_for(name):
    deadline = time.monotonic() + 300
    while not (gate / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)

run_trials = TrialRunner.run
def run_together(self, *args, **kwargs):
    (gate / f"at-trials-{os.getpid()}").touch()
    wait_for("trials-go")
    return run_trials(self, *args, **kwargs)
TrialRunner.run = run_together

(gate / f"ready-{os.getpid()}").touch()
wait_for("go")
result = run_tune("telco", trials=budget, timeout=None, storage=storage, study=study, seed=3)
print("RESULT " + json.dumps(dataclasses.asdict(result)))
"""


def start_worker(storage: str, study: str, gate: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, storage, study, str(BUDGET), str(gate)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(worker: subprocess.Popen) -> dict:
    stdout, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr[-3000:]
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(params=["journal", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "journal":
        yield str(tmp_path / "studies.journal")
        return
    from pg_fixtures import fresh_database

    with fresh_database("churnguard_optuna") as url:
        yield url  # plain postgresql://, as a user would pass it to --storage


def test_two_workers_share_one_study_and_register_once(
    lab_store: dict[str, str], storage: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    workers = [start_worker(storage, "shared", gate), start_worker(storage, "shared", gate)]
    for arrived, go in (("ready-*", "go"), ("at-trials-*", "trials-go")):
        deadline = time.monotonic() + 300
        while len(list(gate.glob(arrived))) < 2 and time.monotonic() < deadline:
            for worker in workers:
                if worker.poll() is not None:
                    pytest.fail(f"a worker died before {arrived}:\n{worker.stderr.read()[-3000:]}")
            time.sleep(0.1)
        (gate / go).touch()
    results = [result_of(worker) for worker in workers]

    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))  # each counted once
    # Each worker checks the budget before it starts a trial, so at most one trial per extra worker over.
    assert BUDGET <= len(finished) <= BUDGET + 1
    assert sum(r["trials_run"] for r in results) == len(finished)
    assert len({t.user_attrs[WORKER_ATTR] for t in finished}) == 2  # both did real work
    assert sum(r["finalized"] for r in results) == 1  # exactly one final model
    assert len({r["parent_run_id"] for r in results}) == 1  # one parent run per study

    parent_run_id = results[0]["parent_run_id"]
    configure_mlflow()  # an earlier test in this process may have pointed MLflow at its own store
    versions = MlflowClient().search_model_versions("name = 'churn-telco'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].tags["study"] == "shared" and versions[0].tags["run_id"] == parent_run_id
    trials = mlflow.search_runs(
        experiment_names=["churnguard-telco"], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    assert len(trials) == len(finished)
    parent = MlflowClient().get_run(parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_finished"] == len(finished)
