"""The monitoring policy (`configs/monitoring.yaml`): how drift is tested, how quality is judged once
labels mature, and when to retrain. Override any key with `CHURNGUARD_MONITORING__<KEY>__<SUBKEY>`.

Drift verdicts combine two questions per column, because each alone misleads:
- is the shift *real*? a two-sample test whose p-value is corrected for the number of columns tested
  (Bonferroni), so the chance of any false alarm on an unchanged window stays near `alpha`;
- is it *big enough to matter*? an effect size above a floor (normed Wasserstein distance for numbers,
  Jensen-Shannon distance for categories), so huge samples do not flag trivial shifts.
A column drifts when both say yes, or when unseen categories or missing values jump past their limits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from churnguard.config import StrictModel, load_named

# Evidently stattest names that return a p-value (drift when below the threshold) and those that return
# a distance (drift when at or above it). `chi2_two_sample` is ours (monitoring.stattests).
PValueMethod = Literal["ks", "chi2_two_sample", "chisquare", "z", "mannw", "cramer_von_mises", "anderson"]
DistanceMethod = Literal["wasserstein", "jensenshannon", "psi", "hellinger", "kl_div", "TVD"]
P_VALUE_METHODS: frozenset[str] = frozenset(PValueMethod.__args__)  # type: ignore[attr-defined]


class ColumnTest(StrictModel):
    """Significance test and effect-size floor for one kind of column."""

    test: PValueMethod
    effect: DistanceMethod
    effect_threshold: float = Field(gt=0, description="drift needs an effect at least this large")


class DatasetDriftRule(StrictModel):
    min_drifted_features: int = Field(
        1, ge=1, description="dataset drift when at least this many features drift (tests are FWER-corrected)"
    )
    drift_share: float = Field(
        0.3, gt=0, le=1, description="... or when at least this share of features drifts"
    )


class DriftPolicy(StrictModel):
    min_rows: int = Field(500, ge=1, description="fewer current rows: 'insufficient data', no verdict")
    max_rows: int = Field(
        200_000, ge=1000, description="rows per side above this are sampled (noted in the report)"
    )
    seed: int = 0
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise false-alarm rate over all columns")
    correction: Literal["bonferroni", "none"] = "bonferroni"
    numeric: ColumnTest = ColumnTest(test="ks", effect="wasserstein", effect_threshold=0.1)
    categorical: ColumnTest = ColumnTest(test="chi2_two_sample", effect="jensenshannon", effect_threshold=0.1)
    per_feature: dict[str, ColumnTest] = {}
    dataset: DatasetDriftRule = DatasetDriftRule()
    prediction: bool = Field(True, description="test the predicted probability and the tier mix")
    new_category_share: float = Field(
        0.01, gt=0, le=1, description="a feature drifts when this share of rows has categories never seen"
    )
    missing_increase: float = Field(
        0.1, gt=0, le=1, description="a feature drifts when its missing share rises by this much (absolute)"
    )
    dashboard_features: int = Field(8, ge=0, description="most important features plotted in the workspace")

    def test_for(self, feature: str, categorical: bool) -> ColumnTest:
        if feature in self.per_feature:
            return self.per_feature[feature]
        return self.categorical if categorical else self.numeric


class QualityPolicy(StrictModel):
    cohort: Literal["D", "W", "M"] = Field("W", description="scoring cohorts: day, week or month")
    min_labelled: int = Field(50, ge=1, description="fewer matured labels in a cohort: no realized metrics")
    ece_bins: int = Field(10, ge=2, le=100)
    simulations: int = Field(300, ge=20, le=5000, description="label draws for expected AUC/precision bands")
    seed: int = 0
    horizon_days: int | None = Field(None, gt=0, description="label horizon; default: the model's")


class RetrainTriggers(StrictModel):
    drift_on_important_features: bool = True
    important_features: int = Field(10, ge=1, description="top features by model importance")
    prediction_drift: bool = True
    auc_drop: float = Field(0.05, gt=0, lt=1, description="realized AUC below the model's test AUC by this")
    max_ece: float = Field(0.08, gt=0, lt=1, description="realized expected calibration error above this")
    max_model_age_days: int = Field(90, ge=1)


class RetrainPolicy(StrictModel):
    triggers: RetrainTriggers = RetrainTriggers()
    trials: int = Field(20, ge=1, description="Optuna trials of the retraining study")
    timeout_seconds: int | None = Field(1800, ge=1)
    seed: int = 0


class MonitoringConfig(StrictModel):
    model: str = Field("models:/churn-crm@champion", description="model watched when --model is not given")
    experiment: str = Field("churnguard-monitoring", description="MLflow experiment of monitoring runs")
    workspace: str = Field("evidently", description="Evidently workspace folder, relative to the state dir")
    drift: DriftPolicy = DriftPolicy()
    quality: QualityPolicy = QualityPolicy()
    retrain: RetrainPolicy = RetrainPolicy()

    @model_validator(mode="after")
    def _relative_workspace(self) -> MonitoringConfig:
        if not self.workspace.strip():
            raise ValueError("workspace must name a folder")
        return self


def load_monitoring_config(environ: dict[str, str] | None = None) -> MonitoringConfig:
    return load_named(MonitoringConfig, "monitoring", environ)
