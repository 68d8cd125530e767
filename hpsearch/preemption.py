"""Stop signals: SIGTERM (scancel, preemption), SIGUSR1 (Slurm's warning before a time limit)
and SIGINT (Ctrl-C).

The first stop signal raises :class:`~hpsearch.errors.Preempted` in the main thread, which
interrupts training mid-epoch. Python drops an exception raised while it runs a finalizer or a
weakref callback ("Exception ignored in ..."), and the interpreter may be in one when the signal
arrives. So the request is also remembered: training checks it after every epoch's checkpoint
(:func:`raise_if_stop_requested`) and the worker before every trial (:func:`stop_requested`).
A lost exception therefore costs at most the rest of the epoch in flight, never the worker's
shutdown.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from hpsearch.errors import Preempted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

_requested: list[str] = []


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, the first stop signal raises :class:`Preempted` and is remembered."""
    _requested.clear()

    def handler(signum: int, frame: FrameType | None) -> None:
        if _requested:
            return  # already shutting down; let the first one finish cleanly
        _requested.append(signal.Signals(signum).name)
        raise Preempted(f"received {_requested[0]}")

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_requested() -> str | None:
    """The name of the stop signal received (e.g. ``"SIGTERM"``), or None."""
    return _requested[0] if _requested else None


def raise_if_stop_requested() -> None:
    """Raise :class:`Preempted` if a stop signal arrived (even if its exception was lost)."""
    if _requested:
        raise Preempted(f"received {_requested[0]}")
