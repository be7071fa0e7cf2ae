"""Trial selection (issue 16): the search's best trial replaces CatBoost's defaults only when it beats
them by more than the standard error of its fold scores (the one-standard-error rule)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from training.selection import DEFAULTS_ATTR, FOLD_SCORES_ATTR, fold_standard_error, select_trial

DEPTH = {"depth": IntDistribution(2, 6)}


def study_of(*trials: tuple[int, list[float], bool], direction: str = "maximize") -> optuna.Study:
    """A real in-memory study whose completed trials have (depth, fold scores, is the defaults)."""
    study = optuna.create_study(direction=direction)
    for depth, folds, defaults in trials:
        attrs = {FOLD_SCORES_ATTR: folds, **({DEFAULTS_ATTR: True} if defaults else {})}
        value = sum(folds) / len(folds)
        study.add_trial(
            create_trial(params={"depth": depth}, distributions=DEPTH, value=value, user_attrs=attrs)
        )
    return study


def test_a_best_within_one_standard_error_keeps_the_defaults() -> None:
    # Best 0.80 over folds with sd 0.0707 (SE 0.0316); defaults 0.78: a gain of 0.02 is fold noise.
    study = study_of((6, [0.78, 0.78, 0.78, 0.78, 0.78], True), (3, [0.70, 0.80, 0.90, 0.80, 0.80], False))
    selection = select_trial(study, se_multiple=1.0)
    assert selection.best.number == 1 and selection.kept_defaults and selection.trial.number == 0
    assert selection.gain == pytest.approx(0.02)
    assert selection.standard_error == pytest.approx(0.1 * math.sqrt(0.5) / math.sqrt(5))
    assert "CatBoost's defaults" in selection.reason and "not cleared" in selection.reason
    assert selection.tags() == {"selected_trial": "0", "trial_selection": selection.reason}
    assert selection.metrics()["selection_gain_over_defaults"] == pytest.approx(0.02)


def test_a_best_clear_of_the_noise_replaces_the_defaults() -> None:
    study = study_of((6, [0.70, 0.71, 0.69, 0.70, 0.70], True), (3, [0.80, 0.81, 0.79, 0.80, 0.80], False))
    selection = select_trial(study, se_multiple=1.0)
    assert selection.trial.number == 1 and not selection.kept_defaults
    assert selection.gain == pytest.approx(0.10) and "cleared" in selection.reason
    # 0 standard errors: any gain at all takes the best; a large multiple keeps the defaults.
    noisy = study_of((6, [0.78] * 5, True), (3, [0.70, 0.80, 0.90, 0.80, 0.80], False))
    assert select_trial(noisy, se_multiple=0.0).trial.number == 1
    assert select_trial(study, se_multiple=100.0).trial.number == 0


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    # Logloss: the best is the lowest; 0.30 against the defaults' 0.40, SE 0.0045: cleared.
    study = study_of(
        (6, [0.40, 0.41, 0.39], True), (3, [0.30, 0.31, 0.29], False), (4, [0.5, 0.5, 0.5], False),
        direction="minimize",
    )  # fmt: skip
    selection = select_trial(study, se_multiple=1.0)
    assert selection.trial.number == 1 and selection.gain == pytest.approx(0.10)


def test_no_defaults_or_one_holdout_fold_takes_the_best_and_says_why() -> None:
    without = study_of((3, [0.8, 0.7, 0.9], False), (4, [0.6, 0.6, 0.6], False))
    selection = select_trial(without, se_multiple=1.0)
    assert selection.trial.number == 0 and selection.defaults is None
    assert "defaults were not a completed trial" in selection.reason
    holdout = study_of((6, [0.70], True), (3, [0.71], False))
    selection = select_trial(holdout, se_multiple=1.0)
    assert selection.trial.number == 1 and selection.standard_error is None
    assert "no fold-to-fold standard error" in selection.reason
    assert fold_standard_error(selection.trial) is None
    best_is_defaults = study_of((6, [0.9, 0.8, 0.85], True), (3, [0.7, 0.7, 0.7], False))
    assert select_trial(best_is_defaults, se_multiple=1.0).kept_defaults


def test_pruned_or_failed_trials_are_never_selected() -> None:
    study = study_of((6, [0.70, 0.70, 0.70], True))
    study.add_trial(create_trial(params={"depth": 3}, distributions=DEPTH, state=TrialState.FAIL))
    study.add_trial(
        create_trial(
            params={"depth": 4}, distributions=DEPTH, state=TrialState.PRUNED, intermediate_values={0: 0.99}
        )
    )
    assert select_trial(study, se_multiple=1.0).trial.number == 0
    empty = optuna.create_study()
    with pytest.raises(ValueError, match="no completed trial"):
        select_trial(empty, se_multiple=1.0)
