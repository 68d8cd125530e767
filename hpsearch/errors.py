"""Exception hierarchy: every error a user can fix is an :class:`HpsearchError`.

The CLI prints an ``HpsearchError`` as one line on stderr and exits 1; anything else is a bug
and shows its traceback.
"""

from __future__ import annotations


class HpsearchError(Exception):
    """Base class of all errors that hpsearch reports to the user as one line."""


class SpecError(HpsearchError, ValueError):
    """A study file is missing, not valid TOML, or a field is invalid."""


class DataError(HpsearchError, FileNotFoundError):
    """A dataset could not be found or read."""


class StorageError(HpsearchError):
    """The study database cannot be reached, or the study in it is missing or inconsistent."""


class SubmissionError(HpsearchError, RuntimeError):
    """A Slurm submission was refused before or by ``sbatch``."""


class ExportError(HpsearchError):
    """``hpsearch best --export`` refused its folder (a link, an existing export) or input."""


class NanLossError(HpsearchError, ArithmeticError):
    """Training diverged: the loss became NaN or infinite."""


class TrialTimeoutError(HpsearchError, TimeoutError):
    """A trial's training passed its time limit (``budget.trial_timeout_s``)."""


class BudgetReachedError(HpsearchError):
    """Another worker started the study's last trial at the same moment: this one is surplus."""


class Preempted(KeyboardInterrupt):
    """The worker got SIGTERM/SIGUSR1 (Slurm preemption, time limit, scancel, Ctrl-C).

    It derives from :class:`KeyboardInterrupt` so that Optuna marks the running trial FAIL and
    re-raises instead of treating it as an ordinary objective error.
    """
