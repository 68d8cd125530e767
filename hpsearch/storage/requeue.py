"""Re-queue a trial whose worker died or was preempted, to resume from its checkpoint."""

from __future__ import annotations

import copy
import warnings

import optuna
from optuna.trial import FrozenTrial

from hpsearch import attr_names
from hpsearch.storage.settings import MAX_RETRY

FAILED_ATTEMPT_ATTRS = (attr_names.FAIL_REASON, attr_names.ERROR)
"""User attributes that describe one failed attempt: a retry does not inherit them."""


class RequeueWithHistory(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback with the epoch history, at most ``MAX_RETRY`` times.

    The retry inherits the failed trial's parameters, user attributes and epoch reports
    (Optuna's), except why the failed attempt failed: a waiting retry is not a failure.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=MAX_RETRY, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue the retry of ``trial`` (a WAITING trial) unless it was retried enough."""
        attempt = copy.copy(trial)
        attempt.user_attrs = {
            k: v for k, v in trial.user_attrs.items() if k not in FAILED_ATTEMPT_ATTRS
        }
        super().__call__(study, attempt)
