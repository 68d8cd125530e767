"""Storage URL → Optuna storage that many workers can share and that survives a DB restart.

The URL comes from ``--storage``, else ``$HPSEARCH_STORAGE``, else ``sqlite:///hpsearch.db``.
Passwords never need to be in the URL: PostgreSQL reads ``~/.pgpass`` (or ``$PGPASSFILE``),
MariaDB reads ``~/.my.cnf`` (or ``$HPSEARCH_MYSQL_OPTION_FILE``), and for any backend
``$HPSEARCH_DB_PASSWORD`` is filled in at connect time. :func:`mask_url` is used wherever a URL
is printed or logged.

What a worker gets (:class:`ResilientStorage`):

- one database connection per process (``$HPSEARCH_DB_POOL=0``: none held between operations,
  for more workers than the server allows connections);
- every operation retried with backoff while the database is unreachable (a restart, a
  failover), for up to ``$HPSEARCH_DB_RETRY_S`` seconds (600), then one clear error;
- heartbeats: a trial whose worker is silent for the grace period is failed with reason
  ``timeout`` and re-queued with its parameters and epoch history, at most 3 times;
- SQLite: every transaction takes the write lock up front and waits up to 60 s for it, so a
  few local workers never see "database is locked".
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Container, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hpsearch.errors import StorageError
from hpsearch.trial_loading import TrialLoader, as_stored

_logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
HEARTBEAT_INTERVAL_S = int(os.environ.get("HPSEARCH_HEARTBEAT_S", "60"))
GRACE_PERIOD_S = int(os.environ.get("HPSEARCH_GRACE_S", "180"))
MAX_RETRY = 3
SQLITE_LOCK_TIMEOUT_S = 60
REFRESH_S = float(os.environ.get("HPSEARCH_REFRESH_S", "1"))
"""A worker re-reads other workers' trials at most this often (Optuna: before every read)."""
RUNNING_REFRESH_S = float(os.environ.get("HPSEARCH_RUNNING_REFRESH_S", "10"))
"""...and a trial that is still running (its epoch reports) at most this often."""
SQLITE_MANY_WORKERS = 4
"""More local workers than this on one SQLite file get a warning (use PostgreSQL/MariaDB)."""

F = TypeVar("F", bound=Callable[..., Any])


def resolve_url(url: str | None = None) -> str:
    """``url`` if given, else ``$HPSEARCH_STORAGE``, else :data:`DEFAULT_STORAGE`."""
    return url or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print and log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable storage URL>"


def has_password(url: str) -> bool:
    """True if the URL itself carries a password."""
    try:
        return make_url(url).password is not None
    except (ArgumentError, ValueError):
        return False


def is_sqlite(url: str) -> bool:
    """True for ``sqlite://`` URLs (one machine only)."""
    return url.startswith("sqlite")


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL. Example: "
            "sqlite:///hpsearch.db, postgresql://user@host:5432/dbname or "
            "mysql+pymysql://user@host:3306/dbname"
        ) from e
    if parsed.drivername.split("+")[0] not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database {parsed.drivername!r}. "
            "Use sqlite:///hpsearch.db, postgresql://user@host:5432/dbname or "
            "mysql+pymysql://user@host:3306/dbname"
        )
    password = os.environ.get("HPSEARCH_DB_PASSWORD")
    if password and parsed.password is None and not is_sqlite(url):
        parsed = parsed.set(password=password)
    # Bare schemes get the drivers that `pip install 'hpsearch[postgres]'` / `[mysql]` install
    # (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://; both are installed by the extra).
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    return parsed


def mysql_option_file() -> str | None:
    """The MariaDB/MySQL option file with the password (``$HPSEARCH_MYSQL_OPTION_FILE``, else
    ``~/.my.cnf``), or None if there is none."""
    path = os.environ.get("HPSEARCH_MYSQL_OPTION_FILE") or str(Path.home() / ".my.cnf")
    return path if Path(path).is_file() else None


