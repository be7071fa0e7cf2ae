"""The service's hand-assembled JSON answers are the same documents as `ScoredBatch.results` encodes:
the column-wise batch encoder and the per-row reason encoder must never drift from the dict path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.history import FrameHistory
from churnguard.predict import Predictor
from service.payloads import FEW_RESULTS, batch_body, single_body


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "local")


def mixed_rows() -> tuple[pd.DataFrame, FrameHistory]:
    """Rows with every optional part of an answer: unknown categories and out-of-range values
    (flags), a health drop in the score history (escalation, a rule reason), missing values."""
    rows = telco_rows(3 * FEW_RESULTS + 5, seed=9)
    rows.loc[[1, 7], "Contract"] = "Biennial"  # unknown category: served and flagged
    rows.loc[[2], "MonthlyCharges"] = 200.0  # outside the training range, inside the accepted one: flagged
    rows.loc[[3], "TotalCharges"] = np.nan
    now = datetime.now(UTC)
    history = FrameHistory(
        pd.DataFrame(
            {
                "customer_id": rows["customer_id"].iloc[:20].tolist(),
                "logged_at": [now - timedelta(days=30)] * 20,
                "health_score": [100] * 20,
            }
        ),
        as_of=now,
    )
    return rows, history


@pytest.mark.parametrize("explain", [True, False])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_batch_and_single_bodies_encode_the_results_documents(
    predictor: Predictor, explain: bool, language: str
) -> None:
    rows, history = mixed_rows()
    batch = predictor.score_frame(rows, explain=explain, history=history)
    expected = batch.results(language=language)  # type: ignore[arg-type]
    assert any(result["escalated_by"] for result in expected)  # the fixture exercises every part
    assert any(result["flags"] for result in expected)
    body = json.loads(batch_body(batch, language))  # type: ignore[arg-type]
    assert body == {"model_version": batch.model_version, "count": len(rows), "results": expected}
    for position in (0, 1, 2):  # one plain, one flagged for a category, one for a range
        one = predictor.score_frame(rows.iloc[[position]], explain=explain, history=history)
        assert json.loads(single_body(one, language)) == one.results(language=language)[0]  # type: ignore[arg-type]
