"""The feedback loop: outcome files checked row by row, the store, the alert report on data whose
answer is known, the `churnguard outcomes` command, and confirmed outcomes as training labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.cli import main
from churnguard.config import UsageError
from churnguard.datasets import load_dataset_config
from churnguard.feature_table import FeatureTable
from churnguard.feedback import (
    FeedbackConfig,
    OutcomeFileError,
    apply_confirmed_labels,
    confirmed_labels,
    ingest,
    load_outcomes,
    outcome_report,
    outcomes_frame,
    read_outcome_file,
    stored_confirmed_labels,
)
from churnguard.predict import Predictor
from churnguard.prediction_log import PredictionLog
from churnguard.schema import FeatureSchema, FeatureSpec
from training.data import load_lab_data


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# --------------------------------------------------------------------------------------------- reading


def test_an_outcome_file_is_read_and_normalised(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "outcomes.csv",
        """
customer_id,outcome,outcome_date,churn_reason
a,Churned,2025-06-30,Product gap
b,false alarm,2025-06-15,
c,SAVED,2025-06-01T10:00:00,
d,churned,2025-06-02,contact-change
""",
    )
    frame = read_outcome_file(path)
    assert frame["outcome"].tolist() == ["churned", "false_alarm", "saved", "churned"]
    assert frame["churn_reason"].tolist() == ["product_gap", None, None, "contact_change"]
    assert frame["outcome_date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2025-06-30", "2025-06-15", "2025-06-01", "2025-06-02",
    ]  # fmt: skip


def test_a_bad_outcome_file_names_every_bad_row_and_stores_nothing(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        """
customer_id,outcome,outcome_date,churn_reason
a,churned,2025-06-30,
b,lost,2025-06-15,
c,saved,someday,
d,false_alarm,2025-06-02,price
,churned,2025-06-02,budget
f,churned,2025-06-02,weather
""",
    )
    with pytest.raises(OutcomeFileError) as error:
        ingest(path, tmp_path / "state")
    message = str(error.value)
    assert "6 problem(s); nothing was ingested" in message
    for expected in (
        "row 1, churn_reason: a churned customer needs one of price, service, product_gap, competitor, "
        "contact_change, budget, other, got nothing",
        "row 2, outcome: expected one of saved, churned, false_alarm, got 'lost'",
        "row 3, outcome_date: expected a date such as 2025-09-30, got 'someday'",
        "row 4, churn_reason: a false alarm carries no churn reason",
        "row 5, customer_id: missing",
        "row 6, churn_reason: a churned customer needs one of",
    ):
        assert expected in message, message
    assert load_outcomes(tmp_path / "state").empty


def test_a_saved_customer_may_carry_what_put_them_at_risk(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "saved.csv",
        "customer_id,outcome,outcome_date,churn_reason\na,saved,2025-06-01,Price\nb,saved,2025-06-01,\n",
    )
    assert read_outcome_file(path)["churn_reason"].tolist() == ["price", None]
    wrong = write_csv(
        tmp_path / "wrong.csv", "customer_id,outcome,outcome_date,churn_reason\na,saved,2025-06-01,weather\n"
    )
    with pytest.raises(OutcomeFileError, match="row 1, churn_reason: a saved customer's reason"):
        read_outcome_file(wrong)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", "customer_id,result\na,churned")
    with pytest.raises(OutcomeFileError, match="missing column\\(s\\) outcome, outcome_date"):
        read_outcome_file(path)


def test_ingest_keeps_one_outcome_per_customer_and_date(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = write_csv(
        tmp_path / "a.csv",
        "customer_id,outcome,outcome_date,churn_reason\na,saved,2025-06-01,\nb,churned,2025-06-02,price\n"
        "c,false_alarm,2025-06-03,",
    )
    summary = ingest(first, state)
    assert (summary.new, summary.replaced, summary.total) == (3, 0, 3)
    second = write_csv(
        tmp_path / "b.csv",
        "customer_id,outcome,outcome_date,churn_reason\nb,churned,2025-06-02,competitor\nd,saved,2025-06-04,",
    )
    summary = ingest(second, state)
    assert (summary.new, summary.replaced, summary.total) == (1, 1, 4)
    stored = load_outcomes(state).set_index("customer_id")
    assert stored.loc["b", "churn_reason"] == "competitor"  # the latest ingest wins
    assert sorted(stored.index) == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------------------------------- report


def logged(customer: str, when: str, tier: str, rules: list[str] = ()) -> dict:
    reasons = [{"code": code, "message": "..."} for code in rules] + [
        {"code": "raises_risk:x", "message": "."}
    ]
    return {
        "customer_id": customer,
        "logged_at": pd.Timestamp(when, tz="UTC"),
        "alert_tier": tier,
        "reasons": json.dumps(reasons),
    }


KNOWN_OUTCOMES = outcomes_frame(
    [
        {"customer_id": "c1", "outcome": "churned", "churn_reason": "price", "outcome_date": "2025-06-30"},
        {
            "customer_id": "c2",
            "outcome": "churned",
            "churn_reason": "competitor",
            "outcome_date": "2025-06-20",
        },
        {"customer_id": "c3", "outcome": "saved", "outcome_date": "2025-06-15"},
        {"customer_id": "c4", "outcome": "false_alarm", "outcome_date": "2025-06-15"},
        {"customer_id": "c5", "outcome": "churned", "churn_reason": "budget", "outcome_date": "2025-06-15"},
        {"customer_id": "c6", "outcome": "false_alarm", "outcome_date": "2025-06-15"},
        {"customer_id": "c7", "outcome": "churned", "churn_reason": "service", "outcome_date": "2025-06-30"},
    ]
)
KNOWN_LOG = pd.DataFrame(
    [
        logged("c1", "2025-05-01 09:00", "medium", ["rule:payment_overdue"]),
        logged("c1", "2025-06-01 09:00", "high", ["rule:health_drop"]),
        logged("c1", "2025-06-02 09:00", "low"),
        logged("c2", "2025-06-10 09:00", "high"),
        logged("c3", "2025-06-01 09:00", "medium", ["rule:payment_overdue"]),
        logged("c4", "2025-06-05 09:00", "medium", ["rule:key_contact_changed"]),
        logged("c5", "2025-06-01 09:00", "low"),  # never alerted
        logged("c6", "2025-07-01 09:00", "high"),  # alerted only after the outcome
        logged("c7", "2024-10-01 09:00", "medium"),  # alerted, but 272 days before the churn
        logged("zz", "2025-06-01 09:00", "high"),  # no outcome yet
    ]
)


def test_outcome_report_on_data_whose_answer_is_known() -> None:
    report = outcome_report(KNOWN_OUTCOMES, KNOWN_LOG, FeedbackConfig(lookback_days=180))
    assert report["outcomes"] == 7
    assert report["overall"] == {
        "alerts": 4,
        "saved": 1,
        "churned": 2,
        "false_alarm": 1,
        "precision": 0.75,
        "lead_time_days": {"median": 35.0, "mean": 35.0, "min": 10.0},  # c1: 60 days, c2: 10 days
        "churn_reasons": {"price": 1, "competitor": 1},
    }
    high, medium = report["per_tier"]["high"], report["per_tier"]["medium"]
    assert (high["alerts"], high["precision"], high["lead_time_days"]["median"]) == (2, 1.0, 35.0)
    assert (medium["alerts"], medium["precision"], medium["lead_time_days"]["median"]) == (2, 0.5, None)
    rules = report["per_rule"]
    assert sorted(rules) == ["rule:health_drop", "rule:key_contact_changed", "rule:payment_overdue"]
    assert (rules["rule:payment_overdue"]["alerts"], rules["rule:payment_overdue"]["precision"]) == (2, 1.0)
    assert rules["rule:payment_overdue"]["lead_time_days"]["median"] == 60.0
    assert rules["rule:payment_overdue"]["churn_reasons"] == {"price": 1}
    assert (rules["rule:key_contact_changed"]["alerts"], rules["rule:key_contact_changed"]["precision"]) == (
        1,
        0.0,
    )
    assert report["not_alerted"] == {"saved": 0, "churned": 2, "false_alarm": 1}


def test_lookback_and_alert_tiers_are_configurable() -> None:
    report = outcome_report(
        KNOWN_OUTCOMES, KNOWN_LOG, FeedbackConfig(lookback_days=400, alert_tiers=["high"])
    )
    assert report["overall"]["alerts"] == 2  # c1 and c2 reached high; c7's old alert was medium
    assert report["not_alerted"] == {"saved": 1, "churned": 2, "false_alarm": 2}


# ------------------------------------------------------------------------------------------- command


def test_outcomes_ingest_command_reports_from_the_prediction_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(state))
    monkeypatch.delenv("CHURNGUARD_PREDICTION_LOG", raising=False)
    predictor = Predictor.load(telco_artifact_dir(), "local")
    batch = predictor.score_frame(telco_rows(200, seed=8))
    prediction_log = PredictionLog.open(f"sqlite:///{state / 'predictions.db'}")
    prediction_log.append(batch, "nightly")
    prediction_log.close()
    alerted = [c for c, t in zip(batch.customer_ids, batch.tier.tolist(), strict=True) if t != "low"][:3]
    quiet = next(c for c, t in zip(batch.customer_ids, batch.tier.tolist(), strict=True) if t == "low")
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    path = write_csv(
        tmp_path / "outcomes.csv",
        "customer_id,outcome,outcome_date,churn_reason\n"
        f"{alerted[0]},churned,{today},price\n{alerted[1]},saved,{today},\n"
        f"{alerted[2]},false alarm,{today},\n{quiet},churned,{today},budget",
    )
    assert main(["outcomes", "ingest", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ingested 4 outcomes (saved 1, churned 2, false_alarm 1)" in out
    report = json.loads((state / "outcomes" / "report.json").read_text())
    assert report["overall"]["alerts"] == 3 and report["overall"]["precision"] == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert report["overall"]["lead_time_days"]["median"] == 0.0
    assert report["not_alerted"]["churned"] == 1
    assert main(["outcomes", "report"]) == 0
    assert "all alerts" in capsys.readouterr().out
    bad = write_csv(tmp_path / "bad.csv", "customer_id,outcome,outcome_date\nx,gone,2025-01-01")
    assert main(["outcomes", "ingest", str(bad)]) == 2
    assert "row 1, outcome: expected one of saved, churned, false_alarm" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- labels


def test_confirmed_outcomes_decide_snapshot_labels_for_the_next_tune(tmp_path: Path) -> None:
    config = load_dataset_config("telco")
    plain = load_lab_data(config).table.frame.set_index("customer_id")["label"]
    stayed = plain[plain == 0].index[:2].tolist()
    left = plain[plain == 1].index[:1].tolist()
    outcomes = outcomes_frame(
        [
            {"customer_id": stayed[0], "outcome": "churned", "churn_reason": "price",
             "outcome_date": "2025-06-01"},
            {"customer_id": stayed[1], "outcome": "saved", "outcome_date": "2025-06-01"},
            {"customer_id": left[0], "outcome": "false_alarm", "outcome_date": "2025-06-01"},
            {"customer_id": "not-a-customer", "outcome": "churned", "churn_reason": "other",
             "outcome_date": "2025-06-01"},
        ]
    )  # fmt: skip
    labels = confirmed_labels(outcomes)
    assert labels["label"].tolist() == [1, 0, 1]  # saved is not a label
    data = load_lab_data(config, labels)
    updated = data.table.frame.set_index("customer_id")["label"]
    assert (updated[stayed[0]], updated[stayed[1]], updated[left[0]]) == (1, 0, 0)
    assert (updated.drop([stayed[0], left[0]]) == plain.drop([stayed[0], left[0]])).all()
    update = data.label_update
    assert (update.confirmed, update.matched, update.labels_set, update.labels_changed) == (3, 2, 2, 2)


def test_confirmed_outcomes_on_an_events_table_label_the_rows_whose_horizon_holds_them() -> None:
    observed = pd.to_datetime(["2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01"])
    frame = pd.DataFrame(
        {
            "customer_id": ["a"] * 4 + ["b"] * 4,
            "observation_date": list(observed) * 2,
            "label": np.array([0, 0, 0, 0, 0, 0, 1, 0], dtype="int8"),
            "tenure_days": np.arange(8.0),
        }
    )
    schema = FeatureSchema(features=[FeatureSpec(name="tenure_days", dtype="numeric", group="relationship")])
    table = FeatureTable("crm", "events", frame, schema, horizon_days=90)
    outcomes = outcomes_frame(
        [
            {"customer_id": "a", "outcome": "churned", "churn_reason": "price", "outcome_date": "2025-05-15"},
            {"customer_id": "b", "outcome": "false_alarm", "outcome_date": "2025-05-15"},
        ]
    )
    updated, update = apply_confirmed_labels(table, confirmed_labels(outcomes))
    # a: rows of 03-01 and 05-01 have 05-15 within their 90 days; 07-01 was after the churn: removed
    a = updated.frame[updated.frame["customer_id"] == "a"]
    assert a["observation_date"].dt.strftime("%m-%d").tolist() == ["01-01", "03-01", "05-01"]
    assert a["label"].tolist() == [0, 1, 1]
    assert updated.frame.loc[updated.frame["customer_id"] == "b", "label"].tolist() == [0, 0, 0, 0]
    assert (update.labels_set, update.labels_changed, update.rows_after_churn) == (4, 3, 1)
    assert updated.frame["label"].dtype == np.int8


def test_tune_with_outcomes_needs_stored_outcomes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="churnguard outcomes ingest FILE"):
        stored_confirmed_labels(tmp_path)
    path = write_csv(
        tmp_path / "o.csv", "customer_id,outcome,outcome_date,churn_reason\na,churned,2025-06-01,price"
    )
    ingest(path, tmp_path)
    assert stored_confirmed_labels(tmp_path)["label"].tolist() == [1]
    from churnguard.cli import build_parser

    assert build_parser().parse_args(["tune", "--dataset", "telco", "--with-outcomes"]).with_outcomes


@pytest.mark.slow
def test_tune_with_outcomes_end_to_end(
    lab_store: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outcomes ingest` then `tune --with-outcomes` from the command line, on a real MLflow store and a
    real (small) study: the run says which labels the outcomes decided, and a challenger is registered."""
    import mlflow

    plain = load_lab_data(load_dataset_config("telco")).table.frame.set_index("customer_id")["label"]
    stayed = plain[plain == 0].index[:40].tolist()  # the team saw these leave after all
    left = plain[plain == 1].index[:10].tolist()  # and these were false alarms
    rows = [f"{c},churned,2025-06-01,price" for c in stayed] + [f"{c},false_alarm,2025-06-01," for c in left]
    path = write_csv(
        tmp_path / "outcomes.csv", "customer_id,outcome,outcome_date,churn_reason\n" + "\n".join(rows)
    )
    assert main(["outcomes", "ingest", str(path)]) == 0
    assert "ingested 50 outcomes" in capsys.readouterr().out

    assert main(["tune", "--dataset", "telco", "--trials", "2", "--seed", "5", "--with-outcomes"]) == 0
    client = mlflow.MlflowClient()
    (parent,) = [
        run
        for run in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if "feedback_labels" in run.data.tags
    ]
    assert parent.data.tags["feedback_labels"] == (
        "confirmed outcomes: 50 (50 customers in the table); labels set on 50 rows, 50 changed; "
        "0 rows observed after a confirmed churn removed"
    )
    versions = client.search_model_versions("name='churn-telco'")
    assert len(versions) == 1 and versions[0].run_id is not None
