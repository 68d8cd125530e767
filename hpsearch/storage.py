"""Storage URL → Optuna storage, with heartbeats, retries of dead workers' trials, and masking.

The URL comes from ``--storage``, else ``$HPSEARCH_STORAGE``, else ``sqlite:///hpsearch.db``.
Passwords never need to be in the URL: PostgreSQL reads ``~/.pgpass`` and ``$PGPASSWORD``;
for any backend ``$HPSEARCH_DB_PASSWORD`` is filled in at connect time. :func:`mask_url` is used
wherever a URL is printed or logged.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hpsearch.errors import StorageError

_logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
HEARTBEAT_INTERVAL_S = int(os.environ.get("HPSEARCH_HEARTBEAT_S", "60"))
GRACE_PERIOD_S = int(os.environ.get("HPSEARCH_GRACE_S", "180"))
MAX_RETRY = 3


def resolve_url(url: str | None = None) -> str:
    """``url`` if given, else ``$HPSEARCH_STORAGE``, else :data:`DEFAULT_STORAGE`."""
    return url or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print and log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable storage URL>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL. Example: "
            "sqlite:///hpsearch.db or postgresql://user@host/dbname"
        ) from e
    password = os.environ.get("HPSEARCH_DB_PASSWORD")
    if password and parsed.password is None and not parsed.drivername.startswith("sqlite"):
        parsed = parsed.set(password=password)
    # Bare schemes get the drivers that `pip install 'hpsearch[postgres]'` / `[mysql]` install
    # (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://, which is not installed).
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    return parsed


def _engine_kwargs(url: URL) -> dict[str, Any]:
    if url.drivername.startswith("sqlite"):
        # Several local workers write to one file: wait for the lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "pool_recycle": 3600}


def get_storage(url: str | None = None, *, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """Open (and create tables in) the study database.

    Args:
        url: A SQLAlchemy URL; see :func:`resolve_url` for the default.
        heartbeat: Workers send a heartbeat every 60 s; a trial whose worker was silent for
            180 s is marked FAIL and re-queued (with its parameters and epoch history) up to 3
            times, so a killed worker loses at most the epoch in flight.
            ``$HPSEARCH_HEARTBEAT_S`` and ``$HPSEARCH_GRACE_S`` change the two intervals.
    Raises:
        StorageError: If the URL is invalid or the database cannot be reached.

    Note:
        On a cluster, every array task keeps a small connection pool open; size the database's
        ``max_connections`` for the number of concurrent workers.
    """
    url = resolve_url(url)
    parsed = _parse(url)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": GRACE_PERIOD_S,
            "heartbeat_stale_trial_callback": retry_callback(),
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=_engine_kwargs(parsed),
                **kwargs,
            )
    except ImportError as e:
        raise StorageError(
            f"cannot open storage {mask_url(url)}: its database driver is not installed "
            f"({e.__cause__ or e}). Install it: pip install 'hpsearch[postgres]' for "
            "PostgreSQL, 'hpsearch[mysql]' for MariaDB/MySQL"
        ) from e
    except (SQLAlchemyError, ValueError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {mask_url(url)}: {reason}") from e


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queue a dead worker's trial with its params and intermediate values (epoch history)."""
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
        engine = sqlalchemy.create_engine(parsed, **_engine_kwargs(parsed))
        with engine.connect():
            pass
        engine.dispose()
    except (SQLAlchemyError, ImportError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
        raise StorageError(f"cannot reach storage {mask_url(url)}: {reason}") from e
