"""Stop signals are never lost, even when Python drops the exception they raise."""

from __future__ import annotations

import os
import signal

import pytest

from hpsearch.errors import Preempted
from hpsearch.preemption import raise_if_stop_requested, stop_requested, stop_signals


class _SignalsItselfWhileFinalized:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs here, inside __del__, where Python
            pass  # prints "Exception ignored in ..." and drops the Preempted it raises


def test_signal_raises_preempted_and_is_remembered() -> None:
    with stop_signals():
        with pytest.raises(Preempted, match="SIGUSR1"):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(10_000):
                pass
        assert stop_requested() == "SIGUSR1"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_signal_whose_exception_was_dropped_is_still_seen() -> None:
    with stop_signals():
        _SignalsItselfWhileFinalized()  # refcount 0: __del__ runs at once
        assert stop_requested() == "SIGTERM"
        with pytest.raises(Preempted, match="SIGTERM"):
            raise_if_stop_requested()


def test_each_block_starts_clean_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals():
        assert stop_requested() is None
        raise_if_stop_requested()  # nothing requested: no exception
    assert signal.getsignal(signal.SIGTERM) is before
