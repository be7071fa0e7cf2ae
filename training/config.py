"""The lab's configuration (`configs/training.yaml`): splits, search space, final fit, evaluation and
the promotion gate. Override any key with `CHURNGUARD_TRAINING__<KEY>__<SUBKEY>=value`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from churnguard.config import StrictModel, load_named

Choice = str | int | float | bool | None


class IntRange(StrictModel):
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.high < self.low:
            raise ValueError(f"`high` ({self.high}) is below `low` ({self.low})")
        return self


class FloatRange(StrictModel):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.high < self.low:
            raise ValueError(f"`high` ({self.high}) is below `low` ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs `low` > 0")
        return self


class Choices(StrictModel):
    choices: list[Choice] = Field(min_length=1)


class SearchSpace(StrictModel):
    """CatBoost parameters the search tunes; `iterations` is the ceiling early stopping works under."""

    depth: IntRange = IntRange(low=2, high=6)
    learning_rate: FloatRange = FloatRange(low=0.02, high=0.15, log=True)
    l2_leaf_reg: FloatRange = FloatRange(low=1.0, high=100.0, log=True)
    iterations: IntRange = IntRange(low=2000, high=2000)
    border_count: Choices = Choices(choices=[32, 64, 128, 254])
    random_strength: FloatRange = FloatRange(low=0.0, high=5.0)
    bagging_temperature: FloatRange = FloatRange(low=0.0, high=3.0)
    auto_class_weights: Choices = Choices(choices=[None, "Balanced", "SqrtBalanced"])

    @model_validator(mode="after")
    def _known_class_weights(self) -> SearchSpace:
        unknown = [c for c in self.auto_class_weights.choices if c not in (None, "Balanced", "SqrtBalanced")]
        if unknown:
            raise ValueError(
                f"auto_class_weights choices must be null, Balanced or SqrtBalanced, not {unknown}"
            )
        return self


class PruningConfig(StrictModel):
    """Cross-validated trials report their running mean after each fold and may stop after any fold but
    the last; holdout trials report every `report_every` iterations after `warmup_iterations`."""

    enabled: bool = True
    startup_trials: int = Field(3, ge=0, description="trials that always run to the end")
    warmup_iterations: int = Field(50, ge=0, description="holdout: iterations before a trial may be pruned")
    report_every: int = Field(10, ge=1, description="holdout: report every N iterations")


class SearchConfig(StrictModel):
    trials: int = Field(20, ge=1, description="trial budget of a study (shared by all its workers)")
    metric: Literal["AUC", "PRAUC", "Logloss"] = "AUC"
    # cross_validation: the mean of the metric over `folds` stratified folds of train+validation (snapshot
    # data). Events data always validate out of time (holdout): folds over customers would let later
    # observation dates teach earlier ones.
    objective: Literal["cross_validation", "holdout"] = "cross_validation"
    folds: int = Field(
        5, ge=2, le=10, description="K-fold over train+validation: CV objective and final fold models"
    )
    # Events data: `holdout` scores the validation customers at the validation dates; `customer_folds`
    # scores K folds of all non-test customers, each fold validated on its customers at the validation
    # dates and trained on the other customers at the earlier dates (out of time and out of customer).
    events_objective: Literal["holdout", "customer_folds"] = "holdout"
    # Which rows a customer fold validates on: `validation` (its customers at the validation dates, fitted
    # on the others' earlier dates: out of time) or `all` (its customers at every train+validation date,
    # fitted on the others' rows: the final model's own folds, with several times the churners).
    customer_fold_dates: Literal["validation", "all"] = "all"
    # A holdout with fewer churners picks noise (issue 16: 3-7 churners, best validation AUC 0.97-0.996,
    # test 0.70-0.88); below this the events search falls back to customer folds and says so.
    min_validation_churners: int = Field(20, ge=0)
    # The first trial is CatBoost's default parameters (training.fit.default_point): on small, noisy
    # data the search then has to beat the defaults on its own objective before it picks anything else.
    start_from_defaults: bool = True
    # The search's best trial replaces the defaults only if its objective beats theirs by more than this
    # many standard errors of its fold scores (training.selection: the one-standard-error rule); 0 takes
    # the best whenever it is ahead at all.
    defaults_within_se: float = Field(1.0, ge=0)
    seed: int = 7
    startup_trials: int = Field(5, ge=1, description="random trials before TPE models the history")
    early_stopping_rounds: int = Field(50, ge=1)
    thread_count: int = Field(2, ge=1, description="CatBoost threads; the lab machine has two cores")
    one_hot_max_size: int = Field(
        10, ge=1, le=255, description="one-hot categoricals with at most this many values; CTRs beyond"
    )
    pruning: PruningConfig = PruningConfig()
    space: SearchSpace = SearchSpace()

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.metric == "Logloss" else "maximize"

    def cross_validated(self, kind: Literal["snapshot", "events"]) -> bool:
        """Whether trials on this kind of data score K folds (snapshot) or the out-of-time holdout."""
        return self.objective == "cross_validation" and kind == "snapshot"


class SnapshotSplit(StrictModel):
    test: float = Field(0.2, gt=0, lt=1)
    validation: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _room_to_train(self) -> SnapshotSplit:
        if self.test + self.validation >= 0.9:
            raise ValueError("test + validation must leave at least 10% to train on")
        return self


class EventsSplit(StrictModel):
    test_dates: int = Field(2, ge=1, description="latest labelled observation dates held out for test")
    validation_dates: int = Field(1, ge=1, description="observation dates before those, for validation")
    test_customers: float = Field(
        0.3, gt=0, lt=1, description="share of customers held out for test; they never appear in training"
    )
    validation_customers: float = Field(
        0.2, gt=0, lt=1, description="share of customers whose validation-date rows validate the search"
    )

    @model_validator(mode="after")
    def _room_to_train(self) -> EventsSplit:
        if self.test_customers + self.validation_customers >= 0.9:
            raise ValueError("test_customers + validation_customers must leave at least 10% to train on")
        return self


class SplitConfig(StrictModel):
    seed: int = 42
    snapshot: SnapshotSplit = SnapshotSplit()
    events: EventsSplit = EventsSplit()


class FinalConfig(StrictModel):
    # fold_average: the K fold models (fixed iteration count) averaged into one CatBoost model; their
    # out-of-fold predictions calibrate exactly the models the average is made of. refit: one model on
    # all train+validation rows, calibrated on the fold models' out-of-fold predictions.
    model: Literal["fold_average", "refit"] = "fold_average"
    # Platt: CatBoost's logloss is close to calibrated except for the shift class weighting adds to the
    # logit, which two parameters fix with little variance; isotonic would add ties that cost ROC-AUC.
    calibration: Literal["platt", "isotonic"] = "platt"
    iteration_scale: float = Field(
        1.0, gt=0, le=3, description="final iterations = best trial's early-stopped count x this"
    )
    wait_for_workers_seconds: float = Field(
        600.0, ge=0, description="how long the finishing worker waits for other workers' running trials"
    )


class EvaluationConfig(StrictModel):
    ece_bins: int = Field(10, ge=2, le=50)
    shap_rows: int = Field(1000, ge=50, description="test rows explained in the SHAP summary")
    reference_rows: int = Field(5000, ge=100, le=5000, description="training rows kept for drift")
    lead_time_days: int = Field(30, ge=1, description="lead-time share reported as >= this many days")


class PromotionConfig(StrictModel):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    margin: float = Field(0.002, ge=0, description="challenger must beat champion by at least this")
    ece_tolerance: float = Field(0.01, ge=0, description="challenger ECE may exceed champion's by this")

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("roc_auc", "pr_auc")


class TrainingConfig(StrictModel):
    experiment: str = Field("churnguard-{dataset}", description="MLflow experiment; {dataset} is filled in")
    split: SplitConfig = SplitConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()

    def experiment_name(self, dataset: str) -> str:
        return self.experiment.format(dataset=dataset)


def load_training_config() -> TrainingConfig:
    return load_named(TrainingConfig, "training")
