"""Baselines on the model's own test rows (issue 15): BG/NBD checked against the published CDNOW fit,
purchase histories that never look past their date, recency and logistic regression on the same rows,
and `tune` saying plainly when a baseline ranks the test rows as well as the model (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from churnguard.datasets import DataError, load_dataset_config
from churnguard.feature_table import build_feature_table
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN
from training.baselines import BASELINE_TAG, Baselines, BaselineScore, events_recency, measure_baselines
from training.bgnbd import BgNbd, PurchaseHistory, fit_bgnbd, purchase_days, purchase_history
from training.config import load_training_config
from training.data import load_lab_data
from training.pareto_nbd import ParetoNbd, fit_pareto_nbd
from training.splits import make_split
from training.tune import QUALITY_TAG, run_tune

CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
# Fader, Hardie and Lee (2005), table 1: the 39-week calibration period of the CDNOW cohort (weeks).
PUBLISHED = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
# Fader, Hardie and Lee (2005), "A note on deriving the Pareto/NBD model": the same calibration period.
PUBLISHED_PARETO = ParetoNbd(r=0.55, alpha=10.58, s=0.61, beta=11.67)


def history(x: float, t_x: float, T: float) -> PurchaseHistory:
    return PurchaseHistory(np.array([x]), np.array([t_x]), np.array([T]), np.array([True]))


# ---------------------------------------------------------------------------------------------- BG/NBD


def test_bgnbd_expectation_matches_the_paper_at_the_published_parameters() -> None:
    # The paper's worked example: x = 2, t_x = 30.43, T = 38.86 weeks, 39 weeks ahead -> 1.226 purchases.
    (expected,) = PUBLISHED.expected_purchases(history(2, 30.43, 38.86), 39.0)
    assert expected == pytest.approx(1.226, abs=5e-4)


def test_one_time_buyers_are_alive_by_construction_so_only_silence_ranks_them() -> None:
    recent, long_silent = history(0, 0, 2), history(0, 0, 60)
    assert PUBLISHED.p_alive(recent) == PUBLISHED.p_alive(long_silent) == 1.0  # 1 - P(alive) cannot tell
    assert PUBLISHED.p_no_purchase(long_silent, 13) > PUBLISHED.p_no_purchase(recent, 13)
    assert PUBLISHED.expected_purchases(long_silent, 13) < PUBLISHED.expected_purchases(recent, 13)
    # A frequent buyer gone quiet is likely dead: P(no purchase) at least as high as P(dead).
    quiet = history(10, 5, 60)
    assert PUBLISHED.p_alive(quiet) < 0.1
    assert PUBLISHED.p_no_purchase(quiet, 13) >= 1 - PUBLISHED.p_alive(quiet)


def test_bgnbd_fit_on_the_cdnow_calibration_period_agrees_with_the_published_parameters() -> None:
    """The paper fits the 1/10 sample (2,357 customers); the file here is the whole cohort (23,570), so the
    parameters agree within sampling error, and the published ones are almost as likely on it."""
    raw = pd.read_csv(CDNOW, sep=r"\s+")
    events = pd.DataFrame(
        {
            ID_COLUMN: raw["customer_id"].astype(str),
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "type": "order",
        }
    )
    purchases = purchase_days(events, ["order"])
    customers = purchases[ID_COLUMN].unique()
    assert len(customers) == 23_570
    calibration = purchase_history(purchases, customers, np.full(len(customers), np.datetime64("1997-10-01")))
    fitted = fit_bgnbd(calibration)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(PUBLISHED, name), rel=0.1), name
    per_customer = fitted.log_likelihood(calibration).mean() - PUBLISHED.log_likelihood(calibration).mean()
    assert 0 <= per_customer < 5e-4  # the fit is the maximum, and the published point is next to it


def cdnow_calibration() -> PurchaseHistory:
    raw = pd.read_csv(CDNOW, sep=r"\s+", dtype={"customer_id": str})
    events = pd.DataFrame(
        {
            ID_COLUMN: raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "type": "order",
        }
    )
    purchases = purchase_days(events, ["order"])
    customers = purchases[ID_COLUMN].unique()
    return purchase_history(purchases, customers, np.full(len(customers), np.datetime64("1997-10-01")))


def test_pareto_nbd_fit_on_the_cdnow_calibration_period_agrees_with_the_published_parameters() -> None:
    """As for BG/NBD, the paper fits the 1/10 sample and the file is the whole cohort. Pareto/NBD's death
    process is weakly identified (s and beta trade off along a flat ridge): r, alpha and s land within
    10% of the published values, beta within 20%, and the published point is almost as likely."""
    calibration = cdnow_calibration()
    fitted = fit_pareto_nbd(calibration)
    for name in ("r", "alpha", "s"):
        assert getattr(fitted, name) == pytest.approx(getattr(PUBLISHED_PARETO, name), rel=0.1), name
    assert fitted.beta == pytest.approx(PUBLISHED_PARETO.beta, rel=0.2)
    gain = fitted.log_likelihood(calibration).mean() - PUBLISHED_PARETO.log_likelihood(calibration).mean()
    assert 0 <= gain < 5e-4


def test_pareto_nbd_expectations_agree_with_the_process() -> None:
    """For a customer who has just arrived (x = t_x = T = 0) the conditional expectation is the
    unconditional one, which has a closed form and which a simulation of the process reproduces."""
    model = PUBLISHED_PARETO
    weeks = 39.0
    (arrived,) = model.expected_purchases(history(0, 0, 0), weeks)
    closed = (
        model.r
        * model.beta
        / (model.alpha * (model.s - 1))
        * (1 - (model.beta / (model.beta + weeks)) ** (model.s - 1))
    )
    assert arrived == pytest.approx(closed, rel=1e-9)
    rng = np.random.default_rng(0)
    customers = 400_000
    rate = rng.gamma(model.r, 1 / model.alpha, customers)
    lifetime = rng.exponential(1 / rng.gamma(model.s, 1 / model.beta, customers))
    simulated = rng.poisson(rate * np.minimum(lifetime, weeks)).mean()
    assert arrived == pytest.approx(simulated, rel=0.02)
    # Alive for sure at arrival; a long silence after frequent buying makes death likely.
    assert model.p_alive(history(0, 0, 0))[0] == pytest.approx(1.0)
    assert model.p_alive(history(10, 5, 60))[0] < 0.1 < model.p_alive(history(10, 58, 60))[0]


def test_purchase_history_reads_only_purchases_before_its_date_and_merges_same_day_orders() -> None:
    events = pd.DataFrame(
        {
            ID_COLUMN: ["A", "A", "A", "A", "A", "B", "A"],
            "timestamp": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 17:00",  # same day: one purchase
                    "2024-01-15 10:00",
                    "2024-01-29 11:00",
                    "2024-02-12 00:00",  # on the as-of day: not before it
                    "2024-02-01 12:00",
                    "2024-01-20 08:00",  # a login, not a purchase
                ]
            ),
            "type": ["order"] * 6 + ["login"],
        }
    )
    purchases = purchase_days(events, ["order"])
    # A's two orders of Jan 1 are one purchase; the login is none.
    assert purchases.groupby(ID_COLUMN).size().to_dict() == {"A": 4, "B": 1}
    as_of = pd.to_datetime(["2024-02-12", "2024-01-01", "2024-02-12", "2024-02-12"])
    result = purchase_history(purchases, ["A", "A", "B", "Z"], as_of)
    np.testing.assert_array_equal(result.buyer, [True, False, True, False])
    np.testing.assert_allclose(result.x, [2, 0, 0, 0])  # repeat purchases: Jan 15 and Jan 29
    np.testing.assert_allclose(result.t_x, [4, 0, 0, 0])  # Jan 1 -> Jan 29
    np.testing.assert_allclose(result.T, [6, 0, 11 / 7, 0])  # Jan 1 -> Feb 12; B: Feb 1 -> Feb 12


# ---------------------------------------------------------------------------------------------- verdicts


def baselines(*scores: tuple[str, float, float]) -> Baselines:
    return Baselines([BaselineScore(name, name, roc, pr, 100) for name, roc, pr in scores], {})


def test_a_model_must_beat_every_baseline_on_both_metrics() -> None:
    found = baselines(("recency", 0.80, 0.60), ("logistic_regression", 0.82, 0.55))
    assert found.shortfalls({"test_roc_auc": 0.83, "test_pr_auc": 0.61}) == []
    assert found.warnings({"test_roc_auc": 0.83, "test_pr_auc": 0.61}) == []
    missed = found.shortfalls({"test_roc_auc": 0.82, "test_pr_auc": 0.59})
    assert missed == [
        "recency PR-AUC 0.6000 >= model 0.5900",
        "logistic_regression ROC-AUC 0.8200 >= model 0.8200",  # a tie is not a win
    ]
    (warning,) = found.warnings({"test_roc_auc": 0.82, "test_pr_auc": 0.59})
    assert warning.startswith("the model does not beat every baseline on its own test rows: recency PR-AUC")
    card = found.card_section({"test_roc_auc": 0.82, "test_pr_auc": 0.59})
    assert "| this model | 0.8200 | 0.5900 |" in card and "| recency: recency | 0.8000 | 0.6000 |" in card
    assert "**The model does not beat every baseline**" in card
    assert found.metrics() == {
        "baseline_recency_test_roc_auc": 0.80,
        "baseline_recency_test_pr_auc": 0.60,
        "baseline_logistic_regression_test_roc_auc": 0.82,
        "baseline_logistic_regression_test_pr_auc": 0.55,
    }


def test_events_recency_is_the_latest_event_of_any_type_or_the_whole_tenure() -> None:
    table_rows = pd.DataFrame(
        {
            "tenure_days": [100.0, 40.0, np.nan],
            "login__days_since_last": [3.0, np.nan, np.nan],
            "order__days_since_last": [20.0, np.nan, np.nan],
        }
    )
    from churnguard.schema import FeatureSchema, FeatureSpec

    schema = FeatureSchema(
        features=[
            FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"),
            FeatureSpec(
                name="login__days_since_last", dtype="numeric", group="activity", kind="days_since_last"
            ),
            FeatureSpec(
                name="order__days_since_last", dtype="numeric", group="transactions", kind="days_since_last"
            ),
        ]
    )
    # Silent since signup: the whole tenure; no signup and no event: ranked most silent of all.
    np.testing.assert_allclose(events_recency(table_rows, schema), [3.0, 40.0, 41.0])


# ---------------------------------------------------------------------------------------------- on data


def transactions_dataset(folder: Path, customers: int = 500, seed: int = 11) -> Path:
    """Purchases drawn from BG/NBD itself over two years, churn = no purchase in the next 90 days."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2022-01-01")
    rows = []
    for number in range(customers):
        rate = rng.gamma(1.5, 1 / 15)  # purchases per day while alive
        dropout = rng.beta(1.0, 6.0)
        day = float(rng.integers(0, 120))
        while day < 730:
            rows.append((f"C{number:04d}", start + pd.Timedelta(days=day), round(rng.lognormal(3, 0.5), 2)))
            if rng.random() < dropout:
                break
            day += rng.exponential(1 / rate)
    pd.DataFrame(rows, columns=["customer", "date", "amount"]).to_csv(folder / "orders.csv", index=False)
    path = folder / "shop.yaml"
    path.write_text(
        "kind: events\nname: shop\n"
        "events:\n  - path: orders.csv\n    columns: {customer_id: customer, timestamp: date, type: null, "
        "value: amount}\n    type: order\n"
        "event_types:\n  order: {group: transactions, has_value: true}\n"
        "observation: {start: 2022-06-01, end: 2023-09-01, every_days: 45}\n"
        "horizon_days: 90\nwindows_days: [30, 90, 180]\n"
        "churn: {kind: inactivity, inactivity_days: 90}\n"
    )
    return path


