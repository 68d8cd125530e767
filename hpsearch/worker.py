"""The worker loop that every local process and every Slurm array task runs.

A worker loads the study by name, asks it for trials and trains them until the study's trial
budget is reached (complete + pruned + running trials), its own ``--n-trials`` or ``--timeout``
is used up, or too many trials in a row failed. SIGTERM, SIGUSR1 (Slurm's pre-termination
signal) and SIGINT interrupt the trial in flight: it is marked FAIL with reason ``preempted``
and re-queued with its parameters and epoch history, and the next worker resumes it from its
last checkpoint.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpsearch import attr_names
from hpsearch.env import log_prefix
from hpsearch.errors import HpsearchError, Preempted
from hpsearch.objective import Objective
from hpsearch.preemption import stop_requested, stop_signals
from hpsearch.spec import StudySpec
from hpsearch.storage import fail_stale_trials, get_trial, preempt_and_requeue
from hpsearch.study import budget_state, load_study

_logger = logging.getLogger(__name__)

STOP_FILE_ENV = "HPSEARCH_STOP_FILE"
"""Where a worker writes why it stopped (JSON: kind, message, trials_run); ``hpsearch run`` reads
it. ``kind`` is one of ``budget``, ``timeout``, ``n_trials``, ``preempted``, ``failures``."""


@dataclass(frozen=True)
class WorkerResult:
    """Why and after how many trials a worker stopped."""

    trials_run: int
    stopped_because: str
    preempted: bool = False
    kind: str = ""


def default_worker_index() -> int:
    """Array task id (+ restart count, worker slot) under Slurm, else ``$HPSEARCH_WORKER_INDEX``.

    ``$HPSEARCH_WORKER_SLOT`` numbers the ``--workers-per-gpu`` workers of one array task.
    """
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env:
        return (
            int(env["SLURM_ARRAY_TASK_ID"])
            + 1000 * int(env.get("SLURM_RESTART_COUNT", 0))
            + 1_000_000 * int(env.get("HPSEARCH_WORKER_SLOT", 0))
        )
    return int(env.get("HPSEARCH_WORKER_INDEX", 0))


def run_worker(
    study_name: str,
    storage_url: str | None = None,
    *,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    worker_index: int | None = None,
) -> WorkerResult:
    """Run trials of ``study_name`` until the budget, ``n_trials`` or ``timeout_s`` is reached.

    Args:
        study_name: A study created by ``hpsearch launch``.
        storage_url: Storage URL (default: ``$HPSEARCH_STORAGE`` or ``sqlite:///hpsearch.db``).
        n_trials: Stop after this many trials of this worker. Defaults to no limit.
        timeout_s: Start no new trial after this many seconds. Defaults to the spec's
            ``budget.timeout_s``.
        worker_index: Offsets the sampler seed so parallel workers differ.
    Raises:
        HpsearchError: After ``budget.max_consecutive_failures`` failed trials in a row.
    """
    index = default_worker_index() if worker_index is None else worker_index
    study, spec = load_study(study_name, storage_url, worker_index=index)
    objective = Objective(spec)
    optimize_logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietSurplusTrials) for f in optimize_logger.filters):
        optimize_logger.addFilter(_QuietSurplusTrials())
    if _budget_spent(study, spec):  # a surplus array task ends before Keras is even imported
        return _stopped(0, f"study budget of {spec.budget.n_trials} trials reached", "budget")
    _freeze_startup_objects()
    timeout_s = timeout_s or spec.budget.timeout_s
    started = time.monotonic()
    trials_run = failures_in_a_row = 0
    _logger.info("[%s] worker %d started on study %s", log_prefix(), index, study_name)
    with stop_signals():
        while True:
            if signal_name := stop_requested():  # its exception was lost: hpsearch.preemption
                return _stopped(
                    trials_run, f"preempted ({signal_name})", "preempted", preempted=True
                )
            if n_trials is not None and trials_run >= n_trials:
                return _stopped(trials_run, f"ran its {n_trials} trial(s)", "n_trials")
            if timeout_s is not None and time.monotonic() - started >= timeout_s:
                return _stopped(trials_run, f"timeout of {timeout_s:g} s reached", "timeout")
            if _budget_spent(study, spec):
                return _stopped(
                    trials_run, f"study budget of {spec.budget.n_trials} trials reached", "budget"
                )
            objective.current_trial_id = None
            try:
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            except Preempted as e:
                _requeue_interrupted(study, objective.current_trial_id)
                return _stopped(trials_run, f"preempted ({e})", "preempted", preempted=True)
            trials_run += 1
            trial = (
                None
                if objective.current_trial_id is None
                else get_trial(study, objective.current_trial_id)
            )
            if trial is not None and trial.user_attrs.get(attr_names.FAIL_REASON) == "budget":
                return _stopped(trials_run - 1, "study budget reached (surplus trial)", "budget")
            if trial is not None and trial.state == TrialState.FAIL:
                failures_in_a_row += 1
                if failures_in_a_row >= spec.budget.max_consecutive_failures:
                    why = (
                        f"{failures_in_a_row} trials in a row failed; last: "
                        f"{trial.user_attrs.get('hpsearch:error', 'unknown error')}"
                    )
                    _record_stop("failures", why, trials_run)
                    raise HpsearchError(f"stopping: {why}")
            else:
                failures_in_a_row = 0


class _QuietSurplusTrials(logging.Filter):
    """Drop Optuna's traceback for a surplus trial: it is expected, and the worker says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "BudgetReachedError" not in record.getMessage()


def _budget_spent(study: optuna.Study, spec: StudySpec) -> bool:
    """True when no new trial may start: the budget is reached by live trials."""
    fail_stale_trials(study)  # a dead worker's trial must not hold the budget (the
    budget = budget_state(study, spec)  # storage asks once per heartbeat interval)
    if budget.exhausted and budget.running:  # unless a running one's worker is dead
        fail_stale_trials(study, now=True)
        budget = budget_state(study, spec)
    return budget.exhausted


def _freeze_startup_objects() -> None:
    """Keep the millions of objects of TensorFlow, Keras and Optuna out of the cyclic GC.

    The collection after every trial (which frees the trial's model) and the automatic ones
    during training then scan only what trials allocate: 0.26 s less per trial here.
    """
    import keras  # noqa: F401 - importing it is what allocates most long-lived objects

    gc.collect()
    gc.freeze()


def _requeue_interrupted(study: optuna.Study, trial_id: int | None) -> None:
    """Mark the interrupted trial FAIL (if Optuna has not) and queue its retry."""
    if trial_id is None:
        return
    trial = preempt_and_requeue(study, trial_id)
    if trial is not None:
        _logger.info(
            "[%s trial %d] preempted; re-queued to resume from its last checkpoint",
            log_prefix(),
            trial.number,
        )


def _stopped(trials_run: int, why: str, kind: str, preempted: bool = False) -> WorkerResult:
    _logger.info("[%s] worker stops after %d trial(s): %s", log_prefix(), trials_run, why)
    _record_stop(kind, why, trials_run)
    return WorkerResult(trials_run, why, preempted, kind)


def _record_stop(kind: str, why: str, trials_run: int) -> None:
    """Write why this worker stopped to ``$HPSEARCH_STOP_FILE``, if set (by ``hpsearch run``)."""
    path = os.environ.get(STOP_FILE_ENV)
    if not path:
        return
    record = {"kind": kind, "message": why, "trials_run": trials_run}
    try:
        Path(path).write_text(json.dumps(record), encoding="utf-8")
    except OSError as e:
        _logger.warning("[%s] cannot write %s: %s", log_prefix(), path, e)
