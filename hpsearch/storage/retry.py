"""Which database errors are worth waiting out, and how long to wait.

Only a lost or refused connection, a lock timeout, a deadlock or a serialization failure is
transient: a restart or a failover cures it. Anything else (a missing table or column, a
foreign ``studies`` table, a corrupt SQLite file, a constraint) is an answer, raised at once.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import optuna
import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from hpsearch.errors import StorageError

_logger = logging.getLogger(__name__)

T = TypeVar("T")

_MYSQL_TRANSIENT = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    1213,  # deadlock
    2002,  # can't connect (socket)
    2003,  # can't connect (TCP)
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (system error)
}
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "unable to open database file",  # a shared filesystem that went away for a while
    "disk i/o error",
)
_POSTGRES_TRANSIENT_SQLSTATE = ("08", "40", "53", "57P")  # connection, rollback, resources, admin


def _dbapi_error(error: BaseException) -> BaseException | None:
    """The driver's own exception behind ``error`` (SQLAlchemy's ``orig``, or a cause)."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return None
        orig = getattr(seen, "orig", None)
        if isinstance(orig, BaseException):
            return orig
        seen = seen.__cause__ or seen.__context__
    return None


def is_transient(error: BaseException) -> bool:
    """True for errors that a retry can cure: lost connection, server down, lock, deadlock."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sqlalchemy.exc.DisconnectionError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return _driver_says_transient(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def _driver_says_transient(error: SQLAlchemyError) -> bool:
    orig = _dbapi_error(error)
    if orig is None:
        return True
    module = type(orig).__module__
    if module.startswith("sqlite3"):
        return any(s in str(orig).lower() for s in _SQLITE_TRANSIENT)
    if module.startswith("pymysql"):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        return code is None or code in _MYSQL_TRANSIENT
    sqlstate = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if sqlstate:  # psycopg 2 / 3
        return str(sqlstate).startswith(_POSTGRES_TRANSIENT_SQLSTATE)
    # No SQLSTATE: psycopg raises OperationalError without one for a connection it lost.
    return True


def reason(error: BaseException, password: str | None = None) -> str:
    """The database's own message, first line, without the password."""
    seen: BaseException = error
    while seen.__cause__ is not None and not isinstance(seen, SQLAlchemyError):
        seen = seen.__cause__
    text = str(getattr(seen, "orig", None) or seen).strip()
    text = text.splitlines()[0] if text else type(seen).__name__
    text = re.sub(r"\s*\(Background on this error.*", "", text)[:200]
    return text.replace(password, "***") if password else text


def backoff_delays(first_s: float = 0.5, cap_s: float = 10.0) -> Iterator[float]:
    """Seconds to wait before each retry: doubling up to ``cap_s``, jittered so that many
    workers do not come back at the same instant."""
    delay = first_s
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, cap_s)


def server_full(text: str) -> bool:
    """The server refused a connection because it has max_connections already."""
    return "too many" in text.lower()  # PostgreSQL: clients; MariaDB: connections


class Retrier:
    """Runs storage operations one at a time, retrying transient errors for ``retry_s``.

    One lock serializes the process's operations (the heartbeat thread and the trial take
    turns on one connection). After ``retry_s`` seconds without the database the retrier gives
    up for good: that and every later call raise :class:`StorageError`.
    """

    def __init__(self, retry_s: float, masked_url: str, password: str | None) -> None:
        self.retry_s = retry_s
        self.masked_url = masked_url
        self._password = password
        self._gave_up: str | None = None
        self._said_full = False
        self.lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()

    def call(self, operation: Callable[[], T], *, committed_if_finished: bool = False) -> T:
        """``operation()``, retried while the database is unreachable.

        Args:
            operation: One storage operation (a transaction of its own).
            committed_if_finished: The operation finishes a trial: an
                ``UpdateFinishedTrialError`` after a retry means the lost attempt committed.
        """
        if self._gave_up is not None:
            raise StorageError(self._gave_up)
        deadline: float | None = None
        full = False
        delays = backoff_delays()
        while True:
            try:
                with self.lock:
                    result = operation()
            except optuna.exceptions.UpdateFinishedTrialError:
                if deadline is not None and committed_if_finished:
                    return True  # type: ignore[return-value]
                raise
            except Exception as e:  # noqa: BLE001 - sorted by is_transient
                if not is_transient(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    full = server_full(reason(e))
                    delays = self._first_failure(e, full) or delays
                if now >= deadline:
                    self._gave_up = (
                        f"lost the connection to storage {self.masked_url} for "
                        f"{self.retry_s:g} s ({reason(e, self._password)}); this worker stops. "
                        "Its trial resumes from its last checkpoint once the database is back "
                        "and a worker runs again. Fix: check that the database server is up"
                    )
                    raise StorageError(self._gave_up) from e
                time.sleep(min(next(delays), max(0.0, deadline - now)))
                continue
            if deadline is not None and not full:
                _logger.warning("storage %s reachable again", self.masked_url)
            return result

    def _first_failure(self, error: Exception, full: bool) -> Iterator[float] | None:
        if not full:
            _logger.warning(
                "storage %s unreachable (%s); retrying for up to %d s",
                self.masked_url,
                reason(error, self._password),
                self.retry_s,
            )
            return None
        if not self._said_full:  # busy, not broken: retry soon, and say so once per process
            self._said_full = True
            _logger.info(
                "storage %s has no free connection (%s); waiting for one",
                self.masked_url,
                reason(error, self._password),
            )
        return backoff_delays(cap_s=1.0)
