"""Baselines on exactly the model's test rows: would the simple rule a team uses today do as well?

Every baseline is fitted on the final model's rows (train+validation, never a test customer) and scored
on the test rows the model is scored on, so the comparison is paired:

- `recency`: days since the last event of any configured type (events data); for snapshot data the
  column the dataset config names as its recency equivalent (`recency_baseline`, e.g. Telco's tenure).
- `logistic_regression`: the model's own features, numerics standardised (missing values imputed with
  the median, with a missing flag), categoricals one-hot (missing as its own category).
- `bgnbd` and `bgnbd_no_purchase`: for transaction data (every event type a transaction, purchases
  with values, like CDNOW), one BG/NBD fit (training.bgnbd) ranked two ways: fewest expected purchases
  in the horizon, and P(no purchase in the horizon). Never 1 - P(alive), which ranks one-time buyers
  as the safest (0.34 on CDNOW's test rows).
- `pareto_nbd`: for the same data, Pareto/NBD (training.pareto_nbd) fitted on the same calibration
  histories, ranked by fewest expected purchases in the horizon.

A model that does not beat every baseline on both test ROC-AUC and PR-AUC is flagged (training.tune).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churnguard.datasets import DatasetConfig, RecencyBaseline, SnapshotDataset
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN, FeatureSchema
from training.bgnbd import DAYS_PER_WEEK, BgNbd, PurchaseHistory, fit_bgnbd, purchase_history
from training.data import LabData
from training.pareto_nbd import ParetoNbd, fit_pareto_nbd
from training.splits import Split

log = logging.getLogger(__name__)

BASELINE_TAG = "below_baseline"  # parent run and model version tag when a baseline does as well
METRICS = ("roc_auc", "pr_auc")


@dataclass(frozen=True)
class BaselineScore:
    name: str
    description: str  # what it is, for the model card
    roc_auc: float
    pr_auc: float
    rows: int  # test rows scored: the model's own
    # Per test row, higher = more likely to churn: for paired comparisons with the model's probabilities.
    churn_score: np.ndarray | None = field(default=None, repr=False, compare=False)

    def metric(self, name: str) -> float:
        return float(getattr(self, name))


@dataclass
class Baselines:
    scores: list[BaselineScore]
    skipped: dict[str, str]  # baseline name -> why it was not measured on this dataset

    def metrics(self) -> dict[str, float]:
        """`baseline_<name>_test_<metric>`: the parent run's metrics."""
        return {
            f"baseline_{score.name}_test_{metric}": score.metric(metric)
            for score in self.scores
            for metric in METRICS
        }

    def shortfalls(self, model_metrics: dict[str, float]) -> list[str]:
        """Each baseline metric the model does not beat, as 'name metric baseline >= model'."""
        missed = []
        for score in self.scores:
            for metric in METRICS:
                model = model_metrics.get(f"test_{metric}")
                if model is not None and not model > score.metric(metric):
                    missed.append(
                        f"{score.name} {metric.replace('_', '-').upper()} "
                        f"{score.metric(metric):.4f} >= model {model:.4f}"
                    )
        return missed

    def warnings(self, model_metrics: dict[str, float]) -> list[str]:
        missed = self.shortfalls(model_metrics)
        if not missed:
            return []
        return [
            "the model does not beat every baseline on its own test rows: "
            + "; ".join(missed)
            + ". A simpler rule ranks these customers as well or better: find out why (features, "
            "training window, a signal the model cannot see) before promoting it."
        ]

    def card_section(self, model_metrics: dict[str, float]) -> str:
        lines = [
            "## Baselines (fitted on train+validation, scored on the same test rows)",
            "| model | ROC-AUC | PR-AUC |",
            "| --- | --- | --- |",
            f"| this model | {model_metrics.get('test_roc_auc', float('nan')):.4f} "
            f"| {model_metrics.get('test_pr_auc', float('nan')):.4f} |",
            *[f"| {s.name}: {s.description} | {s.roc_auc:.4f} | {s.pr_auc:.4f} |" for s in self.scores],
        ]
        lines += [f"- {name} not measured: {why}" for name, why in self.skipped.items()]
        missed = self.shortfalls(model_metrics)
        lines.append(
            f"- **The model does not beat every baseline**: {'; '.join(missed)}."
            if missed
            else "- The model beats every baseline on both ROC-AUC and PR-AUC."
        )
        return "\n".join(lines) + "\n"


def _score(name: str, description: str, label: np.ndarray, churn_score: np.ndarray) -> BaselineScore:
    return BaselineScore(
        name,
        description,
        float(roc_auc_score(label, churn_score)),
        float(average_precision_score(label, churn_score)),
        len(label),
        np.asarray(churn_score, dtype=float),
    )


# ---------------------------------------------------------------------------------------------- recency


