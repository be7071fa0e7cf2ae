"""The service's JSON answers are the same documents as `ScoredBatch.results` gives: the column-wise
encoder (results and reasons built slot by slot, a batch's phrases looked up per distinct value) must
never drift from the dict path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pandas as pd
import pytest
from model_fixtures import telco_artifact_dir, telco_customers, telco_rows

from churnguard.explain import FEW_ROWS
from churnguard.history import FrameHistory
from churnguard.predict import Predictor
from service.payloads import RequestCodec, batch_body, single_body


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "local")


def mixed_rows() -> tuple[pd.DataFrame, FrameHistory]:
    """Rows with every optional part of an answer: unknown categories and out-of-range values
    (flags), a health drop in the score history (escalation, a rule reason), missing values."""
    rows = telco_rows(FEW_ROWS + 21, seed=9)  # a batch gathers phrases column-wise; one row looks up
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


@pytest.mark.parametrize("case", ["known", "unseen_category", "integer_category"])
def test_json_batch_decodes_to_what_the_frame_checks_give(predictor: Predictor, case: str) -> None:
    """The JSON batch decoder (known categories without a string per value; anything else through the
    general decoder) hands the input checks what a frame of the same rows gives them."""
    customers = telco_customers(200, seed=3)
    if case == "unseen_category":
        customers[5]["Contract"] = "Biennial"
    if case == "integer_category":
        customers[7]["SeniorCitizen"] = 1  # a whole number for a categorical reads as its text
    body = json.dumps({"customers": customers, "explain": False}).encode()
    codec = RequestCodec(predictor.rules, 10_000)
    if case != "unseen_category":
        codec._known_decoder.decode(body)  # the fast decoder takes it
    else:
        with pytest.raises(msgspec.ValidationError):  # the general decoder takes over
            codec._known_decoder.decode(body)
    decoded = predictor.rules.check_frame(codec.batch_json(body).frame)
    frame = pd.DataFrame(customers).astype({"SeniorCitizen": str})
    expected = predictor.rules.check_frame(frame)
    pd.testing.assert_frame_equal(decoded.features, expected.features, check_categorical=False)
    assert decoded.customer_ids == expected.customer_ids
    assert decoded.flags == expected.flags and not decoded.errors
    if case == "unseen_category":
        assert decoded.flags[5] == [{"code": "unknown_category", "field": "Contract"}]
    if case == "integer_category":
        assert decoded.features["SeniorCitizen"][7] == "1"
