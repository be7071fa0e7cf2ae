"""The CRM lead-time references in benchmarks/lab.py: who can be alerted 30+ days ahead at all, and how
many an ordering of the test rows reaches under the default capacity policy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from lab import CrmRows, alerted_30d_ahead, reachable_30d_ahead

FIRST, SECOND = pd.Timestamp("2025-08-29"), pd.Timestamp("2025-09-28")


@pytest.fixture
def rows() -> CrmRows:
    """Ten customers at two test dates: `late` churns 78 days after the first date, `soon` 12 days
    after it (no alert on these rows can be 30 days ahead), the others stay."""
    ids = ["late", "soon", *(f"stays{i}" for i in range(8))]
    churn = pd.Series([SECOND + pd.Timedelta(days=48), FIRST + pd.Timedelta(days=12)], index=ids[:2])
    frame = pd.DataFrame(
        {
            "customer_id": ids + ids[:1] + ids[2:],  # `soon` has left by the second date
            "observation_date": [FIRST] * 10 + [SECOND] * 9,
        }
    )
    frame["label"] = frame["customer_id"].isin(["late", "soon"]).astype(int)
    test = np.ones(len(frame), dtype=bool)
    return CrmRows(frame, frame[[]], [], ~test, test, churn)


def test_only_churners_leaving_30_days_after_their_first_test_date_are_reachable(rows: CrmRows) -> None:
    assert reachable_30d_ahead(rows) == 0.5


def test_the_capacity_share_goes_to_the_highest_scores(rows: CrmRows) -> None:
    # The default capacity alerts 20% of 19 rows: the 3 highest scores.
    late_first = np.where((rows.frame["customer_id"] == "late") & (rows.frame["observation_date"] == FIRST))
    score = np.zeros(len(rows.frame))
    score[late_first] = 1.0
    assert alerted_30d_ahead(rows, score) == 0.5  # `late` warned 78 days ahead, `soon` never

    customer = rows.frame["customer_id"].to_numpy()
    soon_first = np.select([customer == "soon", customer == "late"], [1.0, -1.0], 0.0)
    assert alerted_30d_ahead(rows, soon_first) == 0.0  # `soon` warned 12 days ahead: too late to count
