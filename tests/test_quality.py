"""Label-delayed quality on data whose answer is known: labels drawn from the logged probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_fixtures import fit_artifact

from monitoring.expected import expected_auc
from monitoring.inputs import MonitoringInputError
from monitoring.outcomes import read_outcomes_file
from monitoring.policy import MonitoringConfig
from monitoring.quality import run_quality

FIRST_SCORING = pd.Timestamp("2025-01-06")  # a Monday: four weekly cohorts follow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    fit_artifact(directory, rows=2000, reference_rows=500, iterations=30)
    return directory


@pytest.fixture()
def store(lab_store: dict[str, str]) -> Path:
    """A fresh MLflow store and state folder for one test (conftest copies a ready-made database)."""
    return Path(lab_store["CHURNGUARD_STATE_DIR"])


def logged(rows: int, seed: int) -> pd.DataFrame:
    """Logged predictions: probabilities ~ Beta(1, 5), scored over four weeks, as the service logs them."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"K{i:06d}" for i in range(rows)],
            "scored_at": FIRST_SCORING + pd.to_timedelta(rng.integers(0, 28 * 24, rows), unit="h"),
            "churn_probability": rng.beta(1.0, 5.0, rows),
            "model_version": "local",
        }
    )


def outcomes_file(predictions: pd.DataFrame, path: Path, as_of: str, seed: int, inflate: float = 1.0) -> Path:
    """Churn dates drawn from the probabilities (times `inflate`), within the 90-day horizon."""
    rng = np.random.default_rng(seed)
    truth = np.minimum(1.0, inflate * predictions["churn_probability"].to_numpy())
    churned = rng.random(len(predictions)) < truth
    days = rng.integers(1, 90, len(predictions))
    frame = pd.DataFrame(
        {
            "customer_id": predictions["customer_id"][churned],
            "churn_date": (predictions["scored_at"] + pd.to_timedelta(days, unit="D"))[churned].dt.normalize()
            + pd.Timedelta(days=1),
            "as_of": as_of,
        }
    )
    frame.to_csv(path, index=False)
    return path


def quality(model_dir: Path, predictions: pd.DataFrame, outcomes: Path, out: Path, record: bool = False):
    return run_quality(
        str(model_dir), outcomes, None, out, config=MonitoringConfig(), predictions=predictions, record=record
    )


def test_calibrated_probabilities_realize_what_they_promise(model_dir: Path, tmp_path: Path) -> None:
    predictions = logged(6000, seed=1)
    outcomes = outcomes_file(predictions, tmp_path / "outcomes.csv", "2025-12-31", seed=2)
    result = quality(model_dir, predictions, outcomes, tmp_path / "out")

    assert result.status == "ok"
    assert [c["cohort"] for c in result.cohorts] == [
        "2025-01-06/2025-01-12",
        "2025-01-13/2025-01-19",
        "2025-01-20/2025-01-26",
        "2025-01-27/2025-02-02",
    ]
    overall = result.overall
    assert overall["rows"] == overall["matured"] == 6000
    expected, realized = overall["expected_on_matured"], overall["realized"]
    bands = expected["bands"]
    # Beta(1, 5) has mean 1/6; labels were drawn from the probabilities themselves
    assert expected["churn_rate"] == pytest.approx(1 / 6, abs=0.01)
    assert realized["churn_rate"] == pytest.approx(expected["churn_rate"], abs=0.015)
    # the 90% band is about +-1.6 sd wide; allow ~3 sd for a single draw
    width = bands["roc_auc"]["high"] - bands["roc_auc"]["low"]
    assert bands["roc_auc"]["low"] < expected["roc_auc"] < bands["roc_auc"]["high"]
    assert realized["roc_auc"] == pytest.approx(expected["roc_auc"], abs=width)
    assert realized["ece"] <= bands["ece"]["high"] + 0.005
    high_expected = expected["tiers"]["high"]["precision"]
    assert realized["tiers"]["high"]["precision"] == pytest.approx(high_expected, abs=0.06)
    for cohort in result.cohorts:
        assert cohort["realized"]["roc_auc"] == pytest.approx(
            cohort["expected_on_matured"]["roc_auc"], abs=0.06
        )

    summary = json.loads(result.summary_path.read_text())
    assert summary["status"] == "ok" and summary["outcomes"]["horizon_days"] == 90
    assert len(summary["cohorts"]) == 4
    page = result.report_path.read_text()
    assert "AUC expected" in page and "AUC realized" in page and "2025-01-20/2025-01-26" in page
    assert result.classification_report_path is not None
    assert "ROC AUC" in result.classification_report_path.read_text()


def test_underestimated_churn_shows_in_calibration(model_dir: Path, tmp_path: Path) -> None:
    predictions = logged(6000, seed=3)
    outcomes = outcomes_file(predictions, tmp_path / "outcomes.csv", "2025-12-31", seed=4, inflate=2.0)
    result = quality(model_dir, predictions, outcomes, tmp_path / "out")

    expected, realized = result.overall["expected_on_matured"], result.overall["realized"]
    assert realized["churn_rate"] > 1.7 * expected["churn_rate"]
    assert realized["ece"] > 3 * expected["bands"]["ece"]["high"]
    assert realized["tiers"]["high"]["precision"] > expected["bands"]["high_precision"]["high"]


