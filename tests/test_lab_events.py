"""The lab on events data: a small simulated CRM, an out-of-time study (never cross-validated), alert
lead times, and the promotion gate scoring the held-out customers at the latest labelled dates."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from churnguard.artifact import ModelArtifact
from churnguard.simulate import SimulationConfig, simulate, write
from churnguard.tracking import resolve_model
from training.promote import run_promote
from training.tune import run_tune

pytestmark = pytest.mark.slow


def test_events_study_is_out_of_time_with_lead_times_and_promotes(lab_store: dict[str, str]) -> None:
    state = Path(lab_store["CHURNGUARD_STATE_DIR"])
    write(
        simulate(SimulationConfig(customers=3000, seed=3)), state / "sim"
    )  # configs/datasets/crm.yaml reads it

    result = run_tune("crm", trials=2, timeout=None, storage=None, study="crm-small", seed=5)
    metrics = result.test_metrics
    assert result.finalized and result.model_name == "churn-crm"
    assert 0.6 < metrics["test_roc_auc"] < 0.95
    assert metrics["test_ece"] < 0.03 < metrics["test_ece_uncalibrated"]  # class weights need calibrating
    assert metrics["test_churners"] > 20
    assert 0 < metrics["test_alert_coverage"] <= 1
    assert 0 < metrics["test_lead_time_median_days"] <= 120  # two test dates, a 90-day horizon

    assert MlflowClient().get_run(result.parent_run_id).data.params["objective"] == "holdout"
    artifact = ModelArtifact.load(resolve_model("models:/churn-crm@challenger").local_dir)
    assert artifact.contract.params["final_model"] in ("fold_average", "refit")  # refit if CTRs are used
    window = artifact.contract.training_window
    assert window["split"] == "out_of_time" and artifact.contract.horizon_days == 90
    assert window["train_end"] < window["validation_start"] <= window["validation_end"] < window["test_start"]
    assert "tenure_days" in artifact.schema.names and "plan" in artifact.schema.categorical_names

    decision = run_promote(model_name="churn-crm", dataset=None)
    assert decision.promoted and decision.exit_code == 0
    assert decision.challenger_metrics["roc_auc"] == pytest.approx(metrics["test_roc_auc"])  # the same rows
    assert decision.rows == int(metrics["test_rows"])
