"""Drift checks with Evidently 0.7: a verdict per column under the policy, and the report that shows it.

Each column is judged with two of Evidently's stat tests: the significance test at the corrected level
and the effect size against its floor. Unseen categories and missing values are measured exactly against
the model's schema. The report then shows, per column, Evidently's `ValueDrift` with the effect size (its
widget says "detected" at the floor), plus `MissingValueCount` and `OutListValueCount` where they apply;
drifted columns come first. Verdicts are computed without rendering, so the detection benchmark can run
them many times; the report's plots are what costs time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.legacy.calculations.stattests.registry import get_registered_stattest
from evidently.legacy.core import ColumnType
from evidently.metrics import MissingValueCount, OutListValueCount, ValueDrift

from churnguard.schema import FeatureSchema
from monitoring.inputs import PREDICTION, TIER
from monitoring.policy import P_VALUE_METHODS, ColumnTest, DriftPolicy
from monitoring.stattests import register_stattests

log = logging.getLogger(__name__)

TIER_TEST = ColumnTest(test="chi2_two_sample", effect="jensenshannon", effect_threshold=0.1)


@dataclass
class ColumnDrift:
    column: str
    role: Literal["feature", "prediction"]
    dtype: Literal["numeric", "categorical"]
    group: str | None
    test_method: str
    p_value: float | None  # None: not testable (no values on one side)
    p_threshold: float
    effect_method: str
    effect: float | None
    effect_threshold: float
    missing_share_reference: float
    missing_share_current: float
    new_categories: list[str] = field(default_factory=list)
    new_category_share: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drifted"] = self.drifted
        return data


@dataclass
class DriftChecks:
    columns: list[ColumnDrift]
    p_threshold: float  # per-test level after the multiple-testing correction
    tested_columns: int
    snapshot: Snapshot | None  # None when only the verdict was asked for

    @property
    def features(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.role == "feature"]

    @property
    def drifted_features(self) -> list[ColumnDrift]:
        return [c for c in self.features if c.drifted]

    @property
    def prediction(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.role == "prediction"]


def _missing_share(values: pd.Series) -> float:
    return float(values.isna().mean()) if len(values) else 0.0


def _unseen(values: pd.Series, known: list[str] | None) -> tuple[list[str], float]:
    """Categories absent from the schema (learned on training data) and the share of rows carrying them."""
    if known is None or not len(values):
        return [], 0.0
    present = values.dropna()
    mask = ~present.isin(set(known))
    if not mask.any():
        return [], 0.0
    counts = present[mask].value_counts()
    return [str(name) for name in counts.index[:20]], float(mask.sum() / len(values))


Plan = list[tuple[str, Literal["feature", "prediction"], bool, ColumnTest, str | None]]


def _plan(schema: FeatureSchema, policy: DriftPolicy, current: pd.DataFrame) -> Plan:
    plan: Plan = [
        (spec.name, "feature", spec.categorical, policy.test_for(spec.name, spec.categorical), spec.group)
        for spec in schema.features
    ]
    if policy.prediction and PREDICTION in current.columns:
        plan = [
            (PREDICTION, "prediction", False, policy.numeric, None),
            (TIER, "prediction", True, TIER_TEST, None),
            *plan,
        ]
    return plan


def _statistic(method: str, categorical: bool, reference: pd.Series, current: pd.Series) -> float:
    """One of Evidently's registered stat tests, by name, on the non-missing values."""
    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    if not categorical:
        reference = reference.replace([np.inf, -np.inf], np.nan)
        current = current.replace([np.inf, -np.inf], np.nan)
    test = get_registered_stattest(method, kind)
    return float(test(reference.dropna(), current.dropna(), kind, None).drift_score)


