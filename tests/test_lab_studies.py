"""Study storage and the rules that let several `tune` workers share one study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.trial import TrialState

from churnguard.config import ConfigError, load_named
from training import studies
from training.config import TrainingConfig, load_training_config
from training.fit import suggest_params


def test_storage_urls_and_journal_paths(tmp_path: Path) -> None:
    assert studies.open_storage("sqlite:///x.db") == "sqlite:///x.db"
    assert isinstance(studies.open_storage(str(tmp_path / "deep" / "studies.journal")), JournalStorage)
    assert (tmp_path / "deep").is_dir()
    assert studies.redact("postgresql://lab:s3cret@db:5432/optuna") == "postgresql://lab:***@db:5432/optuna"
    assert studies.redact("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    # psycopg 3 is the locked driver; SQLAlchemy would pick psycopg2 for a plain postgresql:// URL.
    assert studies.sqlalchemy_url("postgresql://lab@db/optuna") == "postgresql+psycopg://lab@db/optuna"
    assert studies.sqlalchemy_url("postgres://lab@db/optuna") == "postgresql+psycopg://lab@db/optuna"
    assert studies.sqlalchemy_url("postgresql+psycopg://db/o") == "postgresql+psycopg://db/o"


def test_exactly_one_worker_creates_a_study_and_others_join(tmp_path: Path) -> None:
    storage = studies.open_storage(str(tmp_path / "studies.journal"))
    pruner = optuna.pruners.NopPruner()
    first, created = studies.open_study(storage, "shared", "maximize", pruner)
    second, joined_created = studies.open_study(storage, "shared", "maximize", pruner)
    assert created and not joined_created and first._study_id == second._study_id
    with pytest.raises(ValueError, match="optimises maximize"):
        studies.open_study(storage, "shared", "minimize", pruner)


def test_the_worker_that_finished_the_last_trial_finalizes() -> None:
    study = optuna.create_study(direction="maximize")
    for worker, value in (("a", 0.7), ("b", 0.8), ("a", 0.75)):
        trial = study.ask()
        trial.set_user_attr(studies.WORKER_ATTR, worker)
        study.tell(trial, value)
    running = study.ask()
    running.set_user_attr(studies.WORKER_ATTR, "b")
    assert studies.started_trials(study) == 4 and len(studies.finished_trials(study)) == 3
    assert not studies.wait_for_running(study, timeout=0.05, poll=0.01)
    assert studies.last_finisher(study) == "a"
    study.tell(running, state=TrialState.PRUNED)
    assert studies.wait_for_running(study, timeout=1)
    assert studies.last_finisher(study) == "b"


def test_search_space_from_config_reaches_catboost_names() -> None:
    space = TrainingConfig().search.space
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest_params(trial, space)
    assert space.depth.low <= params["depth"] <= space.depth.high
    assert space.learning_rate.low <= params["learning_rate"] <= space.learning_rate.high
    assert params["auto_class_weights"] in (None, "Balanced", "SqrtBalanced")
    assert params["border_count"] in (32, 64, 128, 254)
    assert set(params) == set(type(space).model_fields)


def test_training_config_validates_and_names_wrong_keys() -> None:
    config = load_training_config()
    assert (
        config.search.trials == 20 and config.search.metric == "AUC" and config.search.direction == "maximize"
    )
    assert config.final.calibration == "platt" and config.promotion.metric == "roc_auc"
    assert config.experiment_name("crm") == "churnguard-crm"
    with pytest.raises(ConfigError, match=r"search\.space\.depth\.hgh"):
        load_named(
            TrainingConfig, "training", environ={"CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HGH": "9"}
        )
    with pytest.raises(ConfigError, match="is below `low`"):
        load_named(
            TrainingConfig, "training", environ={"CHURNGUARD_TRAINING__SEARCH__SPACE__DEPTH__HIGH": "1"}
        )
