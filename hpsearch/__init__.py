"""hpsearch: automated hyperparameter search for Keras CNNs on Slurm GPU clusters.

The public API is small; the CLI (``hpsearch --help``) is the main entry point. Keras is imported
only when a model is built, so importing hpsearch is fast.
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

__all__ = [
    "DataError",
    "HpsearchError",
    "SpecError",
    "StorageError",
    "SubmissionError",
    "__version__",
]