def judge_columns(
    reference: pd.DataFrame, current: pd.DataFrame, schema: FeatureSchema, policy: DriftPolicy
) -> tuple[list[ColumnDrift], float, int]:
    """Verdict per column; returns (columns, per-test p-value threshold, number of tested columns)."""
    register_stattests()
    plan = _plan(schema, policy, current)
    testable = {name for name, *_ in plan if reference[name].notna().any() and current[name].notna().any()}
    level = policy.alpha / len(testable) if policy.correction == "bonferroni" and testable else policy.alpha
    results = []
    for name, role, categorical, rule, group in plan:
        p_value = effect = None
        if name in testable:
            p_value = _statistic(rule.test, categorical, reference[name], current[name])
            effect = _statistic(rule.effect, categorical, reference[name], current[name])
        known = schema[name].categories if categorical and name in schema.names else None
        new_categories, new_share = _unseen(current[name], known)
        column = ColumnDrift(
            column=name,
            role=role,
            dtype="categorical" if categorical else "numeric",
            group=group,
            test_method=rule.test,
            p_value=p_value,
            p_threshold=level,
            effect_method=rule.effect,
            effect=effect,
            effect_threshold=rule.effect_threshold,
            missing_share_reference=_missing_share(reference[name]),
            missing_share_current=_missing_share(current[name]),
            new_categories=new_categories,
            new_category_share=new_share,
        )
        column.reasons = _reasons(column, policy)
        results.append(column)
    return results, level, len(testable)


def build_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[ColumnDrift],
    schema: FeatureSchema,
    metadata: dict[str, str] | None = None,
    tags: list[str] | None = None,
) -> Snapshot:
    """Evidently's report of the judged columns: predictions, then drifted features, then the rest."""
    ordered = sorted(columns, key=lambda c: (c.role != "prediction", not c.drifted))
    metrics: list[Any] = []
    for column in ordered:
        if column.effect is not None:
            metrics.append(
                ValueDrift(
                    column=column.column, method=column.effect_method, threshold=column.effect_threshold
                )
            )
        if column.missing_share_reference or column.missing_share_current:
            metrics.append(MissingValueCount(column=column.column))
        if column.new_categories:
            known = list(schema[column.column].categories or [])
            metrics.append(OutListValueCount(column=column.column, values=known))
    names = [c.column for c in columns]
    definition = DataDefinition(
        numerical_columns=[c.column for c in columns if c.dtype == "numeric"],
        categorical_columns=[c.column for c in columns if c.dtype == "categorical"],
    )
    return Report(metrics, metadata=metadata or {}, tags=tags or []).run(
        Dataset.from_pandas(current[names], data_definition=definition),
        Dataset.from_pandas(reference[names], data_definition=definition),
    )


def run_checks(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: FeatureSchema,
    policy: DriftPolicy,
    metadata: dict[str, str] | None = None,
    tags: list[str] | None = None,
    report: bool = True,
) -> DriftChecks:
    """Judge every column and (unless `report` is False) build the Evidently report."""
    columns, level, tested = judge_columns(reference, current, schema, policy)
    log.info(
        "drift: %s columns (%s testable), %s current vs %s reference rows, per-test level %.2g",
        len(columns),
        tested,
        f"{len(current):,}",
        f"{len(reference):,}",
        level,
    )
    snapshot = build_report(reference, current, columns, schema, metadata, tags) if report else None
    return DriftChecks(columns, level, tested, snapshot)


def _significant(p_value: float | None, method: str, threshold: float) -> bool:
    if p_value is None or math.isnan(p_value):
        return False
    return p_value < threshold if method in P_VALUE_METHODS else p_value >= threshold


def _reasons(column: ColumnDrift, policy: DriftPolicy) -> list[str]:
    reasons = []
    if _significant(column.p_value, column.test_method, column.p_threshold) and (
        column.effect is not None and column.effect >= column.effect_threshold
    ):
        reasons.append("distribution shift")
    if column.new_category_share >= policy.new_category_share:
        reasons.append(f"new categories in {column.new_category_share:.1%} of rows")
    increase = column.missing_share_current - column.missing_share_reference
    if increase >= policy.missing_increase:
        reasons.append(f"missing values up {increase:.1%}")
    return reasons
