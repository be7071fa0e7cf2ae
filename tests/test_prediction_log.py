"""The prediction log: durable appends, one row per scored customer on read, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog, read_predictions


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "3")


def test_rows_and_batch_records_read_back_one_row_per_customer(tmp_path, predictor: Predictor) -> None:
    log = PredictionLog.open(f"sqlite:///{tmp_path / 'log.db'}", batch_rows=50)
    rows = telco_rows(130, seed=8)
    single = predictor.score_record({**rows.iloc[0].to_dict(), "TotalCharges": None})
    small = predictor.score_frame(rows.iloc[1:30])  # below batch_rows: one row per customer
    large = predictor.score_frame(rows.iloc[30:130], explain=False)  # a columnar batch record
    assert log.append(single, "one") == 1
    assert log.append(small, "small") == 29
    assert log.append(large, "large") == 100
    sql = sqlite3.connect(tmp_path / "log.db")
    assert sql.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 30
    assert sql.execute("SELECT customers FROM prediction_batches").fetchall() == [(100,)]
    assert sql.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    frame = log.read()
    assert len(frame) == 130 == log.count()
    assert frame["customer_id"].tolist() == rows["customer_id"].tolist()
    assert frame["request_id"].tolist() == ["one"] + ["small"] * 29 + ["large"] * 100
    assert (frame["model_version"] == "3").all()
    assert str(frame["logged_at"].dtype) == "datetime64[ns, UTC]"
    np.testing.assert_allclose(frame["churn_probability"][1:30], small.probability)
    np.testing.assert_allclose(frame["churn_probability"][30:], large.probability)
    assert frame["health_score"][30:].tolist() == large.health.tolist()
    assert frame["alert_tier"][1:30].tolist() == small.tier.tolist()
    # Inputs come back as one column per feature, as scored; missing stays missing.
    assert pd.isna(frame["TotalCharges"][0])
    assert frame["Contract"].tolist() == rows["Contract"].tolist()
    np.testing.assert_allclose(frame["MonthlyCharges"], rows["MonthlyCharges"])
    reasons = json.loads(frame["reasons"][5])
    assert reasons == small.reasons[4]
    assert json.loads(frame["group_scores"][5]) == dict(
        zip(small.group_names, small.group_scores[4].tolist(), strict=True)
    )
    assert frame["reasons"][30:].isna().all()  # explain=false logs no reasons


def test_since_filters_and_compact_keeps_every_customer(tmp_path, predictor: Predictor) -> None:
    log = PredictionLog.open(str(tmp_path / "log.db"), batch_rows=10)
    rows = telco_rows(40, seed=9)
    log.append(predictor.score_frame(rows.head(25)), "early")
    cut = datetime.now(UTC)
    log.append(predictor.score_frame(rows.tail(15)), "late")
    assert len(log.read(since=cut)) == 15
    assert len(log.read(since=cut.replace(tzinfo=None))) == 15  # naive means UTC
    assert len(log.read(since=cut + timedelta(hours=1))) == 0
    before = log.read()
    assert log.compact() == 40
    sql = sqlite3.connect(tmp_path / "log.db")
    assert sql.execute("SELECT COUNT(*) FROM prediction_batches").fetchone()[0] == 0
    assert sql.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 40
    after = log.read()
    pd.testing.assert_frame_equal(after[before.columns], before, check_dtype=False)


def test_read_predictions_uses_the_environment(tmp_path, monkeypatch, predictor: Predictor) -> None:
    path = tmp_path / "elsewhere.db"
    monkeypatch.setenv("CHURNGUARD_PREDICTION_LOG", f"sqlite:///{path}")
    log = PredictionLog.open()
    log.append(predictor.score_frame(telco_rows(3)), "r")
    log.close()
    assert read_predictions()["customer_id"].tolist() == telco_rows(3)["customer_id"].tolist()


def _write_from_process(path: str, worker: int, requests: int) -> None:
    predictor = Predictor.load(telco_artifact_dir(), "3")
    log = PredictionLog.open(path, batch_rows=5)
    rows = telco_rows(60, seed=worker)
    for i in range(requests):
        part = rows.iloc[(i * 3) % 57 : (i * 3) % 57 + 1 + i % 7].assign(
            customer_id=lambda f, i=i: f"w{worker}-r{i}-" + f.customer_id
        )
        log.append(predictor.score_frame(part, explain=False), f"w{worker}-{i}")
    log.close()


def test_concurrent_processes_and_threads_lose_nothing(tmp_path, predictor: Predictor) -> None:
    path = str(tmp_path / "log.db")
    PredictionLog.open(path).close()
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_from_process, args=(path, worker, 30)) for worker in range(3)]
    for process in processes:
        process.start()
    log = PredictionLog.open(path, batch_rows=5)
    rows = telco_rows(20, seed=99)

    def write_from_thread(thread: int) -> None:
        for i in range(20):
            single = rows.iloc[[i]].assign(customer_id=f"t{thread}-{i}")
            log.append(predictor.score_frame(single, explain=False), f"t{thread}-{i}")

    threads = [threading.Thread(target=write_from_thread, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    frame = log.read()
    per_process = sum(1 + i % 7 for i in range(30))
    assert len(frame) == 3 * per_process + 80
    assert frame["customer_id"].is_unique  # every customer exactly once
    assert frame.groupby("request_id").size().to_dict() == {
        **{f"w{w}-{i}": 1 + i % 7 for w in range(3) for i in range(30)},
        **{f"t{t}-{i}": 1 for t in range(4) for i in range(20)},
    }


def test_postgres_log_reads_back_what_sqlite_does(tmp_path, predictor: Predictor) -> None:
    """The same appends into the real PostgreSQL server and into SQLite read back the same."""
    from pg_fixtures import fresh_database

    rows = telco_rows(90, seed=9)
    small = predictor.score_frame(rows.iloc[:20])
    large = predictor.score_frame(rows.iloc[20:], explain=False)
    with fresh_database("churnguard_log") as url:
        sqlite = f"sqlite:///{tmp_path / 'l.db'}"
        logs = [PredictionLog.open(url, batch_rows=50), PredictionLog.open(sqlite, batch_rows=50)]
        frames = []
        for log in logs:
            assert log.append(small, "daily-m-2025-01-01-00000") == 20
            assert log.append(large, "daily-m-2025-01-01-00001") == 70
            assert log.logged_requests("daily-m-2025-01-01-") == {
                "daily-m-2025-01-01-00000",
                "daily-m-2025-01-01-00001",
            }
            assert log.logged_requests("daily-m-2025-01-02-") == set()
            since = datetime.now(UTC) - timedelta(days=1)
            np.testing.assert_array_equal(
                log.oldest_health(rows["customer_id"].tolist()[:3], since), small.health[:3]
            )
            frames.append(log.read().drop(columns=["logged_at"]))
            log.close()
        pd.testing.assert_frame_equal(frames[0], frames[1], check_dtype=False)
