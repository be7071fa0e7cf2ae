"""Offline scoring (`churnguard score`): Parquet and CSV in chunks, same results as the service path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.predict import Predictor
from churnguard.score_file import score_file


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(telco_artifact_dir(), "local")


def test_parquet_in_chunks_scores_every_row_like_the_predictor(tmp_path, predictor: Predictor) -> None:
    rows = telco_rows(2500, seed=5).assign(label=0)  # an extra column is ignored offline
    source = tmp_path / "customers.parquet"
    rows.to_parquet(source, index=False)
    summary = score_file(str(telco_artifact_dir()), source, tmp_path / "scores.parquet", chunk_rows=700)
    out = pd.read_parquet(tmp_path / "scores.parquet")
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (2500, 2500, 0)
    assert summary.errors_path is None and not (tmp_path / "scores.parquet.errors.csv").exists()
    assert out["row_number"].tolist() == list(range(1, 2501))
    assert out["customer_id"].tolist() == rows["customer_id"].tolist()
    expected = predictor.score_frame(rows, explain=False, allow_extra=True)
    np.testing.assert_allclose(out["churn_probability"], expected.probability, atol=1e-12)
    assert out["alert_tier"].tolist() == expected.tier.tolist()
    assert sum(summary.tiers.values()) == 2500
    assert "reasons" not in out.columns


def test_csv_bad_rows_are_reported_by_row_number_not_dropped(tmp_path, predictor: Predictor) -> None:
    rows = telco_rows(40, seed=6)
    text = rows.to_csv(index=False).splitlines()
    # Data row 5 (file line 6) gets text in a number; data row 17 a negative tenure.
    cells = text[5].split(",")
    cells[rows.columns.get_loc("MonthlyCharges")] = "lots"
    text[5] = ",".join(cells)
    cells = text[17].split(",")
    cells[rows.columns.get_loc("tenure")] = "-3"
    text[17] = ",".join(cells)
    source = tmp_path / "customers.csv"
    source.write_text("\n".join(text) + "\n")
    summary = score_file(
        str(telco_artifact_dir()), source, tmp_path / "scores.csv", chunk_rows=16, explain=True
    )
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (40, 38, 2)
    errors = pd.read_csv(summary.errors_path)
    assert errors[["row_number", "field"]].values.tolist() == [[5, "MonthlyCharges"], [17, "tenure"]]
    assert errors["customer_id"].tolist() == [rows["customer_id"][4], rows["customer_id"][16]]
    out = pd.read_csv(tmp_path / "scores.csv", dtype={"customer_id": str})
    assert 5 not in out["row_number"].tolist() and len(out) == 38
    reasons = json.loads(out["reasons"][0])
    assert len(reasons) == 3 and {"code", "feature", "group", "value", "impact", "message"} <= set(reasons[0])
    group_columns = [c for c in out.columns if c.startswith("group_score_")]
    assert sorted(group_columns) == sorted(f"group_score_{g}" for g in predictor.schema.by_group())
    good = rows.drop(index=[4, 16]).reset_index(drop=True)
    expected = predictor.score_frame(good, explain=False)
    np.testing.assert_allclose(out["churn_probability"], expected.probability, atol=1e-12)


def test_missing_feature_column_stops_before_scoring(tmp_path) -> None:
    source = tmp_path / "customers.parquet"
    telco_rows(10).drop(columns=["Contract"]).to_parquet(source)
    with pytest.raises(ValueError, match="Contract: missing column"):
        score_file(str(telco_artifact_dir()), source, tmp_path / "out.parquet")