def test_every_baseline_is_scored_on_exactly_the_test_rows_of_a_transactions_dataset(tmp_path: Path) -> None:
    config = load_dataset_config(transactions_dataset(tmp_path))
    data = load_lab_data(config)
    assert data.purchases is not None and len(data.purchases)
    split = make_split(data.table, load_training_config().split)
    found = measure_baselines(data, split, config, seed=0)
    assert [s.name for s in found.scores] == [
        "recency",
        "logistic_regression",
        "bgnbd",
        "bgnbd_no_purchase",
        "pareto_nbd",
    ]
    assert found.skipped == {}
    test_rows = int(split.test.sum())
    assert all(score.rows == test_rows for score in found.scores)
    # Each baseline keeps its per-row scores, in test-row order, for paired comparisons with the model.
    test_label = data.table.frame.loc[split.test, "label"].to_numpy()
    for score in found.scores:
        assert score.churn_score is not None and len(score.churn_score) == test_rows
        assert roc_auc_score(test_label, score.churn_score) == pytest.approx(score.roc_auc)
    # The data is BG/NBD's own process: its expected purchases rank churners well, and so does recency.
    scores = {score.name: score for score in found.scores}
    assert scores["bgnbd"].roc_auc > 0.7 and scores["recency"].roc_auc > 0.65
    assert scores["pareto_nbd"].roc_auc > 0.7  # a near relative of the process
    # Whereas 1 - P(alive) cannot even see that a one-time buyer has gone quiet.
    frame = data.table.frame[split.test]
    final = data.table.frame[split.final]
    latest = final[OBSERVATION_COLUMN].max()
    ids = final.loc[final[OBSERVATION_COLUMN] == latest, ID_COLUMN]
    model = fit_bgnbd(purchase_history(data.purchases, ids, np.full(len(ids), latest)))
    test_history = purchase_history(data.purchases, frame[ID_COLUMN], frame[OBSERVATION_COLUMN])
    one_time = test_history.buyer & (test_history.x == 0)
    assert one_time.any() and (model.p_alive(test_history)[one_time] == 1.0).all()


