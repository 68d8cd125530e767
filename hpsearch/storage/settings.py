"""The storage's tunables, read from the environment once per storage, each checked.

A bad value is one line naming the variable, what it holds and an example, instead of an
error from deep inside Optuna that blames the storage URL.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from hpsearch.errors import StorageError

SQLITE_LOCK_TIMEOUT_S = 60
MAX_RETRY = 3
"""A trial whose worker died is re-queued at most this often."""
SQLITE_MANY_WORKERS = 4
"""More local workers than this on one SQLite file get a warning (use PostgreSQL/MariaDB)."""


def _number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise StorageError(
            f"${name} must be {kind} >= {minimum:g}, got {shown!r}. "
            f"Example: export {name}={default:g} (or unset it)"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """How a storage behaves under many workers and faults (all from ``$HPSEARCH_*``)."""

    heartbeat_s: int = 60
    """``$HPSEARCH_HEARTBEAT_S``: a running trial's worker writes a heartbeat this often."""
    grace_s: int = 180
    """``$HPSEARCH_GRACE_S``: a trial silent this long is failed (reason ``timeout``)."""
    refresh_s: float = 1.0
    """``$HPSEARCH_REFRESH_S``: a worker re-reads other workers' trials at most this often."""
    running_refresh_s: float = 10.0
    """``$HPSEARCH_RUNNING_REFRESH_S``: and a running trial's epoch reports at most this often."""
    retry_s: float = 600.0
    """``$HPSEARCH_DB_RETRY_S``: operations wait out a database restart this long."""
    pool: int = 1
    """``$HPSEARCH_DB_POOL``: connections held per process (0: connect per operation)."""

    @classmethod
    def from_environment(cls) -> Settings:
        """Read and check every ``$HPSEARCH_*`` storage variable.

        Raises:
            StorageError: One line naming the variable with a bad value.
        """
        d = cls()
        heartbeat = int(_number("HPSEARCH_HEARTBEAT_S", d.heartbeat_s, minimum=1, integer=True))
        grace = int(_number("HPSEARCH_GRACE_S", d.grace_s, minimum=1, integer=True))
        if grace <= heartbeat:
            raise StorageError(
                f"$HPSEARCH_GRACE_S ({grace}) must be longer than $HPSEARCH_HEARTBEAT_S "
                f"({heartbeat}), or every trial is failed between two heartbeats. Example: "
                f"export HPSEARCH_GRACE_S={3 * heartbeat}"
            )
        return cls(
            heartbeat_s=heartbeat,
            grace_s=grace,
            refresh_s=_number("HPSEARCH_REFRESH_S", d.refresh_s, minimum=0),
            running_refresh_s=_number(
                "HPSEARCH_RUNNING_REFRESH_S", d.running_refresh_s, minimum=0
            ),
            retry_s=_number("HPSEARCH_DB_RETRY_S", d.retry_s, minimum=0),
            pool=int(_number("HPSEARCH_DB_POOL", d.pool, minimum=0, integer=True)),
        )
