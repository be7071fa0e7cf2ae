"""The retraining loop: the decision policy on real drift and quality reports, and the loop end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_fixtures import customer_frame, cut_logins, fit_artifact, new_region, register_artifact

from churnguard.artifact import ModelArtifact
from churnguard.tracking import ResolvedModel
from monitoring.drift import check_drift
from monitoring.inputs import MonitoredModel, to_schema
from monitoring.policy import MonitoringConfig, RetrainPolicy, RetrainTriggers, load_monitoring_config
from monitoring.quality import run_quality
from monitoring.retrain import decide, run_retrain

TRIGGERS = RetrainTriggers(important_features=2, auc_drop=0.05, max_ece=0.05, max_model_age_days=90)
NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    fit_artifact(directory, rows=3000, reference_rows=1500, iterations=40)
    return directory


def monitored(model_dir: Path, test_auc: float = 0.77, created: datetime = NOW - timedelta(days=10)):
    artifact = ModelArtifact.load(model_dir)
    artifact.contract.metrics["test_roc_auc"] = test_auc
    artifact.contract.created_at = created.isoformat()
    return MonitoredModel(artifact, ResolvedModel(str(model_dir), model_dir, None, "local"), None)


def drift_of(model: MonitoredModel, frame: pd.DataFrame, out: Path):
    policy = load_monitoring_config(environ={}).drift
    return check_drift(model, to_schema(frame, model.artifact.schema, "test"), policy, out)


def quality_of(model_dir: Path, out: Path, seed: int, inflate: float = 1.0, shuffle: bool = False):
    """Quality on logged probabilities ~ Beta(1, 5) (expected AUC about 0.77) with matured outcomes."""
    rng = np.random.default_rng(seed)
    rows = 3000
    p = rng.beta(1.0, 5.0, rows)
    predictions = pd.DataFrame(
        {
            "customer_id": [f"Q{i:05d}" for i in range(rows)],
            "logged_at": pd.Timestamp("2025-01-06") + pd.to_timedelta(rng.integers(0, 600, rows), unit="h"),
            "churn_probability": p,
        }
    )
    truth = rng.permutation(p) if shuffle else np.minimum(1, inflate * p)
    flags = pd.DataFrame(
        {"customer_id": predictions["customer_id"], "churned": (rng.random(rows) < truth).astype(int)}
    )
    flags.to_csv(out / f"outcomes-{seed}.csv", index=False)
    return run_quality(
        str(model_dir),
        out / f"outcomes-{seed}.csv",
        None,
        out / f"quality-{seed}",
        config=MonitoringConfig(),
        predictions=predictions,
        record=False,
    )


def test_drift_in_an_important_feature_triggers_retraining(model_dir: Path, tmp_path: Path) -> None:
    model = monitored(model_dir)
    from monitoring.drift import important_columns

    assert "login__count_30d" in important_columns(model, 2)  # logins drive churn in the fixture data
    drift = drift_of(model, cut_logins(customer_frame(3000, seed=31), "smb", 0.4, seed=1), tmp_path)
    decision, reasons, evidence = decide(model, drift, None, TRIGGERS, now=NOW)
    assert decision == "retrain"
    assert reasons[0].startswith("drift in important features: login__count_30d")
    assert evidence["drift"]["drifted_features"][0] == "login__count_30d"
    assert Path(evidence["drift"]["report"]).is_file()


def test_drift_outside_the_important_features_does_not(model_dir: Path, tmp_path: Path) -> None:
    model = monitored(model_dir)
    drift = drift_of(model, new_region(customer_frame(3000, seed=32), "latam", 0.05, seed=2), tmp_path)
    assert drift.drifted_features == ["region"]
    triggers = TRIGGERS.model_copy(update={"prediction_drift": False})
    decision, reasons, _ = decide(model, drift, None, triggers, now=NOW)
    assert decision == "skip" and reasons == []


def test_healthy_model_is_kept(model_dir: Path, tmp_path: Path) -> None:
    model = monitored(model_dir)
    drift = drift_of(model, customer_frame(3000, seed=33), tmp_path)
    quality = quality_of(model_dir, tmp_path, seed=34)
    decision, reasons, evidence = decide(model, drift, quality, TRIGGERS, now=NOW)
    assert (decision, reasons) == ("skip", [])
    assert evidence["quality"]["realized_roc_auc"] == pytest.approx(0.77, abs=0.04)
    assert evidence["model_age_days"] == pytest.approx(10)


def test_quality_loss_triggers_retraining(model_dir: Path, tmp_path: Path) -> None:
    model = monitored(model_dir)
    lost_ranking = quality_of(model_dir, tmp_path, seed=35, shuffle=True)
    decision, reasons, _ = decide(model, None, lost_ranking, TRIGGERS, now=NOW)
    assert decision == "retrain"
    assert lost_ranking.realized_auc < 0.55
    assert (
        reasons[0] == f"ROC-AUC fell to {lost_ranking.realized_auc:.3f} from 0.770 at test (more than 0.05)"
    )

    miscalibrated = quality_of(model_dir, tmp_path, seed=36, inflate=2.0)
    decision, reasons, _ = decide(model, None, miscalibrated, TRIGGERS, now=NOW)
    assert decision == "retrain"
    assert reasons == [f"calibration error {miscalibrated.realized_ece:.3f} is above 0.05"]


def test_age_and_force_trigger_retraining(model_dir: Path) -> None:
    old = monitored(model_dir, created=NOW - timedelta(days=120))
    assert decide(old, None, None, TRIGGERS, now=NOW)[1] == ["model is 120 days old (max 90)"]
    young = monitored(model_dir)
    assert decide(young, None, None, TRIGGERS, force=True, now=NOW)[:2] == ("retrain", ["forced (--force)"])


def test_run_retrain_records_a_skip_with_its_evidence(
    model_dir: Path, tmp_path: Path, lab_store: dict[str, str]
) -> None:
    from mlflow import MlflowClient

    _, version = register_artifact(model_dir)
    current = tmp_path / "current.csv"
    customer_frame(2000, seed=37).to_csv(current, index=False)
    outcomes = tmp_path / "outcomes.csv"
    pd.DataFrame({"customer_id": ["nobody"], "churned": [0]}).to_csv(outcomes, index=False)

    result = run_retrain(
        "telco",
        "models:/churn-fixture@champion",
        current,
        None,
        False,
        config=MonitoringConfig(),
        outcomes=outcomes,
    )
    assert result.decision == "skip" and result.reasons == []
    assert result.evidence["drift"]["drift_detected"] is False
    assert result.evidence["quality"]["status"] == "no_predictions"  # nothing logged by a service yet
    client = MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["decision"] == "skip" and run.data.tags["reasons"] == "no trigger fired"
    assert run.data.tags["model_version"] == version
    assert run.data.metrics["retrain"] == 0.0
    evidence = {f.path for f in client.list_artifacts(run.info.run_id, "evidence/drift")}
    assert evidence == {"evidence/drift/drift_report.html", "evidence/drift/drift_summary.json"}
    decision = json.loads(
        Path(client.download_artifacts(run.info.run_id, "decision.json", str(tmp_path))).read_text()
    )
    assert decision["decision"] == "skip" and decision["evidence"]["important_features"]


@pytest.mark.slow
def test_retrain_loop_tunes_registers_and_gates(lab_store: dict[str, str], tmp_path: Path) -> None:
    """Drifted Telco -> retrain: a 2-trial study registers a challenger, the gate decides; all recorded."""
    from mlflow import MlflowClient
    from model_fixtures import build_telco_artifact, register_artifact, telco_rows

    champion_dir = build_telco_artifact(tmp_path / "champion", iterations=60)
    version = register_artifact(
        lab_store["MLFLOW_TRACKING_URI"], "churn-telco", champion_dir, alias="champion"
    )
    current = telco_rows(1500, seed=3)
    current["tenure"] = (current["tenure"] * 0.3).round()  # a wave of new customers
    current["MonthlyCharges"] = current["MonthlyCharges"] * 1.4  # and a price rise
    current.to_csv(tmp_path / "current.csv", index=False)

    config = MonitoringConfig(retrain=RetrainPolicy(trials=2, timeout_seconds=None))
    result = run_retrain("telco", None, tmp_path / "current.csv", None, False, config=config)

    assert result.decision == "retrain"
    assert any(
        reason.startswith("drift in important features") and "tenure" in reason for reason in result.reasons
    )
    assert result.tune is not None and result.tune["trials_run"] == 2
    assert result.tune["model_version"] not in (None, version)
    assert (
        result.promotion is not None
        and result.promotion["challenger_version"] == result.tune["model_version"]
    )
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.tags["decision"] == "retrain"
    assert run.data.tags["challenger_version"] == result.tune["model_version"]
    assert run.data.tags["promoted"] == str(result.promotion["promoted"]).lower()
    assert run.data.tags["promotion_reason"] == result.promotion["reason"]
