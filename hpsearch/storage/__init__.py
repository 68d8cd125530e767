"""The study database: open it, show its URL safely, and the few operations workers need.

This package alone uses Optuna's internals (``optuna.storages._rdb``, ``_CachedStorage``,
``study._storage``, ``trial._trial_id``); the rest of hpsearch calls the functions here.

- :mod:`~hpsearch.storage.urls`: URL parsing, defaults, masking, secrets.
- :mod:`~hpsearch.storage.settings`: ``$HPSEARCH_*`` tunables, checked.
- :mod:`~hpsearch.storage.retry`: which errors are transient, and the retry policy.
- :mod:`~hpsearch.storage.rdb`: the RDBStorage subclass workers share a study through.
- :mod:`~hpsearch.storage.rows`: trials read as plain SQL rows.
- :mod:`~hpsearch.storage.worker_cache`: the per-process trial cache of a worker.
- :mod:`~hpsearch.storage.leaderboard_sql`: the leaderboard's aggregate reads.
- :mod:`~hpsearch.storage.connect`: opening a database, with one-line errors.
- :mod:`~hpsearch.storage.requeue`: re-queueing a dead or preempted worker's trial.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import attr_names
from hpsearch.storage.connect import (
    check_connection,
    get_storage,
    retry_callback,
    warn_if_many_sqlite_workers,
)
from hpsearch.storage.rdb import ResilientStorage
from hpsearch.storage.settings import Settings
from hpsearch.storage.urls import (
    DEFAULT_STORAGE,
    has_password,
    is_sqlite,
    mask_url,
    mysql_option_file,
    parse_url,
    resolve_url,
    without_secrets,
)
from hpsearch.storage.worker_cache import WorkerTrialCache, cached

__all__ = [
    "DEFAULT_STORAGE",
    "ResilientStorage",
    "Settings",
    "WorkerTrialCache",
    "cached",
    "check_connection",
    "count_live_trials_before",
    "database_error",
    "fail_stale_trials",
    "get_storage",
    "get_trial",
    "has_password",
    "is_sqlite",
    "mask_url",
    "mysql_option_file",
    "parse_url",
    "preempt_and_requeue",
    "resolve_url",
    "retry_callback",
    "set_study_system_attr",
    "study_names",
    "study_system_attrs",
    "trial_id",
    "trial_writes",
    "warn_if_many_sqlite_workers",
    "without_secrets",
]


def _backend(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    return storage.backend if isinstance(storage, WorkerTrialCache) else storage


def database_error(error: BaseException) -> str | None:
    """One line for an error the database raised mid-operation (a damaged SQLite file, a
    schema changed under us), or None if ``error`` is not one."""
    import sqlalchemy

    from hpsearch.storage.retry import reason

    if not isinstance(
        error, sqlalchemy.exc.SQLAlchemyError | optuna.exceptions.StorageInternalError
    ):
        return None
    text = reason(error)
    hint = "check the database (is it the right one, and intact?); rerun with --debug for details"
    if "malformed" in text.lower() or "not a database" in text.lower():
        hint = "the SQLite file is damaged: restore it from a backup, or start a new one"
    return f"the study database failed: {text}. Fix: {hint}"


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of all studies in ``storage``."""
    return [s.study_name for s in storage.get_all_studies()]


def study_system_attrs(study: optuna.Study) -> dict[str, object]:
    """The study's system attributes (Optuna 5 keeps them out of the public Study API)."""
    return _study_storage(study).get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: object) -> None:
    """Set a study system attribute (what hpsearch stores that users should not edit)."""
    _study_storage(study).set_study_system_attr(study._study_id, key, value)  # type: ignore[arg-type]


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (Optuna keeps it private)."""
    return int(trial._trial_id)


@contextlib.contextmanager
def trial_writes(trial: optuna.Trial) -> Iterator[None]:
    """Write the trial's parameters and user attributes set inside the block in one go.

    On hpsearch's storage that is one transaction at the end of the block (errors are still
    raised at the call that caused them, see :meth:`ResilientStorage.deferred_writes`); on
    any other storage the block changes nothing.
    """
    storage = trial.storage
    if isinstance(storage, ResilientStorage | WorkerTrialCache):
        with storage.deferred_writes(trial_id(trial)):
            yield
    else:
        yield


def _study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def get_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """One trial of ``study`` by its storage id, read fresh."""
    return _backend(_study_storage(study)).get_trial(trial_id)


def fail_stale_trials(study: optuna.Study, *, now: bool = False) -> None:
    """Fail (and re-queue) trials whose worker died; ``now``: even if checked recently."""
    backend = _backend(_study_storage(study))
    if now and isinstance(backend, ResilientStorage):
        backend.check_stale_trials_now()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def preempt_and_requeue(study: optuna.Study, trial_id: int) -> FrozenTrial | None:
    """Mark an interrupted trial FAIL (reason ``preempted``) if it still runs, and queue its
    retry (same parameters and epoch history). Returns the failed trial, or None if it was
    not failed (it had finished)."""
    storage = _study_storage(study)
    trial = get_trial(study, trial_id)
    if trial.state == TrialState.RUNNING:
        storage.set_trial_user_attr(trial_id, attr_names.FAIL_REASON, "preempted")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        trial = get_trial(study, trial_id)
    if trial.state != TrialState.FAIL:
        return None
    retry_callback()(study, trial)
    return trial


def count_live_trials_before(trial: optuna.Trial) -> int:
    """Trials of the trial's study numbered below it that are not failed (read fresh)."""
    backend = _backend(trial.storage)
    if isinstance(backend, ResilientStorage):
        return backend.count_live_trials_before(trial.study._study_id, trial.number)
    return sum(
        t.state != TrialState.FAIL and t.number < trial.number
        for t in trial.study.get_trials(deepcopy=False)
    )
