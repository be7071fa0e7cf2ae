"""The one scoring path: checked inputs in, prediction-contract results out.

The HTTP service, the offline `churnguard score` command, the daily pass and the monitors all score
through `Predictor`, so a customer gets the same probability, health, tier and reasons wherever they
are scored. What an input may be is decided in `churnguard.inputs`; scoring files in
`churnguard.score_file`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from catboost import Pool

from churnguard.artifact import ModelArtifact
from churnguard.explain import (
    MISSING_CATEGORY,
    Explanations,
    ReasonBuilder,
    ReferenceRanks,
    ShapExplainer,
)
from churnguard.history import ScoreHistory
from churnguard.inputs import (
    DEFAULT_RANGE_TOLERANCE,
    MAX_REPORTED_ERRORS,
    CheckedFrame,
    InputError,
    InputRules,
)
from churnguard.rules import Language, RuleBook, RuleHits
from churnguard.schema import ID_COLUMN
from churnguard.scoring import ScoringConfig, load_scoring_config
from churnguard.value import ValueAssessment, ValueModel

log = logging.getLogger(__name__)

PARALLEL_ROWS = 2_000  # below this many rows CatBoost scores on one thread
RESULT_COLUMNS = (
    "customer_id", "churn_probability", "health_score", "alert_tier", "model_tier", "escalated_by",
    "value_tier", "value_score", "priority", "model_version",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- results


def _json_value(value: object) -> object:
    if value == MISSING_CATEGORY or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@dataclass
class ScoredBatch:
    """Results for a batch of customers, in input order (the prediction contract, column by column)."""

    model_version: str
    customer_ids: list[str]
    probability: np.ndarray
    health: np.ndarray
    tier: np.ndarray
    flags: list[list[dict]]
    feature_names: list[str]
    # What was scored, in schema order (missing categories spelled out): a frame for batches, plain
    # rows for single records (building a one-row frame would cost more than scoring it).
    features: pd.DataFrame | None = None
    feature_rows: list[list[object]] | None = None
    # Early warning: `tier` above is the alert tier after rule escalation; these say how it came about.
    model_tier: np.ndarray | None = None  # the tier the probability alone gives
    rule_hits: RuleHits | None = None
    value: ValueAssessment | None = None
    # SHAP contributions (rows, features) when explained; the reasons and group scores are built from
    # them when first asked for, so a file's writing stage builds them and not its scoring stage.
    contributions: np.ndarray | None = field(default=None, repr=False)
    reason_builder: ReasonBuilder | None = field(default=None, repr=False)
    feature_column: Callable[[int], Sequence[object]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.customer_ids)

    @functools.cached_property
    def explanations(self) -> Explanations | None:
        """The top reasons of every customer (None without explanations)."""
        if self.contributions is None or self.reason_builder is None or self.feature_column is None:
            return None
        return self.reason_builder.explain(self.contributions, self.feature_column)

    @property
    def group_names(self) -> list[str]:
        return self.reason_builder.group_names if self.reason_builder is not None else []

    @functools.cached_property
    def group_scores(self) -> np.ndarray | None:
        """(rows, groups) 0-100 sub-scores, columns following `group_names` (None without explanations)."""
        if self.contributions is None or self.reason_builder is None:
            return None
        return self.reason_builder.group_scores(self.contributions)

    @functools.cached_property
    def reasons(self) -> list[list[dict]] | None:
        """Rule hits then the model's top drivers, per customer, in English (None without explanations)."""
        return self.reasons_in("en")

    def reasons_in(self, language: Language) -> list[list[dict]] | None:
        if self.explanations is None:
            return None
        drivers = self.explanations.dicts(language)
        if self.rule_hits is None:
            return drivers
        return [rules + row for rules, row in zip(self.rule_hits.reasons(language), drivers, strict=True)]

    def reason_lines(self, language: Language = "en") -> list[str]:
        """Per customer, the rule reasons then the model's drivers as one JSON array: the service's
        answers embed them as raw JSON."""
        return self.reason_array(language).to_pylist()

    def reason_array(self, language: Language = "en") -> pa.Array:
        """`reason_lines` as an Arrow string array: the files' reasons columns."""
        assert self.explanations is not None
        hits = self.rule_hits
        first = hits.reasons_json(language) if hits is not None and hits.hits.any() else None
        return self.explanations.json_array(language, first)

    def escalated_by(self) -> list[list[str]]:
        return (
            self.rule_hits.escalated_by() if self.rule_hits is not None else [[] for _ in self.customer_ids]
        )

    def results(self, language: Language = "en") -> list[dict]:
        """One prediction-contract dict per customer (the service encodes the same documents
        column-wise: service.payloads)."""
        rows = len(self)
        reasons = groups = None
        if self.explanations is not None:
            reasons = self.reasons if language == "en" else self.reasons_in(language)
            names = self.group_names
            groups = [dict(zip(names, g, strict=True)) for g in self.group_scores.tolist()]  # type: ignore[union-attr]
        version = self.model_version
        model_tier = self.model_tier if self.model_tier is not None else self.tier
        value = self.value
        value_tier = value.tier.tolist() if value is not None else [None] * rows
        value_score = (
            [None if math.isnan(v) else v for v in value.score.tolist()]
            if value is not None
            else [None] * rows
        )
        priority = value.priority.tolist() if value is not None else [None] * rows
        return [
            {
                "customer_id": customer_id,
                "churn_probability": p,
                "health_score": h,
                "alert_tier": t,
                "model_tier": mt,
                "escalated_by": e,
                "value_tier": vt,
                "value_score": vs,
                "priority": pr,
                "reasons": r,
                "group_scores": g,
                "flags": f,
                "model_version": version,
            }
            for customer_id, p, h, t, mt, e, vt, vs, pr, r, g, f in zip(
                self.customer_ids,
                self.probability.tolist(),
                self.health.tolist(),
                self.tier.tolist(),
                model_tier.tolist(),
                self.escalated_by(),
                value_tier,
                value_score,
                priority,
                reasons if reasons is not None else [None] * rows,
                groups if groups is not None else [None] * rows,
                self.flags,
                strict=True,
            )
        ]

    def input_records(self) -> list[dict]:
        """What was scored, per customer, as JSON-ready dicts (missing values as null)."""
        if self.feature_rows is not None:
            rows = self.feature_rows
        elif self.features is not None:
            rows = self.features.to_numpy(dtype=object).tolist()
        else:
            return [{} for _ in self.customer_ids]
        names = self.feature_names
        return [dict(zip(names, map(_json_value, row), strict=True)) for row in rows]

    def to_frame(self, explain_columns: bool = True, language: Language = "en") -> pd.DataFrame:
        """Results as a frame: the contract's columns, reasons/flags as JSON text, one column per group."""
        out = pd.DataFrame(
            {
                "customer_id": self.customer_ids,
                "churn_probability": self.probability,
                "health_score": self.health.astype("int64"),
                "alert_tier": self.tier.astype(object),
                "model_tier": (self.model_tier if self.model_tier is not None else self.tier).astype(object),
                "escalated_by": [json.dumps(codes) if codes else None for codes in self.escalated_by()],
                "value_tier": self.value.tier if self.value is not None else None,
                "value_score": self.value.score if self.value is not None else np.nan,
                "priority": self.value.priority if self.value is not None else None,
                "model_version": self.model_version,
            }
        )
        if explain_columns and self.explanations is not None and self.group_scores is not None:
            out["reasons"] = self.reason_array(language).to_numpy(zero_copy_only=False)
            for column, name in enumerate(self.group_names):
                out[f"group_score_{name}"] = self.group_scores[:, column].astype("int64")
        out["flags"] = [json.dumps(f) if f else None for f in self.flags]
        return out


