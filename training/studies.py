"""Optuna studies: where they live, and how several `tune` workers share one.

`--storage` takes an RDB URL (`sqlite:///studies.db`, `postgresql://...`) or a journal file path
(anything without `://`, e.g. `.churnguard/studies.journal`), which uses JournalStorage with a
JournalFileBackend: append-only and lock-safe for several processes on one machine or a shared disk.
Without `--storage` a study goes to `sqlite:///<state>/optuna.db`.

PostgreSQL is the storage for workers on many machines. A plain `postgresql://` URL is given to
SQLAlchemy as `postgresql+psycopg://`: psycopg 3 is the driver in the lock (SQLAlchemy's default for
`postgresql://` is psycopg2, which is not installed). Optuna creates its tables when a worker first
opens the storage; workers starting together on an empty database would race to create them (one
fails with a duplicate-type error), so on PostgreSQL they take turns under an advisory lock.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from churnguard.settings import state_dir

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER_ATTR = "worker"  # trial user attr: which `tune` process ran the trial
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
FINAL_ATTR = "final_model_version"  # study user attr: set once the final model is registered


def default_storage() -> str:
    return f"sqlite:///{state_dir() / 'optuna.db'}"


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` and `postgres://` with the psycopg 3 driver named; other URLs as given."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


_SCHEMA_LOCK = 727017  # PostgreSQL advisory lock key: workers creating Optuna's tables take turns


def _postgres_storage(url: str) -> BaseStorage:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", [_SCHEMA_LOCK])
        return RDBStorage(url)  # closing the lock's connection releases it


def open_storage(storage: str | None) -> str | BaseStorage:
    if storage is None:
        return default_storage()
    if "://" in storage:
        url = sqlalchemy_url(storage)
        return _postgres_storage(url) if url.startswith("postgresql+psycopg://") else url
    path = Path(storage).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def redact(storage: str | None) -> str:
    """The storage for logs and MLflow params, without a password."""
    if storage is None:
        return default_storage()
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", storage)


def open_study(
    storage: str | BaseStorage, name: str, direction: str, pruner: optuna.pruners.BasePruner
) -> tuple[optuna.Study, bool]:
    """Create the study, or join it if another worker already has; says which happened.

    The storage's unique study name makes creation atomic, so exactly one worker sees `created`.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, pruner=pruner)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, pruner=pruner)
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"study '{name}' optimises {study.direction.name.lower()}, but this config wants "
                f"{direction}; use another --study name"
            ) from None
        return study, False


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def started_trials(study: optuna.Study) -> int:
    """Finished plus running: what counts against the budget before a new trial starts."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def wait_for_running(study: optuna.Study, timeout: float, poll: float = 1.0) -> bool:
    """Wait until no trial of the study is running (other workers finishing); False on timeout."""
    deadline = time.monotonic() + timeout
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def last_finisher(study: optuna.Study) -> str | None:
    """The worker that finished the study's last trial: every worker computes the same answer once no
    trial is running, which makes it the one to fit and register the final model."""
    trials = [t for t in finished_trials(study) if t.datetime_complete is not None]
    if not trials:
        return None
    last = max(trials, key=lambda t: (t.datetime_complete, t.number))
    return last.user_attrs.get(WORKER_ATTR)


def wait_for_study_attr(study: optuna.Study, key: str, timeout: float, poll: float = 0.5) -> str | None:
    """A joining worker waits briefly for the creating worker to publish, e.g., the MLflow parent run."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(poll)