def test_a_non_transaction_events_dataset_says_why_bgnbd_was_not_measured(tmp_path: Path) -> None:
    path = transactions_dataset(tmp_path)
    orders = pd.read_csv(tmp_path / "orders.csv")
    logins = orders.assign(date=pd.to_datetime(orders["date"]) - pd.Timedelta(days=2))
    pd.concat([orders.assign(kind="order"), logins.assign(kind="login")]).to_csv(
        tmp_path / "all.csv", index=False
    )
    path.write_text(
        path.read_text()
        .replace("orders.csv", "all.csv")
        .replace("type: null", "type: kind")
        .replace("    type: order\n", "")
        .replace("event_types:\n", "event_types:\n  login: {group: activity}\n")
    )
    config = load_dataset_config(path)
    data = load_lab_data(config)
    assert data.purchases is None
    found = measure_baselines(data, make_split(data.table, load_training_config().split), config, seed=0)
    assert [s.name for s in found.scores] == ["recency", "logistic_regression"]
    assert "not transaction data" in found.skipped["bgnbd"]


def test_recency_baseline_of_a_snapshot_must_name_a_feature_column(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a", "b"], "tenure": [1, 2], "churned": ["yes", "no"]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        "kind: snapshot\nname: s\nsource: {path: s.csv}\nid_column: id\n"
        "label: {column: churned, positive: 'yes'}\nrecency_baseline: {column: tenur, churn_when: low}\n"
    )
    with pytest.raises(DataError) as error:
        build_feature_table(load_dataset_config(path))
    assert "`recency_baseline.column` names 'tenur', which is not a column; did you mean 'tenure'" in str(
        error.value
    )