def _engine_kwargs(url: URL, connections: int) -> dict[str, Any]:
    if url.drivername.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S, "isolation_level": None}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    if connections == 0:
        kwargs["poolclass"] = sqlalchemy.pool.NullPool
    else:
        # The worker's threads take turns on the pooled connection (ResilientStorage). The
        # overflow connection is for Optuna's table setup in a new database, which nests two.
        kwargs.update(pool_size=1, max_overflow=1, pool_timeout=120)
    # Shown in pg_stat_activity / the processlist, so a DBA sees whose connection it is.
    label = f"hpsearch {socket.gethostname()}:{os.getpid()}"[:60]
    if url.drivername.startswith("postgresql"):
        kwargs["connect_args"] = {"application_name": label}
    if url.drivername.startswith("mysql"):
        kwargs["connect_args"] = {"program_name": label}
        option_file = mysql_option_file() if url.password is None else None
        if option_file:
            kwargs["connect_args"]["read_default_file"] = option_file
    return kwargs


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


def _is_transient(error: BaseException) -> bool:
    """True for errors that a retry can cure: lost connection, server down, lock, deadlock."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(
            seen,
            sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.InterfaceError
            | sqlalchemy.exc.DisconnectionError
            | sqlalchemy.exc.TimeoutError,
        ):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(error: BaseException, password: str | None = None) -> str:
    """The database's own message, first line, without the password."""
    seen: BaseException = error
    while seen.__cause__ is not None and not isinstance(seen, SQLAlchemyError):
        seen = seen.__cause__
    text = str(getattr(seen, "orig", None) or seen).strip()
    text = text.splitlines()[0] if text else type(seen).__name__
    text = re.sub(r"\s*\(Background on this error.*", "", text)[:200]
    return text.replace(password, "***") if password else text


def _backoff_delays(first_s: float = 0.5, cap_s: float = 10.0) -> Iterator[float]:
    """Seconds to wait before each retry: doubling up to ``cap_s``, jittered so that many
    workers do not come back at the same instant."""
    delay = first_s
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, cap_s)


def _server_full(reason: str) -> bool:
    """The server refused a connection because it has max_connections already."""
    return "too many" in reason.lower()  # PostgreSQL: clients; MariaDB: connections


