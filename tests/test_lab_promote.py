"""The promotion gate: the first model becomes champion, a worse challenger is refused, every decision
is an MLflow run, and the exit code says which."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from churnguard.tracking import CHALLENGER, CHAMPION
from training.config import PromotionConfig
from training.promote import compare, run_promote
from training.tune import run_tune

# A model with two trees of depth one: clearly worse than any tuned Telco model.
WEAK_SEARCH = {
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__LOW": "2",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__ITERATIONS__HIGH": "2",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__LOW": "1",
    "CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HIGH": "1",
    "CHURNGUARD_TRAINING__SEARCH__PRUNING__ENABLED": "false",
}


def aliases(name: str) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()
    }


def decision_runs() -> list[dict[str, str]]:
    experiment = mlflow.get_experiment_by_name("churnguard-telco")
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string="tags.`churnguard.kind` = 'promotion'",
        order_by=["start_time ASC"],
    )
    return runs.to_dict("records")


@pytest.mark.slow
def test_first_model_becomes_champion_and_a_worse_challenger_is_refused(
    lab_store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = run_promote(model_name="churn-telco", dataset="telco")
    assert not nothing.promoted and nothing.exit_code == 1
    assert "no 'challenger'" in nothing.reason

    first = run_tune("telco", trials=2, timeout=None, storage=None, study="first", seed=1)
    decision = run_promote(model_name=None, dataset="telco")
    assert decision.promoted and decision.exit_code == 0
    assert decision.challenger_version == first.model_version == "1" and decision.champion_version is None
    assert "first registered model" in decision.reason
    assert decision.challenger_metrics["roc_auc"] > 0.8 and decision.rows == 1409  # the stored test rows
    assert aliases("churn-telco") == {CHAMPION: "1"}  # challenger alias cleared once promoted

    for name, value in WEAK_SEARCH.items():
        monkeypatch.setenv(name, value)
    weak = run_tune("telco", trials=1, timeout=None, storage=None, study="weak", seed=1)
    assert weak.model_version == "2"
    refused = run_promote(model_name="churn-telco", dataset=None)  # the dataset comes from the version tag
    assert not refused.promoted and refused.exit_code == 1
    assert refused.challenger_version == "2" and refused.champion_version == "1"
    assert refused.challenger_metrics["roc_auc"] < refused.champion_metrics["roc_auc"] - 0.01
    assert "below the margin" in refused.reason
    assert aliases("churn-telco") == {CHAMPION: "1", CHALLENGER: "2"}
    assert MlflowClient().get_model_version("churn-telco", "2").tags["promotion"] == "refused"

    recorded = decision_runs()
    assert [run["tags.decision"] for run in recorded] == ["refused", "promoted", "refused"]
    last = recorded[-1]
    assert last["tags.challenger_version"] == "2" and last["tags.champion_version"] == "1"
    assert last["metrics.challenger_roc_auc"] == pytest.approx(refused.challenger_metrics["roc_auc"])
    assert last["metrics.champion_roc_auc"] == pytest.approx(refused.champion_metrics["roc_auc"])
    assert last["params.metric"] == "roc_auc" and last["metrics.promoted"] == 0.0


def test_compare_needs_the_margin_and_no_real_loss_of_calibration() -> None:
    policy = PromotionConfig(metric="roc_auc", margin=0.005, ece_tolerance=0.01)
    champion = {"roc_auc": 0.840, "ece": 0.020}
    assert compare({"roc_auc": 0.846, "ece": 0.025}, champion, policy)[0]
    assert not compare({"roc_auc": 0.844, "ece": 0.020}, champion, policy)[0]  # +0.004 < margin
    promoted, reason = compare({"roc_auc": 0.860, "ece": 0.035}, champion, policy)
    assert not promoted and "ECE" in reason  # better ranking, but calibration worse by 0.015
    lower_is_better = PromotionConfig(metric="log_loss", margin=0.01, ece_tolerance=0.01)
    assert compare({"log_loss": 0.40, "ece": 0.02}, {"log_loss": 0.42, "ece": 0.02}, lower_is_better)[0]
    assert not compare({"log_loss": 0.42, "ece": 0.02}, {"log_loss": 0.40, "ece": 0.02}, lower_is_better)[0]
