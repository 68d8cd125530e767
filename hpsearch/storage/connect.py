"""Open a study database: engine settings, the checks before Optuna touches it, one-line errors."""

from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from hpsearch.errors import StorageError
from hpsearch.storage.rdb import ResilientStorage
from hpsearch.storage.retry import backoff_delays, reason, server_full
from hpsearch.storage.settings import SQLITE_LOCK_TIMEOUT_S, Settings
from hpsearch.storage.urls import (
    is_sqlite,
    mask_url,
    mysql_option_file,
    parse_url,
    resolve_url,
    sqlite_path,
    url_password,
)


def engine_kwargs(url: URL, connections: int) -> dict[str, Any]:
    """SQLAlchemy engine options: one pooled connection (or none), a label for the DBA."""
    if url.drivername.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S, "isolation_level": None}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    if connections == 0:
        kwargs["poolclass"] = sqlalchemy.pool.NullPool
    else:
        # The worker's threads take turns on the pooled connection (Retrier). The overflow
        # connection is for Optuna's table setup in a new database, which nests two.
        kwargs.update(pool_size=1, max_overflow=1, pool_timeout=120)
    # Shown in pg_stat_activity / the processlist, so a DBA sees whose connection it is.
    label = f"hpsearch {socket.gethostname()}:{os.getpid()}"[:60]
    if url.drivername.startswith("postgresql"):
        kwargs["connect_args"] = {"application_name": label}
    if url.drivername.startswith("mysql"):
        kwargs["connect_args"] = {"program_name": label}
        option_file = mysql_option_file() if url_password(url) is None else None
        if option_file:
            kwargs["connect_args"]["read_default_file"] = option_file
    return kwargs


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queue a failed trial with its params and epoch history (at most 3 times); the retry
    starts without the failed attempt's ``hpsearch:fail_reason`` and ``hpsearch:error``."""
    from hpsearch.storage.requeue import RequeueWithHistory

    return RequeueWithHistory()


def _check_tables(url: str, parsed: URL, *, read_only: bool) -> None:
    """Refuse a database whose tables Optuna would misread, and (read-only) one without them.

    A table named like Optuna's but missing its columns (another program's ``studies``) is
    one line here instead of a failure deep inside Optuna. A read-only command must not
    create the database or Optuna's tables: a typo in ``--storage`` is an error, not a new,
    empty study database.
    """
    path = sqlite_path(url)
    if read_only and path is not None and not path.is_file():
        raise StorageError(
            f"storage {mask_url(url)}: there is no such database (no file {path.resolve()}). "
            "Fix: check the --storage URL for a typo, or launch a study there first: "
            "hpsearch launch STUDY.toml --storage URL"
        )
    if path is not None and not path.is_file():
        return  # a new SQLite file: nothing to check
    engine = sqlalchemy.create_engine(parsed, **engine_kwargs(parsed, 0))
    try:
        with engine.connect() as conn:
            columns = _columns(conn)
        present = set(columns)
        wanted = models.BaseModel.metadata.tables
        if read_only and "studies" not in present:
            raise StorageError(
                f"storage {mask_url(url)}: no study was ever launched in this database (it "
                "has no Optuna tables); nothing was written to it. Fix: check the --storage "
                "URL, or launch a study there first: hpsearch launch STUDY.toml --storage URL"
            )
        for name in sorted(present & set(wanted)):
            missing = sorted({c.name for c in wanted[name].columns} - columns[name])
            if missing:
                raise StorageError(
                    f"storage {mask_url(url)}: its table {name!r} is not Optuna's (no column "
                    f"{', '.join(missing)}): this database holds other data or a damaged "
                    "study database. Fix: use a database of its own for hpsearch, e.g. "
                    "createdb hpsearch"
                )
    finally:
        engine.dispose()


def _columns(conn: sqlalchemy.Connection) -> dict[str, set[str]]:
    """Every table of the database with its column names, in one query where possible."""
    found: dict[str, set[str]] = {}
    if conn.dialect.name == "sqlite":
        for (table,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).all():
            quoted = '"' + str(table).replace('"', '""') + '"'
            rows = conn.exec_driver_sql(f"PRAGMA table_info({quoted})").all()
            found[str(table)] = {str(r[1]) for r in rows}
        return found
    schema = "current_schema()" if conn.dialect.name == "postgresql" else "DATABASE()"
    rows = conn.exec_driver_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        f"WHERE table_schema = {schema}"
    ).all()
    for table, column in rows:
        found.setdefault(str(table), set()).add(str(column))
    return found


