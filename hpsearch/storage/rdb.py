"""Optuna's RDBStorage, made to share one study among many workers and to wait out restarts.

This module and its siblings in :mod:`hpsearch.storage` are the only places that use Optuna's
internals (``optuna.storages._rdb``); Optuna is pinned to the major version they were written
against, and Optuna's own ``StorageTestCase`` runs against this class
(tests/test_optuna_storage.py).

What :class:`ResilientStorage` changes, and why:

- every operation is retried with backoff while the database is unreachable (a restart, a
  failover), for up to ``$HPSEARCH_DB_RETRY_S`` seconds, then one clear error
  (:class:`~hpsearch.storage.retry.Retrier`); other errors are raised at once, with Optuna's
  exception types, at the call that caused them;
- one connection per process, its operations taking turns;
- a worker re-reads the other workers' trials at most every ``$HPSEARCH_REFRESH_S`` (Optuna:
  before every sampling and pruning check) and their epoch reports at most every
  ``$HPSEARCH_RUNNING_REFRESH_S``, as plain SQL rows (:mod:`hpsearch.storage.rows`);
- :meth:`ResilientStorage.deferred_writes`: a trial's parameters and attributes, written at
  its start, go in one transaction instead of one each (asked for explicitly by the caller);
- new trials are numbered in O(1) under the study lock (Optuna counts the whole study);
- dead workers' trials are looked for at most once per heartbeat interval;
- SQLite: every transaction takes the write lock up front and waits up to 60 s for it, so a
  few local workers never see "database is locked".
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any, cast

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from hpsearch import attr_names
from hpsearch.errors import StorageError
from hpsearch.storage.retry import Retrier
from hpsearch.storage.rows import TrialLoader, as_stored
from hpsearch.storage.settings import Settings

_logger = logging.getLogger(__name__)

_Write = tuple[str, tuple[Any, ...]]
"""A deferred write: ("param", (name, internal value, distribution)) or ("user_attr", (k, v))."""


def _sqlite_write_lock_up_front(engine: sqlalchemy.engine.Engine) -> None:
    """``BEGIN IMMEDIATE`` for every transaction: wait for the lock instead of failing.

    With SQLite's default deferred transactions a reader that later writes fails at once with
    "database is locked" while another process writes (no wait, to avoid a deadlock). Taking
    the write lock at BEGIN makes every transaction wait up to the busy timeout instead. The
    connections are opened in autocommit mode (``isolation_level=None``) so that SQLAlchemy
    does not begin a deferred transaction of its own.
    """

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upsert_user_attrs(dialect: str, trial_id: int, attrs: dict[str, str]) -> Any:
    """One INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE for several user attributes."""
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    model = models.TrialUserAttributeModel
    rows = [{"trial_id": trial_id, "key": k, "value_json": v} for k, v in attrs.items()]
    if dialect == "mysql":
        stmt = mysql.insert(model).values(rows)
        return stmt.on_duplicate_key_update(value_json=stmt.inserted.value_json)
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(model).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=[model.trial_id, model.key],
        set_={"value_json": stmt.excluded.value_json},
    )


class ResilientStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage for many workers on one study; see the module docstring.

    Args:
        url: The SQLAlchemy URL, password included (never logged).
        settings: Intervals and limits (:meth:`Settings.from_environment`).
        masked_url: The URL as shown in messages.
        password: The password, to be masked in the database's messages.
        **kwargs: Passed on to :class:`optuna.storages.RDBStorage`.
    """

    def __init__(
        self,
        url: str,
        *,
        settings: Settings,
        masked_url: str,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self.masked_url = masked_url
        self._retry = Retrier(settings.retry_s, masked_url, password)
        self._deferred: dict[int, list[_Write]] = {}
        self._last_refresh: dict[int, float] = {}
        self._running_read_at: dict[int, float] = {}
        self._next_stale_check: dict[int, float] = {}
        self._loader = TrialLoader()
        super().__init__(url, skip_compatibility_check=True, **kwargs)
        self._check_schema()
        if self.engine.dialect.name == "sqlite":
            _sqlite_write_lock_up_front(self.engine)

    @property
    def retry_s(self) -> float:
        """How long an operation waits for an unreachable database."""
        return self._retry.retry_s

    # -- studies ------------------------------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        """Optuna's, retried while the database is unreachable."""
        return self._retry.call(partial(super().create_new_study, directions, study_name))

    def delete_study(self, study_id: int) -> None:
        """Optuna's, retried; this process's refresh bookkeeping of the study goes with it."""
        self._retry.call(partial(super().delete_study, study_id))
        self._last_refresh.pop(study_id, None)
        self._next_stale_check.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """Optuna's, retried."""
        self._retry.call(partial(super().set_study_user_attr, study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        """Optuna's, retried."""
        self._retry.call(partial(super().set_study_system_attr, study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_study_id_from_name, study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_study_name_from_id, study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_study_directions, study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_study_user_attrs, study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_study_system_attrs, study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        """Optuna's, retried."""
        return self._retry.call(super().get_all_studies)

    # -- trial writes -------------------------------------------------------------------------

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """A new trial, retried; a RUNNING one is numbered in O(1) under the study lock.

        Optuna numbers a trial by counting the study's earlier trials, with the study row
        locked: a scan of the whole study (4 ms at 20,000 trials) that every other worker waits
        for. Trials are numbered one at a time under that lock, so the newest trial's number
        plus one is the same count, read from one row. Trials from a template (enqueued,
        retried, added) take Optuna's own path, under the same lock.

        The sampler reads the study right after: that read is fresh (the trials other workers
        started meanwhile, with their parameters), whatever the refresh interval.
        """
        self._last_refresh.pop(study_id, None)
        if template_trial is not None:
            return self._retry.call(partial(super()._create_new_trial, study_id, template_trial))
        return self._retry.call(partial(self._insert_running_trial, study_id))

    def _insert_running_trial(self, study_id: int) -> FrozenTrial:
        trials = models.TrialModel.__table__
        studies = models.StudyModel.__table__
        start = datetime.now()
        with _create_scoped_session(self.scoped_session, True) as session:
            lock = sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id)
            if session.execute(lock.with_for_update()).first() is None:
                raise KeyError(models.NOT_FOUND_MSG)
            newest = (
                sqlalchemy.select(trials.c.number)
                .where(trials.c.study_id == study_id)
                .order_by(trials.c.trial_id.desc())
                .limit(1)
            )
            last = session.execute(newest).scalar()
            number = 0 if last is None else last + 1
            inserted = session.execute(
                sqlalchemy.insert(trials).values(
                    number=number,
                    study_id=study_id,
                    state=TrialState.RUNNING,
                    datetime_start=as_stored(start),
                )
            )
            trial_id = inserted.inserted_primary_key[0]  # type: ignore[attr-defined]
        return FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=start,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=trial_id,
        )

    @contextmanager
    def deferred_writes(self, trial_id: int) -> Iterator[None]:
        """Write this trial's parameters and user attributes in one transaction, at the end.

        Each write is checked when it is made (the trial is running, the value can be stored,
        the distribution fits the study's), so an error is raised at the call that caused it;
        the checks that need the database again (another worker finished the trial meanwhile)
        raise when the block ends. A block that raises writes nothing. Reads of this trial
        inside the block see the database, not the pending writes.

        Raises:
            KeyError: No such trial.
            optuna.exceptions.UpdateFinishedTrialError: The trial has finished.
        """
        if trial_id in self._deferred:  # nested: the outer block writes
            yield
            return
        self.check_trial_is_updatable(trial_id, self._trial_state(trial_id))
        self._deferred[trial_id] = []
        try:
            yield
        finally:
            pending = self._deferred.pop(trial_id)
        if pending:
            self._retry.call(partial(self._write_deferred, trial_id, pending))

    def _trial_state(self, trial_id: int) -> TrialState:
        def read() -> TrialState:
            with _create_scoped_session(self.scoped_session) as session:
                return cast(
                    TrialState, models.TrialModel.find_or_raise_by_id(trial_id, session).state
                )

        return self._retry.call(read)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        """Optuna's, retried; inside :meth:`deferred_writes`, checked now and written later."""
        pending = self._deferred.get(trial_id)
        if pending is None:
            self._retry.call(
                partial(
                    super()._set_trial_param,
                    trial_id,
                    param_name,
                    param_value_internal,
                    distribution,
                    previous_distribution,
                )
            )
            return
        if any(kind == "param" and args[0] == param_name for kind, args in pending):
            raise optuna.exceptions.StorageInternalError(
                f"parameter {param_name!r} is already set for trial id {trial_id}"
            )
        if previous_distribution is None:
            previous_distribution = self._study_distribution(trial_id, param_name)
        if previous_distribution is not None:
            check_distribution_compatibility(previous_distribution, distribution)
        pending.append(("param", (param_name, param_value_internal, distribution)))

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        """Optuna's (see :meth:`_set_trial_param`)."""
        self._set_trial_param(trial_id, param_name, param_value_internal, distribution, None)

    def _study_distribution(self, trial_id: int, param_name: str) -> BaseDistribution | None:
        """The distribution the trial's study already has for ``param_name``, if any."""

        def read() -> BaseDistribution | None:
            params = models.TrialParamModel.__table__
            trials = models.TrialModel.__table__
            study = sqlalchemy.select(trials.c.study_id).where(trials.c.trial_id == trial_id)
            query = (
                sqlalchemy.select(params.c.distribution_json)
                .join(trials, trials.c.trial_id == params.c.trial_id)
                .where(trials.c.study_id == study.scalar_subquery())
                .where(params.c.param_name == param_name)
                .limit(1)
            )
            with _create_scoped_session(self.scoped_session) as session:
                found = session.execute(query).scalar()
            return None if found is None else optuna.distributions.json_to_distribution(found)

        return self._retry.call(read)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Optuna's, retried; inside :meth:`deferred_writes`, checked now and written later."""
        pending = self._deferred.get(trial_id)
        if pending is None:
            self._retry.call(partial(super().set_trial_user_attr, trial_id, key, value))
            return
        json.dumps(value)  # a value that cannot be stored fails here, as Optuna's does
        pending.append(("user_attr", (key, value)))

    def _write_deferred(self, trial_id: int, writes: list[_Write]) -> None:
        """One trial's deferred writes: one INSERT of parameters, one upsert of attributes."""
        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, cast(TrialState, trial.state))
            params = [
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": value,
                    "distribution_json": optuna.distributions.distribution_to_json(dist),
                }
                for kind, (name, value, dist) in ((k, a) for k, a in writes if k == "param")
            ]
            attrs = {a[0]: json.dumps(a[1]) for k, a in writes if k == "user_attr"}
            if params:
                session.execute(sqlalchemy.insert(models.TrialParamModel), params)
            if attrs:
                session.execute(_upsert_user_attrs(self.engine.name, trial_id, attrs))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        """Optuna's, retried; this process's next read of the study is fresh, so it sees its
        own finished trials at once (other workers' within ``refresh_s``)."""
        self._last_refresh.clear()
        return self._retry.call(
            partial(super().set_trial_state_values, trial_id, state, values),
            committed_if_finished=True,
        )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """Optuna's, retried."""
        self._retry.call(
            partial(super().set_trial_intermediate_value, trial_id, step, intermediate_value)
        )

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Optuna's, retried."""
        self._retry.call(partial(super().set_trial_system_attr, trial_id, key, value))

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's, retried."""
        self._retry.call(partial(super().record_heartbeat, trial_id))

    # -- trial reads --------------------------------------------------------------------------

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_trial_param, trial_id, param_name))

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_trial_user_attrs, trial_id))

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        """Optuna's, retried."""
        return self._retry.call(partial(super().get_trial_system_attrs, trial_id))

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """Optuna's, retried."""
        return self._retry.call(
            partial(super().get_trial_id_from_study_id_trial_number, study_id, trial_number)
        )

    def _get_best_trial_id(self, study_id: int, direction: StudyDirection) -> int:
        return self._retry.call(partial(super()._get_best_trial_id, study_id, direction))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """One trial, read as plain rows (:mod:`hpsearch.storage.rows`), retried."""

        def read() -> FrozenTrial:
            with _create_scoped_session(self.scoped_session) as session:
                return self._loader.load_trial(session, trial_id)

        return self._retry.call(read)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """All trials of a study, always read fresh."""
        trials = self._get_trials(study_id, states, set(), -1, _from_cache=False)
        return copy.deepcopy(trials) if deepcopy else trials

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None = None,
        included_trial_ids: set[int] | None = None,
        trial_id_greater_than: int = -1,
        *,
        _from_cache: bool = True,
    ) -> list[FrozenTrial]:
        """Trials of a study, read as plain rows (:mod:`hpsearch.storage.rows`).

        Optuna's cache calls this before every sampling and every pruning check, and each
        call reads all running trials of every worker again: with many workers that is most
        of the database's and the client's work. So the cache gets news at most every
        ``refresh_s`` (and at once after this process finished a trial); in between it uses
        what it has. A running trial is read in full (its parameters are written at its start,
        in one transaction); while it runs, it is read again at most every
        ``running_refresh_s`` (its epoch reports), or at every refresh while it has no
        parameters yet. That it finished is seen, in full, at the next refresh.
        """
        if _from_cache:
            now = time.monotonic()
            if now - self._last_refresh.get(study_id, -1e9) < self.settings.refresh_s:
                return []
            self._last_refresh[study_id] = now

        def read() -> list[FrozenTrial]:
            with _create_scoped_session(self.scoped_session) as session:
                trials = self._loader.load_trials(
                    session,
                    study_id,
                    states,
                    included_trial_ids or set(),
                    trial_id_greater_than,
                    keep=self._read_recently if _from_cache else None,
                )
                if not trials:  # no news, or no such study (KeyError, as Optuna's)
                    models.StudyModel.find_or_raise_by_id(study_id, session)
            return trials

        trials = self._retry.call(read)
        if _from_cache:
            now = time.monotonic()
            for trial in trials:
                if trial.state == TrialState.RUNNING and trial.params:
                    self._running_read_at[trial._trial_id] = now
                else:
                    self._running_read_at.pop(trial._trial_id, None)
        return trials

    def _read_recently(self, trial_id: int, state: TrialState) -> bool:
        """A running trial read with its parameters less than ``running_refresh_s`` ago."""
        read_at = self._running_read_at.get(trial_id)
        return (
            state == TrialState.RUNNING
            and read_at is not None
            and time.monotonic() - read_at < self.settings.running_refresh_s
        )

    def count_live_trials_before(self, study_id: int, number: int) -> int:
        """Trials numbered below ``number`` that are not failed (always read fresh)."""

        def count() -> int:
            with _create_scoped_session(self.scoped_session) as session:
                found = (
                    session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialModel.number < number)
                    .filter(models.TrialModel.state != TrialState.FAIL)
                    .scalar()
                )
            return int(found or 0)

        return self._retry.call(count)

    # -- schema and heartbeats ----------------------------------------------------------------

    def _check_schema(self) -> None:
        """Optuna's schema version check, one connection at a time (Optuna's nests two)."""
        current = self._version_manager.get_current_version()
        head = self._version_manager.get_head_version()
        if current != head:
            raise StorageError(
                f"storage {self.masked_url}: its tables were made by another Optuna version "
                f"(schema {current}, this Optuna {optuna.__version__} needs {head}). Fix: "
                "optuna storage upgrade --storage URL, or install the Optuna that made it"
            )

    def check_stale_trials_now(self) -> None:
        """Make the next :meth:`_get_stale_trial_ids` ask the database, however recent the last."""
        self._next_stale_check.clear()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials whose worker is silent for the grace period, as Optuna's.

        Optuna asks before every trial; the database is asked at most once per heartbeat
        interval (a trial goes stale only after the grace period, 3 intervals by default).
        Each stale trial gets ``hpsearch:fail_reason = "timeout"`` before Optuna fails it.
        """
        now = time.monotonic()
        if now < self._next_stale_check.get(study_id, 0.0):
            return []
        self._next_stale_check[study_id] = now + (self.heartbeat_interval or 60)
        stale = self._retry.call(partial(super()._get_stale_trial_ids, study_id))
        grace = self.grace_period or 2 * (self.heartbeat_interval or 60)
        for trial_id in stale:
            self._record_timeout(trial_id, grace)
        return stale

    def _record_timeout(self, trial_id: int, grace: int) -> None:
        """Say why a stale trial is about to be failed (it is still RUNNING, so writable)."""
        attrs = self.get_trial_user_attrs(trial_id)
        reason = (
            f"no heartbeat from its worker ({attrs.get('hpsearch:host', '?')} pid "
            f"{attrs.get('hpsearch:pid', '?')}) for {grace} s: killed, crashed "
            "or its node was lost"
        )
        try:
            with self.deferred_writes(trial_id):
                self.set_trial_user_attr(trial_id, attr_names.FAIL_REASON, "timeout")
                self.set_trial_user_attr(trial_id, attr_names.ERROR, reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
