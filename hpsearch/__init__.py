"""hpsearch: automated hyperparameter search for Keras CNNs on Slurm GPU clusters.

The public API is small: :func:`launch`, :func:`run_workers`, :func:`leaderboard` and
:func:`export_best` (see :mod:`hpsearch.api`), and the CLI (``hpsearch --help``). Keras is
imported only when a model is built, so importing hpsearch is fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hpsearch.errors import (  # noqa: E402
    DataError,
    HpsearchError,
    SpecError,
    StorageError,
    SubmissionError,
)

_API = ("export_best", "launch", "leaderboard", "leaderboard_rows", "run_workers")

__all__ = [
    "DataError",
    "HpsearchError",
    "SpecError",
    "StorageError",
    "SubmissionError",
    "__version__",
    *_API,
]


def __getattr__(name: str) -> object:
    """The API functions of :mod:`hpsearch.api`, imported on first use (Keras never here)."""
    if name in _API:
        from hpsearch import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