def events_recency(rows: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """Days since the last event of any configured type; a customer with none since signup has been
    silent for their whole tenure, and one without a known signup is ranked most silent."""
    since_last = [spec.name for spec in schema.features if spec.kind == "days_since_last"]
    # NaN (no event of that type yet) must not hide the other types' events.
    days = rows[since_last].to_numpy(dtype=float)
    recency = np.where(np.isnan(days), np.inf, days).min(axis=1, initial=np.inf)
    if "tenure_days" in rows.columns:
        tenure = rows["tenure_days"].to_numpy(dtype=float)
        recency = np.where(np.isinf(recency) & np.isfinite(tenure), tenure, recency)
    finite = recency[np.isfinite(recency)]
    return np.where(np.isfinite(recency), recency, (finite.max() + 1.0) if finite.size else 0.0)


def _snapshot_recency(rows: pd.DataFrame, recency: RecencyBaseline) -> tuple[str, np.ndarray]:
    values = pd.to_numeric(rows[recency.column], errors="coerce").to_numpy(dtype=float)
    values = np.where(np.isnan(values), np.nanmedian(values), values)
    sign = 1.0 if recency.churn_when == "high" else -1.0
    return f"`{recency.column}` alone ({recency.churn_when} values churn)", sign * values


# ---------------------------------------------------------------------------------------------- logistic


def logistic_regression(schema: FeatureSchema, seed: int) -> Pipeline:
    numeric = [spec.name for spec in schema.features if not spec.categorical]
    categorical = schema.categorical_names
    columns = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                numeric,
            ),
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5), categorical),
        ],
        sparse_threshold=0.0,
    )
    return make_pipeline(columns, LogisticRegression(max_iter=2000, random_state=seed))


def _features(rows: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    features = schema.coerce(rows)  # categoricals as text with missing as its own value
    numeric = [spec.name for spec in schema.features if not spec.categorical]
    features[numeric] = features[numeric].replace([np.inf, -np.inf], np.nan)
    return features


# ---------------------------------------------------------------------------------------------- BG/NBD


def _calibration(purchases: pd.DataFrame, final_rows: pd.DataFrame) -> PurchaseHistory:
    """The non-test customers' histories up to the latest train+validation date (one calibration period
    per customer, as in the papers)."""
    latest = final_rows[OBSERVATION_COLUMN].max()
    customers = final_rows.loc[final_rows[OBSERVATION_COLUMN] == latest, ID_COLUMN]
    return purchase_history(purchases, customers, np.full(len(customers), latest))


def _bgnbd(calibration: PurchaseHistory) -> BgNbd:
    model = fit_bgnbd(calibration)
    log.info(
        "baseline bgnbd: r %.4f, alpha %.4f, a %.4f, b %.4f (weeks)", model.r, model.alpha, model.a, model.b
    )
    return model


def _pareto_nbd(calibration: PurchaseHistory) -> ParetoNbd:
    model = fit_pareto_nbd(calibration)
    log.info(
        "baseline pareto_nbd: r %.4f, alpha %.4f, s %.4f, beta %.4f (weeks)",
        *(model.r, model.alpha, model.s, model.beta),
    )
    return model


# ---------------------------------------------------------------------------------------------- all


def measure_baselines(data: LabData, split: Split, config: DatasetConfig, seed: int) -> Baselines:
    table = data.table
    frame, schema = table.frame, table.schema
    final_rows = frame[split.final].reset_index(drop=True)
    test_rows = frame[split.test].reset_index(drop=True)
    label = test_rows[LABEL_COLUMN].to_numpy(dtype=int)
    candidates: dict[str, Callable[[], tuple[str, np.ndarray]]] = {}
    skipped: dict[str, str] = {}

    if table.kind == "events":
        candidates["recency"] = lambda: (
            "days since the last event of any kind",
            events_recency(test_rows, schema),
        )
    elif isinstance(config, SnapshotDataset) and (recency := config.recency_baseline) is not None:
        candidates["recency"] = lambda: _snapshot_recency(test_rows, recency)
    else:
        skipped["recency"] = "a snapshot has no event dates; set `recency_baseline` to name its equivalent"

    def logistic() -> tuple[str, np.ndarray]:
        model = logistic_regression(schema, seed)
        model.fit(_features(final_rows, schema), final_rows[LABEL_COLUMN].to_numpy(dtype=int))
        probability = model.predict_proba(_features(test_rows, schema))[:, 1]
        return "the same features, numerics standardised, categoricals one-hot", probability

    candidates["logistic_regression"] = logistic

    if (purchases := data.purchases) is not None and table.horizon_days:
        horizon = table.horizon_days
        weeks = horizon / DAYS_PER_WEEK
        calibration = cache(lambda: _calibration(purchases, final_rows))
        # The test rows' histories as of their own dates.
        tested = cache(
            lambda: purchase_history(purchases, test_rows[ID_COLUMN], test_rows[OBSERVATION_COLUMN])
        )
        bgnbd = cache(lambda: _bgnbd(calibration()))  # one fit, two rankings
        candidates["bgnbd"] = lambda: (
            f"BG/NBD, fewest expected purchases in {horizon} days",
            -bgnbd().expected_purchases(tested(), weeks),
        )
        candidates["bgnbd_no_purchase"] = lambda: (
            f"BG/NBD P(no purchase in {horizon} days)",
            bgnbd().p_no_purchase(tested(), weeks),
        )
        candidates["pareto_nbd"] = lambda: (
            f"Pareto/NBD, fewest expected purchases in {horizon} days",
            -_pareto_nbd(calibration()).expected_purchases(tested(), weeks),
        )
    elif table.kind == "events":
        skipped["bgnbd"] = "not transaction data (BG/NBD models purchases only; other event types here)"

    scores = []
    for name, baseline in candidates.items():
        try:
            description, churn_score = baseline()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            # A baseline that cannot be fitted on this data must not cost the model; say why instead.
            log.warning("baseline %s not measured: %s", name, error)
            skipped[name] = f"failed: {error}"
            continue
        scores.append(_score(name, description, label, churn_score))
        log.info(
            "baseline %s on the %d test rows: ROC-AUC %.4f, PR-AUC %.4f",
            *(name, len(label), scores[-1].roc_auc, scores[-1].pr_auc),
        )
    return Baselines(scores, skipped)
