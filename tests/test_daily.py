"""`churnguard daily`: every active customer scored from the event store as of a day, idempotent and
resumable, and equal to scoring the offline table's rows of that day."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from live_fixtures import LiveWorld, build_live_world, run_cli

from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN
from churnguard.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorld]:
    with pytest.MonkeyPatch.context() as patch:
        state = tmp_path_factory.mktemp("daily-state")
        patch.setenv("CHURNGUARD_STATE_DIR", str(state))
        yield build_live_world(state)


def daily_args(world: LiveWorld, day: str, out: Path, log: Path, *extra: str) -> list[str]:
    return [
        "daily", "--dataset", "crm", "--as-of", day, "--model", str(world.model_dir),
        "--out", str(out), "--log", f"sqlite:///{log}", *extra,
    ]  # fmt: skip


def test_daily_pass_scores_the_active_customers_like_the_offline_table(
    world: LiveWorld, tmp_path: Path
) -> None:
    day = world.table.frame[OBSERVATION_COLUMN].max()
    out, log = tmp_path / "daily", tmp_path / "log.db"
    first = run_cli(daily_args(world, f"{day:%Y-%m-%d}", out, log), world.environment())
    assert first.returncode == 0, first.stderr[-3000:]
    snapshot_path = out / "churn-crm" / f"{day:%Y-%m-%d}.parquet"
    snapshot = pd.read_parquet(snapshot_path)
    offline = world.table.frame[world.table.frame[OBSERVATION_COLUMN] == day]
    # The same population as the training table counts on that day, and the same scores.
    assert sorted(snapshot[ID_COLUMN]) == sorted(offline[ID_COLUMN])
    expected = (
        Predictor.load(world.model_dir, "1")
        .score_frame(offline[[ID_COLUMN, *world.table.schema.names]].reset_index(drop=True))
        .to_frame()
    )
    merged = snapshot.merge(expected, on=ID_COLUMN, suffixes=("", "_offline"))
    assert np.array_equal(merged["churn_probability"], merged["churn_probability_offline"])
    assert (merged["alert_tier"] == merged["alert_tier_offline"]).all()
    assert (merged["reasons"] == merged["reasons_offline"]).all()
    assert "customers scored" in first.stdout and "tiers:" in first.stdout

    prediction_log = PredictionLog.open(f"sqlite:///{log}")
    logged = prediction_log.count()
    assert logged == len(snapshot)
    second = run_cli(daily_args(world, f"{day:%Y-%m-%d}", out, log), world.environment())
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already done" in second.stdout
    assert prediction_log.count() == logged  # not logged twice
    pd.testing.assert_frame_equal(pd.read_parquet(snapshot_path), snapshot)
    prediction_log.close()


def test_a_killed_daily_pass_finishes_when_run_again(world: LiveWorld, tmp_path: Path) -> None:
    day = f"{world.table.frame[OBSERVATION_COLUMN].max():%Y-%m-%d}"
    reference = run_cli(
        # The same chunks: CatBoost's sums differ in the last bits between batch sizes (threads).
        daily_args(
            world,
            day,
            tmp_path / "reference",
            tmp_path / "reference.db",
            "--no-explain",
            "--chunk-customers",
            "10",
        ),
        world.environment(),
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    out, log = tmp_path / "daily", tmp_path / "log.db"
    args = daily_args(world, day, out, log, "--no-explain", "--chunk-customers", "10")
    process = subprocess.Popen(
        [sys.executable, "-m", "churnguard.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **world.environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = out / "churn-crm" / f"{day}.parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert done_before >= 3 and not (out / "churn-crm" / f"{day}.parquet").exists(), "killed after finishing"

    again = run_cli(args, world.environment())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stdout
    snapshot = pd.read_parquet(out / "churn-crm" / f"{day}.parquet").sort_values(ID_COLUMN)
    expected = pd.read_parquet(tmp_path / "reference" / "churn-crm" / f"{day}.parquet").sort_values(ID_COLUMN)
    assert snapshot[ID_COLUMN].tolist() == expected[ID_COLUMN].tolist()
    assert np.array_equal(snapshot["churn_probability"], expected["churn_probability"])
    logged = PredictionLog.open(f"sqlite:///{log}").read()
    assert len(logged) == len(snapshot) and logged[ID_COLUMN].is_unique  # each customer logged once


def test_daily_pass_refuses_a_time_of_day_and_a_snapshot_model(world: LiveWorld, tmp_path: Path) -> None:
    from model_fixtures import telco_artifact_dir

    timed = run_cli(
        daily_args(world, "2025-09-01T10:00:00", tmp_path, tmp_path / "l.db"), world.environment()
    )
    assert timed.returncode == 2 and "give a date" in timed.stderr
    snapshot_model = run_cli(
        [
            "daily",
            "--dataset",
            "crm",
            "--as-of",
            "2025-09-01",
            "--model",
            str(telco_artifact_dir()),
            "--no-log",
        ],
        world.environment(),
    )
    assert snapshot_model.returncode == 2 and "no event features" in snapshot_model.stderr
