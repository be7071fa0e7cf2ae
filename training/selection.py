"""Which completed trial the final model is fitted with: the search's best, unless CatBoost's defaults
(the study's first trial, `search.start_from_defaults`) are as good within the noise of the folds.

The best of N trials is the maximum of N noisy fold means, so its score is biased upwards, most on small
data: on ChurnSim-like data (1,470 accounts, 8-13 test churners per split) the best trial's test ROC-AUC
was no better than the defaults' on average (issue 16). The one-standard-error rule (Breiman et al.,
*Classification and Regression Trees*, 1984; Hastie et al., *The Elements of Statistical Learning*,
7.10) keeps the simpler, prior choice unless the best beats it by more than the standard error of the
best's own cross-validated score: sd of its fold scores / sqrt(K). A holdout objective (one fold) has
no fold-to-fold standard error: the best trial is taken, and the decision says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

DEFAULTS_ATTR = "catboost_defaults"  # trial user attr: this trial is CatBoost's defaults (trial 0)
FOLD_SCORES_ATTR = "fold_scores"  # trial user attr: the validation score of each fold, in fold order


@dataclass(frozen=True)
class Selection:
    """The trial the final model uses and why; `gain` and `standard_error` are None when not compared."""

    trial: FrozenTrial
    best: FrozenTrial  # the search's best trial by the objective
    defaults: FrozenTrial | None  # CatBoost's defaults, when they completed
    gain: float | None  # best - defaults, in the objective's better direction
    standard_error: float | None  # the bar the gain had to clear: se_multiple x SE of the best's folds
    reason: str

    @property
    def kept_defaults(self) -> bool:
        return self.defaults is not None and self.trial.number == self.defaults.number

    def tags(self) -> dict[str, str]:
        """The decision as MLflow tags of the study's run and the registered model."""
        return {"selected_trial": str(self.trial.number), "trial_selection": self.reason}

    def metrics(self) -> dict[str, float]:
        measured = {"selected_trial": float(self.trial.number)}
        if self.gain is not None:
            measured["selection_gain_over_defaults"] = self.gain
        if self.standard_error is not None:
            measured["selection_standard_error"] = self.standard_error
        return measured


def fold_standard_error(trial: FrozenTrial) -> float | None:
    """sd / sqrt(K) of a trial's fold scores; None with fewer than two folds."""
    scores = np.asarray(trial.user_attrs.get(FOLD_SCORES_ATTR, []), dtype=float)
    if len(scores) < 2:
        return None
    return float(scores.std(ddof=1) / math.sqrt(len(scores)))


def select_trial(study: optuna.Study, se_multiple: float) -> Selection:
    """The trial to fit the final model with (the study must have a completed trial).

    `se_multiple` scales the standard error the best must clear (`search.defaults_within_se`); 0 takes
    the best trial whenever it scores above the defaults at all.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise ValueError(f"study '{study.study_name}' has no completed trial to select")
    best = study.best_trial
    defaults = next((t for t in completed if t.user_attrs.get(DEFAULTS_ATTR)), None)
    metric = f"{best.value:.4f}"
    if defaults is None:
        why = "CatBoost's defaults were not a completed trial of this study"
        return Selection(best, best, None, None, None, f"trial {best.number}, the best ({metric}): {why}")
    if defaults.number == best.number:
        reason = f"trial {best.number}, CatBoost's defaults: the best trial of the study ({metric})"
        return Selection(best, best, defaults, 0.0, fold_standard_error(best), reason)
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    gain = sign * (float(best.value) - float(defaults.value))
    se = fold_standard_error(best)
    if se is None:
        reason = (
            f"trial {best.number}, the best ({metric}; defaults, trial {defaults.number}: "
            f"{defaults.value:.4f}): one validation fold has no fold-to-fold standard error to compare with"
        )
        return Selection(best, best, defaults, gain, None, reason)
    bar = se_multiple * se
    compared = (
        f"the best, trial {best.number}, scores {metric}, {gain:+.4f} over CatBoost's defaults "
        f"(trial {defaults.number}, {defaults.value:.4f}); the bar is {se_multiple:g} x the standard "
        f"error of its {len(best.user_attrs[FOLD_SCORES_ATTR])} fold scores = {bar:.4f}"
    )
    if gain > bar:
        return Selection(best, best, defaults, gain, bar, f"trial {best.number}: {compared}, cleared")
    reason = f"trial {defaults.number}, CatBoost's defaults: {compared}, not cleared (within fold noise)"
    return Selection(defaults, best, defaults, gain, bar, reason)
