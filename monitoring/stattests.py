"""A two-sample chi-square test registered with Evidently.

Evidently's `chisquare` is a goodness-of-fit test: it takes the reference shares as the truth and so
ignores that the reference is itself a sample. With a few thousand reference rows and many current rows
that inflates false alarms badly. The test of homogeneity below treats both samples as random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests.registry import (
    StatTest,
    _registered_stat_tests,
    register_stattest,
)
from evidently.legacy.core import ColumnType
from scipy.stats import chi2_contingency

CHI2_TWO_SAMPLE = "chi2_two_sample"


def chi2_two_sample_p_value(reference: pd.Series, current: pd.Series) -> float:
    """p-value of the chi-square test that both samples come from one categorical distribution."""
    counts = pd.concat(
        [reference.astype(str).value_counts(), current.astype(str).value_counts()], axis=1
    ).fillna(0)
    table = counts.to_numpy(dtype=float).T
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=False)[1])


def _chi2_two_sample(
    reference_data: pd.Series, current_data: pd.Series, feature_type: ColumnType, threshold: float
) -> tuple[float, bool]:
    p_value = chi2_two_sample_p_value(reference_data, current_data)
    return p_value, bool(np.less(p_value, threshold))


chi2_two_sample_test = StatTest(
    name=CHI2_TWO_SAMPLE,
    display_name="chi-square two-sample (homogeneity) p_value",
    allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical],
    default_threshold=0.05,
)


def register_stattests() -> None:
    """Make our tests known to Evidently by name; idempotent, called before building a report."""
    if CHI2_TWO_SAMPLE not in _registered_stat_tests:
        register_stattest(chi2_two_sample_test, default_impl=_chi2_two_sample)
