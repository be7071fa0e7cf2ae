"""Events tuning on small data (issue 16): customer folds over the out-of-time training dates, and the
fallback to them when the holdout validation holds too few churners to choose anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from churnguard.simulate import SimulationConfig, simulate, write
from training.config import EventsSplit
from training.splits import events_split, fold_indices
from training.trials import customer_folds
from training.tune import run_tune


def monthly_rows(seed: int) -> pd.DataFrame:
    """300 customers at 6 monthly observation dates, one in ten rows a churner."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=6, freq="30D")
    customers = [f"C{i:03d}" for i in range(300)]
    return pd.DataFrame(
        [(c, d, int(rng.random() < 0.1)) for d in dates for c in customers],
        columns=["customer_id", "observation_date", "label"],
    )


def test_customer_folds_are_out_of_time_and_out_of_customer() -> None:
    frame = monthly_rows(seed=0)
    split = events_split(frame, EventsSplit(), seed=4)
    masks = customer_folds(frame, split, folds=4, seed=4)
    assert len(masks) == 4
    validation_date = frame.loc[split.validation, "observation_date"].unique()
    (validation_date,) = validation_date
    test_customers = set(frame.loc[split.test, "customer_id"])
    validated = np.zeros(len(frame), dtype=int)
    for fit, held in masks:
        validated += held
        assert (frame.loc[held, "observation_date"] == validation_date).all()
        assert (frame.loc[fit, "observation_date"] < validation_date).all()  # out of time
        assert not set(frame.loc[fit, "customer_id"]) & set(frame.loc[held, "customer_id"])  # out of customer
        assert not (set(frame.loc[fit, "customer_id"]) | set(frame.loc[held, "customer_id"])) & test_customers
        assert frame.loc[held, "label"].sum() > 0
    # Every non-test customer is validated once at the validation date: about 3.5x the holdout's rows.
    at_validation = split.final & (frame["observation_date"] == validation_date).to_numpy()
    assert (validated == at_validation.astype(int)).all()
    assert at_validation.sum() > 2.5 * split.validation.sum()  # 70% of customers against 20%


def test_customer_folds_over_all_dates_are_the_final_models_folds() -> None:
    frame = monthly_rows(seed=1)
    split = events_split(frame, EventsSplit(), seed=4)
    masks = customer_folds(frame, split, folds=4, seed=4, dates="all")
    validated = np.zeros(len(frame), dtype=int)
    for fit, held in masks:
        validated += held
        assert not set(frame.loc[fit, "customer_id"]) & set(frame.loc[held, "customer_id"])
        assert not (fit & ~split.final).any() and (fit | held)[split.final].all()
    # Every train+validation row is validated once: many times the churners of the validation dates.
    assert (validated == split.final.astype(int)).all()
    assert frame.loc[split.final, "label"].sum() > 4 * frame.loc[split.validation, "label"].sum()
    # The folds the final model's out-of-fold predictions use (same label, groups, K and seed).
    final = np.flatnonzero(split.final)
    label, ids = frame["label"].to_numpy()[final], frame["customer_id"].to_numpy()[final]
    for (_, held), (_, expected) in zip(masks, fold_indices(label, ids, 4, 4), strict=True):
        assert (np.flatnonzero(held) == final[expected]).all()


@pytest.mark.slow
def test_too_few_validation_churners_fall_back_to_customer_folds(lab_store: dict[str, str]) -> None:
    state = Path(lab_store["CHURNGUARD_STATE_DIR"])
    write(simulate(SimulationConfig(customers=700, seed=8)), state / "sim")  # crm.yaml reads it
    result = run_tune("crm", trials=2, timeout=None, storage=None, study="crm-tiny", seed=2)
    assert result.finalized
    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.data.params["objective"] == "customer_folds"
    assert parent.data.tags["objective_fallback"] == "too few churners in the validation rows"
    card = MlflowClient().get_model_version(result.model_name, result.model_version).description
    assert "customer folds, each validated on its customers at every train+validation date" in card