def test_before_labels_mature_only_expected_quality_is_shown(model_dir: Path, tmp_path: Path) -> None:
    predictions = logged(3000, seed=5)
    # Outcomes as of 2025-04-10: only predictions scored before 2025-01-10 have a full 90-day horizon
    outcomes = outcomes_file(predictions, tmp_path / "outcomes.csv", "2025-04-10", seed=6)
    result = quality(model_dir, predictions, outcomes, tmp_path / "out")

    first, *later = result.cohorts
    assert 0 < first["matured"] < first["rows"]
    assert all(c["matured"] == 0 and "realized" not in c for c in later)
    for cohort in later:
        assert cohort["expected"]["roc_auc"] > 0.6
        assert cohort["expected"]["tiers"]["high"]["recall"] > cohort["expected"]["tiers"]["high"]["share"]
    assert result.overall["expected"]["roc_auc"] == pytest.approx(
        expected_auc(predictions["churn_probability"].to_numpy()), abs=1e-9
    )
    assert "expected" in result.report_path.read_text()


def test_awaiting_labels_when_too_few_matured(model_dir: Path, tmp_path: Path) -> None:
    predictions = logged(2000, seed=7)
    outcomes = outcomes_file(predictions, tmp_path / "outcomes.csv", "2025-02-01", seed=8)
    result = quality(model_dir, predictions, outcomes, tmp_path / "out")
    assert result.status == "awaiting_labels"
    assert result.realized_auc is None and result.classification_report_path is None
    assert "Awaiting labels" in result.report_path.read_text()


def test_churned_flag_outcomes_and_bad_values(model_dir: Path, tmp_path: Path) -> None:
    predictions = logged(2000, seed=9)
    rng = np.random.default_rng(10)
    flags = pd.DataFrame(
        {
            "customer_id": predictions["customer_id"],
            "churned": (rng.random(2000) < predictions["churn_probability"]).astype(int),
        }
    )
    flags.to_csv(tmp_path / "flags.csv", index=False)
    result = quality(model_dir, predictions, tmp_path / "flags.csv", tmp_path / "out")
    assert result.status == "ok" and result.overall["matured"] == 2000
    assert result.realized_auc == pytest.approx(result.overall["expected_on_matured"]["roc_auc"], abs=0.04)

    flags.loc[3, "churned"] = 7
    flags.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(MonitoringInputError, match="churned"):
        read_outcomes_file(tmp_path / "bad.csv")


def test_quality_is_logged_to_mlflow(model_dir: Path, store: Path) -> None:
    from mlflow import MlflowClient

    predictions = logged(1500, seed=11)
    outcomes = outcomes_file(predictions, store / "outcomes.csv", "2025-12-31", seed=12)
    result = quality(model_dir, predictions, outcomes, store / "out", record=True)
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.tags["churnguard.kind"] == "quality"
    assert run.data.metrics["quality.realized_roc_auc"] == pytest.approx(result.realized_auc)
    names = {Path(f.path).name for f in MlflowClient().list_artifacts(run.info.run_id, "monitoring/quality")}
    assert len(names) == 1  # one stamped folder holding the three files
    folder = MlflowClient().list_artifacts(run.info.run_id, "monitoring/quality")[0].path
    files = {Path(f.path).name for f in MlflowClient().list_artifacts(run.info.run_id, folder)}
    assert files == {"quality_report.html", "quality_summary.json", "classification_report.html"}


def test_quality_reads_the_prediction_log(model_dir: Path, store: Path) -> None:
    """Predictions scored by churnguard.predict and logged by churnguard.prediction_log, then outcomes."""
    from monitoring_fixtures import customer_frame

    from churnguard.predict import Predictor
    from churnguard.prediction_log import PredictionLog

    customers = customer_frame(1200, seed=13)
    predictor = Predictor.load(model_dir, "local")
    prediction_log = PredictionLog.open(None)
    try:
        batch = predictor.score_frame(customers[["customer_id", *predictor.schema.names]], explain=False)
        prediction_log.append(batch, "request-1")
    finally:
        prediction_log.close()
    customers[["customer_id", "label"]].rename(columns={"label": "churned"}).to_csv(
        store / "flags.csv", index=False
    )

    result = run_quality(
        str(model_dir), store / "flags.csv", None, store / "out", config=MonitoringConfig(), record=False
    )
    assert result.status == "ok" and result.overall["rows"] == result.overall["matured"] == 1200
    assert len(result.cohorts) == 1  # all scored this week
    # the labels follow the fixture's true churn law, which the model learned: real signal
    assert result.realized_auc is not None and result.realized_auc > 0.65
    assert result.overall["expected"]["churn_rate"] == pytest.approx(float(batch.probability.mean()))