# --------------------------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded model that scores checked inputs: probability, health, tier, reasons, group scores."""

    def __init__(
        self,
        artifact: ModelArtifact,
        model_version: str,
        *,
        top_reasons: int = 3,
        range_tolerance: float = DEFAULT_RANGE_TOLERANCE,
        thread_count: int = -1,
        scoring: ScoringConfig | None = None,
    ) -> None:
        """`scoring`: the early-warning rules and value weights (default: configs/scoring.yaml)."""
        scoring = scoring if scoring is not None else load_scoring_config()
        self.artifact = artifact
        self.model_version = str(model_version)
        self.schema = artifact.schema
        self.contract = artifact.contract
        self.thread_count = thread_count
        self.rules = InputRules(self.schema, range_tolerance)
        self.cat_indices = [i for i, spec in enumerate(self.schema.features) if spec.categorical]
        reference = self.rules.check_frame(_reference_frame(artifact), allow_extra=True).only_valid()
        self.explainer = ShapExplainer(artifact.model, self.cat_indices, thread_count).prepare(
            reference.features
        )
        self.reasons = ReasonBuilder(
            self.schema,
            top_reasons,
            self.explainer.expected_value,
            self.health_from_raw,
            ReferenceRanks.from_frame(self.schema, artifact.reference),
        )
        self.rule_book = RuleBook(scoring.rules, scoring.escalation, self.schema)
        self.value_model = ValueModel(scoring.value, self.schema, artifact.reference)
        self._position = {name: j for j, name in enumerate(self.schema.names)}

    @classmethod
    def load(cls, directory: Path, model_version: str, **options: object) -> Predictor:
        """Load and check an artifact folder (raises churnguard.artifact.ContractError)."""
        return cls(ModelArtifact.load(Path(directory)), model_version, **options)  # type: ignore[arg-type]

    @property
    def explain_method(self) -> str:
        return self.explainer.method

    # ------------------------------------------------------------------------------ probability

    def probability_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.contract.calibration.apply(1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=float))))

    def health_from_raw(self, raw: np.ndarray) -> np.ndarray:
        return self.artifact.health(self.probability_from_raw(raw))

    # ---------------------------------------------------------------------------------- scoring

    def score_record(
        self, record: Mapping[str, object], explain: bool = True, history: ScoreHistory | None = None
    ) -> ScoredBatch:
        """One customer from a JSON-like record (the fast single-request path); raises InputError.

        `history`: past health scores for history rules (none given: those rules cannot fire)."""
        values, customer_id, flags, errors = self.rules.check_record(record)
        if errors:
            raise InputError(errors)
        # An array is cheaper than a list; one thread: a pool of one row has nothing to share out.
        pool = Pool(np.array([values], dtype=object), cat_features=self.cat_indices, thread_count=1)
        batch = self._score_pool(pool, [customer_id], [flags], lambda j: [values[j]], explain, history)
        batch.feature_rows = [values]
        return batch

    def score_frame(
        self,
        frame: pd.DataFrame,
        explain: bool = True,
        allow_extra: bool = False,
        history: ScoreHistory | None = None,
    ) -> ScoredBatch:
        """Score a whole frame; raises InputError naming every bad row (0-based) and field."""
        checked = self.rules.check_frame(frame, allow_extra=allow_extra)
        if checked.errors:
            raise InputError(checked.errors[:MAX_REPORTED_ERRORS], total=len(checked.errors))
        return self.score_checked(checked, explain, history)

    def score_checked(
        self, checked: CheckedFrame, explain: bool = True, history: ScoreHistory | None = None
    ) -> ScoredBatch:
        """Score the valid rows of a checked frame (the caller decides what to do with the others)."""
        checked = checked.only_valid()
        features = checked.features
        pool = Pool(features, cat_features=self.cat_indices)
        names = self.schema.names
        batch = self._score_pool(
            pool,
            checked.customer_ids,
            checked.flags,
            lambda j: features[names[j]].to_numpy(),  # native dtype: only chosen rows are gathered
            explain,
            history,
            numbers=lambda name: features[name].to_numpy(dtype=float),  # float64 already: no copy
        )
        batch.features = features
        return batch

    def _threads(self, rows: int) -> int:
        # Spinning up CatBoost's thread pool costs more than a small batch takes on one thread.
        return 1 if rows < PARALLEL_ROWS else self.thread_count

    def _score_pool(
        self,
        pool: Pool,
        customer_ids: list[str],
        flags: list[list[dict]],
        column: Callable[[int], Sequence[object]],
        explain: bool,
        history: ScoreHistory | None = None,
        numbers: Callable[[str], np.ndarray] | None = None,
    ) -> ScoredBatch:
        """`column(j)`: feature j's values as scored, for reasons; `numbers(name)`: a numeric feature's
        values as floats, for rules and value (default: from `column`)."""
        threads = self._threads(len(customer_ids))
        if explain:
            raw, contributions = self.explainer.explain(pool, threads)
        else:
            raw, contributions = self.explainer.raw(pool, len(customer_ids), threads), None
        probability = self.probability_from_raw(raw)
        health = self.artifact.health(probability)
        model_tier = self.artifact.tiers(probability)

        if numbers is None:
            position = self._position
            numbers = lambda name: np.asarray(column(position[name]), dtype=float)  # noqa: E731

        past = None
        if history is not None:
            past = lambda window, rows: history.reference_health([customer_ids[i] for i in rows], window)  # noqa: E731
        hits = self.rule_book.evaluate(numbers, health, model_tier, past)
        batch = ScoredBatch(
            model_version=self.model_version,
            customer_ids=customer_ids,
            probability=probability,
            health=health,
            tier=hits.tier,
            flags=flags,
            feature_names=self.schema.names,
            model_tier=model_tier,
            rule_hits=hits,
            value=self.value_model.assess(numbers, hits.tier),
        )
        if contributions is not None:
            batch.contributions, batch.reason_builder, batch.feature_column = (
                contributions,
                self.reasons,
                column,
            )
        return batch

    def warm_up(self) -> None:
        """Score a few reference rows so the first real request does not pay one-off costs."""
        sample = self.rules.check_frame(
            _reference_frame(self.artifact).head(8), allow_extra=True
        ).only_valid()
        if len(sample):
            self.score_checked(sample, explain=True)
            self.score_checked(sample, explain=False)

    def metadata(self) -> dict[str, object]:
        """What the service says about the model it serves."""
        contract = self.contract
        return {
            "model_name": contract.model_name,
            "model_version": self.model_version,
            "created_at": contract.created_at,
            "dataset": contract.dataset,
            "dataset_kind": contract.dataset_kind,
            "dataset_hash": contract.dataset_hash,
            "horizon_days": contract.horizon_days,
            "training_window": contract.training_window,
            "metrics": contract.metrics,
            "thresholds": contract.thresholds.model_dump(),
            "health_mapping": contract.health.model_dump(),
            "calibration": contract.calibration.method,
            "code_version": contract.code_version,
            "explain_method": self.explain_method,
            "reasons_top": self.reasons.top,
            "rules": self.rule_book.describe(),
            "value": self.value_model.describe(),
            "range_tolerance": self.rules.tolerance,
            "feature_schema": [
                {
                    **spec.model_dump(),
                    "accepted_range": (
                        [accepted.low, accepted.high]
                        if (accepted := self.rules.ranges.get(spec.name))
                        else None
                    ),
                }
                for spec in self.schema.features
            ],
        }


def _reference_frame(artifact: ModelArtifact) -> pd.DataFrame:
    reference = artifact.reference
    frame = reference[[name for name in artifact.schema.names if name in reference.columns]].copy()
    frame[ID_COLUMN] = (
        reference[ID_COLUMN].astype(str)
        if ID_COLUMN in reference.columns
        else [str(i) for i in range(len(frame))]
    )
    return frame