# ---------------------------------------------------------------------------------------------- tune

ROWS = 500


def snapshot(folder: Path, kind: str) -> Path:
    """`tenure`: the label depends on it alone, monotonically, so tenure alone is the best possible
    ranking and the model can at most tie. `xor`: the label is an interaction no line and no single
    column can draw, so the model beats both baselines."""
    rng = np.random.default_rng(5)
    tenure = rng.integers(1, 72, ROWS)
    a, b = rng.random(ROWS), rng.random(ROWS)
    if kind == "tenure":
        churn = rng.random(ROWS) < 0.6 * np.exp(-tenure / 15)
    else:
        churn = ((a > 0.5) ^ (b > 0.5)) ^ (rng.random(ROWS) < 0.1)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(ROWS)],
            "tenure": tenure,
            "usage": a,
            "seats": b,
            "noise": rng.normal(size=ROWS),
            "churned": np.where(churn, "yes", "no"),
        }
    )
    frame.to_csv(folder / f"{kind}.csv", index=False)
    path = folder / f"{kind}.yaml"
    path.write_text(
        f"kind: snapshot\nname: {kind}\nsource: {{path: {kind}.csv}}\nid_column: customer_id\n"
        "label: {column: churned, positive: 'yes', negative: 'no'}\n"
        "recency_baseline: {column: tenure, churn_when: low}\n"
    )
    return path


