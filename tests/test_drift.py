"""Drift checks on a small real model: real Evidently reports, a real MLflow store, known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_fixtures import (
    MODEL_NAME,
    blank_out,
    customer_frame,
    cut_logins,
    fit_artifact,
    new_region,
    register_artifact,
)

from churnguard.tracking import ResolvedModel
from monitoring.drift import INSUFFICIENT, check_drift, run_drift
from monitoring.inputs import MonitoredModel, MonitoringInputError, to_schema
from monitoring.policy import MonitoringConfig, load_monitoring_config
from monitoring.stattests import chi2_two_sample_p_value


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    fit_artifact(directory)
    return directory


@pytest.fixture()
def store(lab_store: dict[str, str]) -> Path:
    """A fresh MLflow store and state folder for one test (conftest copies a ready-made database)."""
    return Path(lab_store["CHURNGUARD_STATE_DIR"])


def local_model(model_dir: Path) -> MonitoredModel:
    from churnguard.artifact import ModelArtifact

    artifact = ModelArtifact.load(model_dir)
    return MonitoredModel(artifact, ResolvedModel(str(model_dir), model_dir, None, "local"), None)


def check(model: MonitoredModel, frame: pd.DataFrame, out: Path, **policy_changes):
    policy = load_monitoring_config(environ={}).drift.model_copy(update=policy_changes)
    current = to_schema(frame, model.artifact.schema, "test")
    return check_drift(model, current, policy, out)


def test_shifted_feature_is_detected_and_named(model_dir: Path, tmp_path: Path) -> None:
    model = local_model(model_dir)
    frame = cut_logins(customer_frame(3000, seed=21), "smb", 0.5, seed=1)
    result = check(model, frame, tmp_path)

    assert result.status == "ok"
    assert result.drift_detected and result.dataset_drift
    assert result.drifted_features[0] == "login__count_30d"
    summary = json.loads(result.summary_path.read_text())
    assert summary["drift_detected"] is True
    logins = summary["drifted_features"][0]
    assert logins["column"] == "login__count_30d"
    assert logins["reasons"] == ["distribution shift"]
    assert logins["test_method"] == "ks" and logins["p_value"] < logins["p_threshold"]
    assert logins["effect_method"] == "wasserstein" and logins["effect"] >= logins["effect_threshold"] == 0.1
    # 8 columns tested (6 features, probability, tier), Bonferroni at alpha 0.05
    assert summary["tested_columns"] == 8
    assert summary["per_test_p_threshold"] == pytest.approx(0.05 / 8)
    assert summary["thresholds"]["numeric"] == {
        "test": "ks",
        "effect": "wasserstein",
        "effect_threshold": 0.1,
    }
    assert summary["thresholds"]["dataset_drift"] == {"min_drifted_features": 1, "drift_share": 0.3}
    # Fewer logins raise churn risk: the predicted probability moves up
    assert summary["mean_prediction"]["current"] > summary["mean_prediction"]["reference"]
    assert summary["rows"]["scored"] == 3000  # the frame had no predictions: the model scored them

    page = result.report_path.read_text()
    assert "Drift detected" in page and "login__count_30d" in page
    assert (
        "Drift in column &#x27;login__count_30d&#x27;" in page
        or "login__count_30d" in page.split("<body>")[1]
    )


def test_unshifted_sample_raises_no_alarm(model_dir: Path, tmp_path: Path) -> None:
    result = check(local_model(model_dir), customer_frame(3000, seed=22), tmp_path)
    assert result.status == "ok"
    assert not result.drift_detected
    assert result.drifted_features == []
    summary = json.loads(result.summary_path.read_text())
    assert summary["drift_detected"] is False
    assert all(not f["drifted"] for f in summary["features"])
    assert "No drift detected" in result.report_path.read_text()


def test_new_categories_and_missing_values_are_reported(model_dir: Path, tmp_path: Path) -> None:
    frame = blank_out(
        new_region(customer_frame(3000, seed=23), "latam", 0.05, seed=2), "payment__mean_90d", 0.3, 3
    )
    result = check(local_model(model_dir), frame, tmp_path)
    summary = result.summary

    assert set(result.drifted_features) == {"region", "payment__mean_90d"}
    assert summary["new_categories"]["region"]["values"] == ["latam"]
    assert summary["new_categories"]["region"]["share"] == pytest.approx(0.05, abs=0.015)
    region = next(f for f in summary["drifted_features"] if f["column"] == "region")
    assert any(reason.startswith("new categories") for reason in region["reasons"])
    missing = summary["missing_values"]["payment__mean_90d"]
    assert missing["reference"] == 0 and missing["current"] == pytest.approx(0.3, abs=0.03)
    payment = next(f for f in summary["drifted_features"] if f["column"] == "payment__mean_90d")
    assert payment["reasons"] == [f"missing values up {missing['current']:.1%}"]
    # csat has 5% missing on both sides: reported, not drifted
    assert "csat__mean_90d" in summary["missing_values"]
    assert "csat__mean_90d" not in result.drifted_features
    assert "latam" in result.report_path.read_text()


def test_insufficient_rows_give_no_verdict(model_dir: Path, tmp_path: Path) -> None:
    result = check(local_model(model_dir), cut_logins(customer_frame(120, seed=24), "smb", 0.1, 1), tmp_path)
    assert result.status == INSUFFICIENT
    assert result.drift_detected is False
    result.fail_on_drift = True
    assert result.exit_code == 0  # no verdict is not a failure
    summary = json.loads(result.summary_path.read_text())
    assert summary["status"] == "insufficient_data"
    assert "120 rows" in summary["notes"][0] and "500" in summary["notes"][0]
    assert "insufficient data" in result.report_path.read_text()


def test_large_inputs_are_sampled_and_say_so(model_dir: Path, tmp_path: Path) -> None:
    result = check(local_model(model_dir), customer_frame(3000, seed=25), tmp_path, max_rows=1000)
    assert result.summary["sampled"] is True
    assert result.summary["rows"]["current"] == 3000 and result.summary["rows"]["current_used"] == 1000
    assert result.summary["rows"]["reference_used"] == 1000
    assert "sampled 1,000 of 3,000 current rows" in result.summary["notes"][0]
    assert "sampled 1,000 of 3,000 current rows" in result.report_path.read_text()


def test_missing_feature_column_is_named(model_dir: Path) -> None:
    model = local_model(model_dir)
    with pytest.raises(MonitoringInputError, match="region"):
        to_schema(customer_frame(10, 1).drop(columns=["region"]), model.artifact.schema, "current.csv")


def test_run_drift_logs_to_the_model_run_and_the_workspace(
    model_dir: Path, store: Path, tmp_path: Path
) -> None:
    from evidently.ui.workspace import Workspace
    from mlflow import MlflowClient

    run_id, version = register_artifact(model_dir)
    current = tmp_path / "current.csv"
    cut_logins(customer_frame(3000, seed=26), "smb", 0.5, seed=1).to_csv(current, index=False)
    config = MonitoringConfig()

    result = run_drift(f"models:/{MODEL_NAME}@champion", current, None, tmp_path / "out", True, config)
    assert result.drift_detected and result.exit_code == 1
    assert result.summary["model"] == {
        "uri": f"models:/{MODEL_NAME}@champion",
        "name": MODEL_NAME,
        "version": version,
        "run_id": run_id,
    }
    assert result.mlflow_run_id == run_id  # logged next to the model it judges
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["drift.drift_detected"] == 1.0
    assert run.data.tags["monitoring.drift.drifted_features"].startswith("login__count_30d")
    folders = client.list_artifacts(run_id, "monitoring/drift")
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, folders[0].path)}
    assert logged == {"drift_report.html", "drift_summary.json"}

    calm = tmp_path / "calm.parquet"
    customer_frame(3000, seed=27).to_parquet(calm)
    second = run_drift(f"models:/{MODEL_NAME}@champion", calm, None, tmp_path / "out2", True, config)
    assert not second.drift_detected and second.exit_code == 0
    history = client.get_metric_history(run_id, "drift.drift_detected")
    assert sorted(point.value for point in history) == [0.0, 1.0]

    workspace = Workspace(str(store / "evidently"))
    (project,) = workspace.search_project(f"churnguard drift: {MODEL_NAME}")
    assert len(workspace.list_runs(project.id)) == 2
    assert len(workspace.get_dashboard(project.id).panels) == 3


def test_local_model_gets_a_tagged_monitoring_run(model_dir: Path, store: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    current = tmp_path / "current.parquet"
    customer_frame(1000, seed=28).to_parquet(current)
    result = run_drift(str(model_dir), current, None, tmp_path / "out", False, MonitoringConfig())
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.tags["churnguard.kind"] == "drift"
    assert run.data.tags["model_name"] == MODEL_NAME and run.data.tags["model_version"] == "local"
    assert run.data.metrics["drift.drift_detected"] == 0.0


def test_two_sample_chi_square_accounts_for_reference_noise() -> None:
    rng = np.random.default_rng(0)
    # Same distribution, small reference, large current: Evidently's goodness-of-fit `chisquare` would
    # treat the reference shares as exact; the homogeneity test keeps false alarms at their level.
    p_values = [
        chi2_two_sample_p_value(
            pd.Series(rng.choice(list("abcd"), 300, p=[0.4, 0.3, 0.2, 0.1])),
            pd.Series(rng.choice(list("abcd"), 30_000, p=[0.4, 0.3, 0.2, 0.1])),
        )
        for _ in range(200)
    ]
    assert np.mean(np.array(p_values) < 0.05) < 0.1
    shifted = chi2_two_sample_p_value(
        pd.Series(rng.choice(list("abcd"), 3000, p=[0.4, 0.3, 0.2, 0.1])),
        pd.Series(rng.choice(list("abcd"), 3000, p=[0.3, 0.3, 0.2, 0.2])),
    )
    assert shifted < 1e-10


def test_monitoring_config_validates_and_takes_overrides() -> None:
    config = load_monitoring_config(environ={"CHURNGUARD_MONITORING__DRIFT__MIN_ROWS": "200"})
    assert config.drift.min_rows == 200
    assert config.drift.categorical.test == "chi2_two_sample"
    from churnguard.config import ConfigError

    with pytest.raises(ConfigError, match=r"drift\.numeric\.test"):
        load_monitoring_config(environ={"CHURNGUARD_MONITORING__DRIFT__NUMERIC__TEST": "magic"})


def test_drift_of_the_prediction_log(model_dir: Path, store: Path, tmp_path: Path) -> None:
    """Rows the service scored and logged (churnguard.predict, churnguard.prediction_log) as current data."""
    from churnguard.predict import Predictor
    from churnguard.prediction_log import PredictionLog

    predictor = Predictor.load(model_dir, "local")
    prediction_log = PredictionLog.open(None)
    try:
        shifted = cut_logins(customer_frame(1500, seed=29), "smb", 0.4, seed=1)
        for start in range(0, 1500, 500):  # three requests, as a batch client would send them
            part = shifted.iloc[start : start + 500]
            batch = predictor.score_frame(part[["customer_id", *predictor.schema.names]], explain=False)
            prediction_log.append(batch, f"request-{start}")
    finally:
        prediction_log.close()

    result = run_drift(str(model_dir), None, None, tmp_path / "out", True, MonitoringConfig())
    assert result.summary["source"] == "prediction log"
    assert result.summary["rows"]["current"] == 1500
    assert result.summary["rows"]["scored"] == 0  # the log holds the service's probabilities
    assert result.drifted_features[0] == "login__count_30d" and result.exit_code == 1


def test_unknown_model_is_a_clear_input_error(store: Path, tmp_path: Path) -> None:
    with pytest.raises(MonitoringInputError, match="cannot load model 'models:/churn-nobody@champion'"):
        run_drift("models:/churn-nobody@champion", None, None, tmp_path, False, MonitoringConfig())
    with pytest.raises(MonitoringInputError, match="not a churnguard model artifact"):
        run_drift(str(tmp_path), None, None, tmp_path, False, MonitoringConfig())