def _retrying(method: F) -> F:
    """Retry ``method`` with backoff while the database is unreachable (bounded time)."""

    @functools.wraps(method)
    def wrapper(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        if self._gave_up is not None:
            raise StorageError(self._gave_up)
        deadline = None
        full = False
        delays = _backoff_delays()
        while True:
            try:
                with self._one_at_a_time:
                    if self._pending and method.__name__ not in _BUFFERED:
                        self._flush()
                    result = method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if deadline is not None and method.__name__ == "set_trial_state_values":
                    return True  # the attempt that lost its connection had committed
                raise
            except Exception as e:  # noqa: BLE001 - sorted by _is_transient
                if not _is_transient(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    full = _server_full(_reason(e))
                    if full:  # busy, not broken: retry soon, and say so once per process
                        delays = _backoff_delays(cap_s=1.0)
                        if not self._said_full:
                            self._said_full = True
                            _logger.info(
                                "storage %s has no free connection (%s); waiting for one",
                                self.masked_url,
                                _reason(e, self._password),
                            )
                    else:
                        _logger.warning(
                            "storage %s unreachable (%s); retrying for up to %d s",
                            self.masked_url,
                            _reason(e, self._password),
                            self.retry_s,
                        )
                if now >= deadline:
                    self._gave_up = (
                        f"lost the connection to storage {self.masked_url} for "
                        f"{self.retry_s:g} s ({_reason(e, self._password)}); this worker stops. "
                        "Its trial resumes from its last checkpoint once the database is back "
                        "and a worker runs again. Fix: check that the database server is up"
                    )
                    raise StorageError(self._gave_up) from e
                time.sleep(min(next(delays), max(0.0, deadline - now)))
                continue
            if deadline is not None and not full:
                _logger.warning("storage %s reachable again", self.masked_url)
            return result

    return wrapper  # type: ignore[return-value]


class ResilientStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose operations wait out a database restart.

    Every public operation (and the private ones Optuna's cache calls) is retried with
    exponential backoff while the error is a lost connection, an unreachable server, a lock
    timeout or a deadlock, for at most ``retry_s`` seconds; then :class:`StorageError`.
    RUNNING trials that never sent a heartbeat (their worker died between creating the trial
    and its first heartbeat) count as stale after the grace period too.

    Fewer round trips: a trial's parameters and user attributes are buffered and written in
    one transaction just before the process's next other operation (a report, the trial's
    end, a read), instead of one commit each.
    """

    def __init__(self, url: str, *, retry_s: float, masked_url: str, **kwargs: Any) -> None:
        self.retry_s = retry_s
        self.masked_url = masked_url
        self._password = make_url(url).password
        self._gave_up: str | None = None
        self._said_full = False
        # The heartbeat thread starts with each trial and writes at once, while the main thread
        # writes too: taking turns keeps the process on one connection.
        self._one_at_a_time = threading.RLock()
        self._pending: list[tuple[int, str, tuple[Any, ...]]] = []
        self._last_refresh: dict[int, float] = {}
        self._running_read_at: dict[int, float] = {}
        self._next_stale_check: dict[int, float] = {}
        self._loader = TrialLoader()
        super().__init__(url, skip_compatibility_check=True, **kwargs)
        self._check_schema()
        if self.engine.dialect.name == "sqlite":
            _sqlite_write_lock_up_front(self.engine)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
        previous_distribution: optuna.distributions.BaseDistribution | None,
    ) -> None:
        """Buffered: written with the trial's other parameters and attributes in one commit."""
        if previous_distribution is not None:
            optuna.distributions.check_distribution_compatibility(
                previous_distribution, distribution
            )
        args = (param_name, param_value_internal, distribution, previous_distribution)
        self._pending.append((trial_id, "param", args))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Buffered like parameters; any other operation writes the buffer first."""
        json.dumps(value)  # a value that cannot be stored fails here, not at the next write
        self._pending.append((trial_id, "user_attr", (key, value)))

    def _flush(self) -> None:
        """Write buffered parameters and user attributes: one transaction per trial.

        The buffer is taken out first, so an operation nested inside the write cannot write
        it again; what was not written (a lost connection) goes back for the retry.
        """
        pending, self._pending = self._pending, []
        try:
            for trial_id in dict.fromkeys(t for t, _, _ in pending):
                writes = [(kind, args) for t, kind, args in pending if t == trial_id]
                try:
                    with _create_scoped_session(self.scoped_session, True) as session:
                        self._write_buffered(session, trial_id, writes)
                except optuna.exceptions.UpdateFinishedTrialError:
                    _logger.warning(
                        "trial id %d was already finished by another worker; dropping %d "
                        "buffered writes to it",
                        trial_id,
                        len(writes),
                    )
                pending = [p for p in pending if p[0] != trial_id]
        finally:
            self._pending = pending + self._pending

    def _write_buffered(
        self, session: Any, trial_id: int, writes: list[tuple[str, tuple[Any, ...]]]
    ) -> None:
        """One trial's buffered writes as (at most) one INSERT of parameters, one upsert of
        attributes; a parameter seen for the first time is checked against the study first."""
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        if trial.state.is_finished():  # (Optuna's check would read the trial again)
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{trial.number} has already finished and can not be updated."
            )
        params = []
        attrs: dict[str, str] = {}
        for kind, args in writes:
            if kind == "user_attr":
                attrs[args[0]] = json.dumps(args[1])
            elif args[3] is None:  # no cached distribution: Optuna's own check and insert
                self._set_trial_param_without_commit(session, trial_id, *args)
            else:
                name, value, distribution, _ = args
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": value,
                        "distribution_json": optuna.distributions.distribution_to_json(
                            distribution
                        ),
                    }
                )
        if params:
            session.execute(sqlalchemy.insert(models.TrialParamModel), params)
        if attrs:
            session.execute(_upsert_user_attrs(self.engine.name, trial_id, attrs))

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """A new RUNNING trial, numbered in O(1) while the study row is locked.

        Optuna numbers a trial by counting the study's earlier trials, with the study row
        locked: a scan of the whole study (4 ms at 20,000 trials) that every other worker waits
        for. Trials are numbered one at a time under that lock, so the newest trial's number
        plus one is the same count, read from one row. Trials from a template (enqueued,
        retried, added) take Optuna's own path, under the same lock.
        """
        if template_trial is not None:
            return super()._create_new_trial(study_id, template_trial)
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
            trial_id = inserted.inserted_primary_key[0]
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

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None = None,
        included_trial_ids: set[int] | None = None,
        trial_id_greater_than: int = -1,
        *,
        _from_cache: bool = True,
    ) -> list[FrozenTrial]:
        """Trials of a study, read as plain rows (:mod:`hpsearch.trial_loading`).

        Optuna's cache calls this before every sampling and every pruning check, and each
        call reads all running trials of every worker again: with many workers that is most
        of the database's and the client's work. So the cache gets news at most every
        ``REFRESH_S`` (and at once after this process finished a trial); in between it uses
        what it has. A trial still running is read in full at most every
        ``RUNNING_REFRESH_S`` (its parameters and epoch reports; when first seen, its row
        only); that it finished is seen, in full, at the next refresh.
        """
        if _from_cache:
            now = time.monotonic()
            if now - self._last_refresh.get(study_id, -REFRESH_S) < REFRESH_S:
                return []
            self._last_refresh[study_id] = now
        with _create_scoped_session(self.scoped_session) as session:
            trials = self._loader.load_trials(
                session,
                study_id,
                states,
                included_trial_ids or set(),
                trial_id_greater_than,
                keep=self._read_recently if _from_cache else None,
                shallow=self._first_sight if _from_cache else None,
            )
            if not trials:  # no news, or no such study (KeyError, as Optuna's)
                models.StudyModel.find_or_raise_by_id(study_id, session)
        if _from_cache:
            now = time.monotonic()
            for trial in trials:
                if trial.state == TrialState.RUNNING:
                    self._running_read_at[trial._trial_id] = now
                else:
                    self._running_read_at.pop(trial._trial_id, None)
        return trials

    def _read_recently(self, trial_id: int, state: TrialState) -> bool:
        """A running trial the cache read less than ``RUNNING_REFRESH_S`` ago (kept as is)."""
        read_at = self._running_read_at.get(trial_id)
        return (
            state == TrialState.RUNNING
            and read_at is not None
            and time.monotonic() - read_at < RUNNING_REFRESH_S
        )

    def _first_sight(self, trial_id: int, state: TrialState) -> bool:
        """A running trial the cache has not read yet: its row only, the rest ``RUNNING_REFRESH_S``
        later (most trials are seen first just after they start, before they have anything)."""
        return state == TrialState.RUNNING and trial_id not in self._running_read_at

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """One trial, read as plain rows (:mod:`hpsearch.trial_loading`)."""
        with _create_scoped_session(self.scoped_session) as session:
            return self._loader.load_trial(session, trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """All trials of a study, always read fresh."""
        trials = self._get_trials(study_id, states, set(), -1, _from_cache=False)
        return copy.deepcopy(trials) if deepcopy else trials

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Optuna's, and the next read of the study is fresh: this process sees its own
        finished trials at once (other workers' within ``REFRESH_S``)."""
        self._last_refresh.clear()
        return super().set_trial_state_values(trial_id, state, values)

    def count_live_trials_before(self, study_id: int, number: int) -> int:
        """Trials numbered below ``number`` that are not failed (always read fresh)."""
        with _create_scoped_session(self.scoped_session) as session:
            count = (
                session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.number < number)
                .filter(models.TrialModel.state != TrialState.FAIL)
                .scalar()
            )
        return int(count or 0)

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

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        del state["_one_at_a_time"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._one_at_a_time = threading.RLock()

    def check_stale_trials_now(self) -> None:
        """Make the next :meth:`_get_stale_trial_ids` ask the database, however recent the last."""
        self._next_stale_check.clear()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials whose worker is silent for the grace period (or never sent a heartbeat).

        Optuna asks before every trial; the database is asked at most once per heartbeat
        interval (a trial goes stale only after the grace period, 3 intervals by default).
        """
        now = time.monotonic()
        if now < self._next_stale_check.get(study_id, 0.0):
            return []
        self._next_stale_check[study_id] = now + (self.heartbeat_interval or HEARTBEAT_INTERVAL_S)
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 60)
        started = models.TrialModel.__table__.c.datetime_start  # as stored: see trial_loading
        cutoff = as_stored(datetime.now()) - timedelta(seconds=grace)
        with _create_scoped_session(self.scoped_session) as session:
            silent = (
                session.query(models.TrialModel.trial_id)
                .outerjoin(models.TrialHeartbeatModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(started < cutoff)
                .filter(models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all()
            )
        stale += [trial_id for (trial_id,) in silent if trial_id not in stale]
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
            self.set_trial_user_attr(trial_id, "hpsearch:fail_reason", "timeout")
            self.set_trial_user_attr(trial_id, "hpsearch:error", reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first


class TrialCache(_CachedStorage):
    """Optuna's per-process trial cache, with the study's trials kept in number order.

    Optuna's cache sorts every trial of the study by number on every read (with a Python key
    function), and the sampler, the pruner and the budget check read it several times per
    epoch: at 20,000 trials that was most of a worker's CPU. Here the ordered list is made
    once per change of the cache, and each read gets a copy of it (a new list, as before).
    """

    def __init__(self, backend: ResilientStorage) -> None:
        super().__init__(backend)
        self._ordered: dict[tuple[int, frozenset[TrialState] | None], list[FrozenTrial]] = {}

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        super()._add_trials_to_cache(study_id, trials)
        if trials:
            self._ordered = {k: v for k, v in self._ordered.items() if k[0] != study_id}

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """What Optuna's cache returns: the study's trials in number order, fresh within
        ``REFRESH_S``."""
        self._read_trials_from_remote_storage(study_id)
        key = (study_id, None if states is None else frozenset(states))  # type: ignore[arg-type]
        with self._lock:
            ordered = self._ordered.get(key)
            if ordered is None:
                by_number = self._studies[study_id].trials
                ordered = [by_number[n] for n in sorted(by_number)]
                if states is not None:
                    ordered = [t for t in ordered if t.state in states]
                self._ordered[key] = ordered
            return copy.deepcopy(ordered) if deepcopy else list(ordered)


def cached(storage: ResilientStorage) -> TrialCache:
    """The storage as workers use it: behind a per-process trial cache (what Optuna would wrap
    it in, with cheaper reads)."""
    return TrialCache(storage)


_RETRIED = (
    "create_new_study delete_study set_study_user_attr set_study_system_attr "
    "get_study_id_from_name get_study_name_from_id get_study_directions get_study_user_attrs "
    "get_study_system_attrs get_trial_user_attrs get_trial_system_attrs get_all_studies "
    "create_new_trial _create_new_trial set_trial_param _set_trial_param get_trial_param "
    "set_trial_state_values set_trial_intermediate_value set_trial_user_attr "
    "set_trial_system_attr get_trial_id_from_study_id_trial_number get_trial get_all_trials "
    "_get_trials get_best_trial _get_best_trial_id record_heartbeat _get_stale_trial_ids "
    "count_live_trials_before"
).split()


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


_BUFFERED = ("set_trial_param", "_set_trial_param", "set_trial_user_attr")
for _name in _RETRIED:
    setattr(ResilientStorage, _name, _retrying(getattr(ResilientStorage, _name)))


def get_storage(url: str | None = None, *, heartbeat: bool = True) -> ResilientStorage:
    """Open (and create tables in) the study database.

    The process holds one database connection (operations take turns on it), or none
    between operations with ``$HPSEARCH_DB_POOL=0``, for more workers than the server allows
    connections.

    Args:
        url: A SQLAlchemy URL; see :func:`resolve_url` for the default.
        heartbeat: Workers send a heartbeat every 60 s; a trial whose worker was silent for
            180 s is marked FAIL (reason ``timeout``) and re-queued with its parameters and
            epoch history, up to 3 times, so a killed worker loses at most the epoch in flight.
            ``$HPSEARCH_HEARTBEAT_S`` and ``$HPSEARCH_GRACE_S`` change the two intervals.
    Raises:
        StorageError: One line (password masked) if the URL is invalid, the driver missing,
            the server unreachable, the login refused or the database missing.
    """
    url = resolve_url(url)
    parsed = _parse(url)
    connections = int(os.environ.get("HPSEARCH_DB_POOL", "1"))
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": GRACE_PERIOD_S,
            "heartbeat_stale_trial_callback": retry_callback(),
        }
    retry_s = float(os.environ.get("HPSEARCH_DB_RETRY_S", "600"))
    deadline = time.monotonic() + retry_s
    delays = _backoff_delays(cap_s=1.0)  # for a full server: a connection frees up soon
    try:
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return ResilientStorage(
                        parsed.render_as_string(hide_password=False),
                        engine_kwargs=_engine_kwargs(parsed, connections),
                        retry_s=retry_s,
                        masked_url=mask_url(url),
                        **kwargs,
                    )
            except SQLAlchemyError as e:
                # A full server ("too many clients") is busy, not wrong: wait for a free slot.
                if not _server_full(_reason(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(next(delays))
    except ImportError as e:
        raise StorageError(
            f"cannot open storage {mask_url(url)}: its database driver is not installed "
            f"({e.__cause__ or e}). Install it: pip install 'hpsearch[postgres]' for "
            "PostgreSQL, 'hpsearch[mysql]' for MariaDB/MySQL"
        ) from e
    except (SQLAlchemyError, ValueError, optuna.exceptions.StorageInternalError) as e:
        raise StorageError(_connect_error(url, parsed, e)) from e


def _connect_error(url: str, parsed: URL, error: BaseException) -> str:
    """One line: what failed for which (masked) URL, the server's words, and the fix."""
    reason = _reason(error, parsed.password)
    low = reason.lower()
    where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
    if "queuepool limit" in low:
        hint = "report this as a bug; as a workaround set HPSEARCH_DB_POOL=0"
        what = "no free connection in this process's pool"
    elif "does not exist" in low and "database" in low or "unknown database" in low:
        hint = (
            f"create it first, e.g. `createdb {parsed.database}` (PostgreSQL) or "
            f"`mariadb -e 'CREATE DATABASE {parsed.database}'` (MariaDB)"
        )
        what = f"database {parsed.database!r} does not exist"
    elif any(
        s in low for s in ("password", "access denied", "authentication", "role", "no pg_hba")
    ):
        hint = (
            "check the user name in the URL and the password: put it in ~/.pgpass (PostgreSQL), "
            "~/.my.cnf (MariaDB) or $HPSEARCH_DB_PASSWORD, never in job scripts"
        )
        what = f"login refused for user {parsed.username!r}"
    elif any(
        s in low
        for s in (
            "connection refused",
            "can't connect",
            "could not connect",
            "timeout",
            "timed out",
            "name or service",
            "could not translate",
            "no route",
        )
    ):
        hint = f"is the database server running and reachable at {where}? Check host and port"
        what = f"cannot reach the database server at {where}"
    elif "unable to open database file" in low:
        hint = "check that the folder of the SQLite file exists and is writable"
        what = "cannot open the SQLite file"
    else:
        hint = "check the URL, e.g. postgresql://user@host:5432/dbname"
        what = "cannot open the database"
    return f"storage {mask_url(url)}: {what} ({reason}). Fix: {hint}"


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queue a failed trial with its params and intermediate values (epoch history)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRY, inherit_intermediate_values=True
        )


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of all studies in ``storage``."""
    return [s.study_name for s in storage.get_all_studies()]


def check_connection(url: str) -> None:
    """Raise :class:`StorageError` if the database at ``url`` cannot be reached (no writes)."""
    parsed = _parse(url)
    if parsed.drivername.startswith("sqlite"):
        return
    try:
        engine = sqlalchemy.create_engine(parsed, **_engine_kwargs(parsed, 0))
        with engine.connect():
            pass
        engine.dispose()
    except (SQLAlchemyError, ImportError) as e:
        raise StorageError(_connect_error(url, parsed, e)) from e


def warn_if_many_sqlite_workers(url: str, workers: int) -> str | None:
    """A warning text when ``workers`` processes would share one SQLite file, else None."""
    if not is_sqlite(resolve_url(url)) or workers <= SQLITE_MANY_WORKERS:
        return None
    return (
        f"{workers} workers on one SQLite file ({mask_url(resolve_url(url))}): SQLite "
        "serializes every write, so workers wait on each other. Use PostgreSQL or MariaDB "
        "for more than 4 workers, e.g. --storage postgresql://user@host:5432/hpsearch"
    )