def get_storage(
    url: str | None = None, *, heartbeat: bool = True, read_only: bool = False
) -> ResilientStorage:
    """Open (and, unless ``read_only``, create tables in) the study database.

    The process holds one database connection (operations take turns on it), or none
    between operations with ``$HPSEARCH_DB_POOL=0``, for more workers than the server allows
    connections.

    Args:
        url: A SQLAlchemy URL; see :func:`~hpsearch.storage.resolve_url` for the default.
        heartbeat: Workers send a heartbeat every 60 s; a trial whose worker was silent for
            180 s is marked FAIL (reason ``timeout``) and re-queued with its parameters and
            epoch history, up to 3 times, so a killed worker loses at most the epoch in flight.
            ``$HPSEARCH_HEARTBEAT_S`` and ``$HPSEARCH_GRACE_S`` change the two intervals.
        read_only: For commands that only look (``status``, ``report``, ``dashboard``,
            ``best``, ``studies``): a database without Optuna's tables, or a SQLite file that
            does not exist, is an error instead of being created.
    Raises:
        StorageError: One line (password masked) if the URL is invalid, the driver missing,
            the server unreachable, the login refused, the database missing, its tables not
            Optuna's, or an environment variable invalid.

    Example:
        >>> storage = get_storage("sqlite:///hpsearch.db", heartbeat=False)  # doctest: +SKIP
    """
    url = resolve_url(url)
    parsed = parse_url(url)
    settings = Settings.from_environment()
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": settings.heartbeat_s,
            "grace_period": settings.grace_s,
            "heartbeat_stale_trial_callback": retry_callback(),
        }
    deadline = time.monotonic() + settings.retry_s
    delays = backoff_delays(cap_s=1.0)  # for a full server: a connection frees up soon
    try:
        while True:
            try:
                _check_tables(url, parsed, read_only=read_only)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return ResilientStorage(
                        parsed.render_as_string(hide_password=False),
                        engine_kwargs=engine_kwargs(parsed, settings.pool),
                        settings=settings,
                        masked_url=mask_url(url),
                        password=url_password(parsed),
                        **kwargs,
                    )
            except SQLAlchemyError as e:
                # A full server ("too many clients") is busy, not wrong: wait for a free slot.
                if not server_full(reason(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(next(delays))
    except ImportError as e:
        raise StorageError(
            f"cannot open storage {mask_url(url)}: its database driver is not installed "
            f"({e.__cause__ or e}). Install it: pip install 'hpsearch[postgres]' for "
            "PostgreSQL, 'hpsearch[mysql]' for MariaDB/MySQL"
        ) from e
    except (SQLAlchemyError, ValueError, optuna.exceptions.StorageInternalError) as e:
        raise StorageError(connect_error(url, parsed, e)) from e


def connect_error(url: str, parsed: URL, error: BaseException) -> str:
    """One line: what failed for which (masked) URL, the server's words, and the fix."""
    text = reason(error, url_password(parsed))
    low = text.lower()
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
    elif "malformed" in low or "not a database" in low:
        hint = "the SQLite file is damaged: restore it from a backup, or start a new one"
        what = "the database file is damaged"
    else:
        hint = "check the URL, e.g. postgresql://user@host:5432/dbname"
        what = "cannot open the database"
    return f"storage {mask_url(url)}: {what} ({text}). Fix: {hint}"


def check_connection(url: str) -> None:
    """Raise :class:`StorageError` if the database at ``url`` cannot be reached (no writes)."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite"):
        return
    try:
        engine = sqlalchemy.create_engine(parsed, **engine_kwargs(parsed, 0))
        with engine.connect():
            pass
        engine.dispose()
    except (SQLAlchemyError, ImportError) as e:
        raise StorageError(connect_error(url, parsed, e)) from e


def warn_if_many_sqlite_workers(url: str | None, workers: int) -> str | None:
    """A warning text when ``workers`` processes would share one SQLite file, else None."""
    from hpsearch.storage.settings import SQLITE_MANY_WORKERS

    resolved = resolve_url(url)
    if not is_sqlite(resolved) or workers <= SQLITE_MANY_WORKERS:
        return None
    return (
        f"{workers} workers on one SQLite file ({mask_url(resolved)}): SQLite "
        "serializes every write, so workers wait on each other. Use PostgreSQL or MariaDB "
        "for more than 4 workers, e.g. --storage postgresql://user@host:5432/hpsearch"
    )