@pytest.mark.slow
def test_tune_says_plainly_when_a_baseline_ranks_the_test_rows_as_well(
    lab_store: dict[str, str], tmp_path: Path
) -> None:
    result = run_tune(str(snapshot(tmp_path, "tenure")), trials=2, storage=None, study="tenure", seed=1)
    assert result.finalized and result.warnings == []  # a good model, only not better than the rule
    (warning,) = result.baseline_warnings
    assert "does not beat every baseline" in warning and f"WARNING: {warning}" in result.summary()
    recency = result.baselines["baseline_recency_test_roc_auc"]
    assert recency > 0.75 and not result.test_metrics["test_roc_auc"] > recency + 0.01

    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[BASELINE_TAG] == warning and QUALITY_TAG not in parent.data.tags
    for name, value in result.baselines.items():
        assert parent.data.metrics[name] == pytest.approx(value)
    assert set(result.baselines) == {
        f"baseline_{name}_test_{metric}"
        for name in ("recency", "logistic_regression")
        for metric in ("roc_auc", "pr_auc")
    }
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.tags[BASELINE_TAG] == warning
    assert version.description.startswith("# churn-tenure\n\n## WARNING\n- **the model does not beat")
    card = Path(client.download_artifacts(result.parent_run_id, "model_card.md", str(tmp_path))).read_text()
    assert "## Baselines (fitted on train+validation, scored on the same test rows)" in card
    assert "| recency: `tenure` alone (low values churn) |" in card
    assert card.index("## Baselines") < card.index("## Limits")


@pytest.mark.slow
def test_a_model_that_beats_every_baseline_is_not_flagged(lab_store: dict[str, str], tmp_path: Path) -> None:
    result = run_tune(str(snapshot(tmp_path, "xor")), trials=2, storage=None, study="xor", seed=1)
    assert result.finalized and result.baseline_warnings == [] and result.warnings == []
    model = result.test_metrics["test_roc_auc"]
    assert model > 0.8 > max(result.baselines["baseline_logistic_regression_test_roc_auc"],
                             result.baselines["baseline_recency_test_roc_auc"])  # fmt: skip
    parent = MlflowClient().get_run(result.parent_run_id)
    assert BASELINE_TAG not in parent.data.tags
    card = MlflowClient().get_model_version(result.model_name, result.model_version).description
    assert "The model beats every baseline on both ROC-AUC and PR-AUC." in card and "## WARNING" not in card
