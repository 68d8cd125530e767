"""``hpsearch run``: launch a study and run N worker processes on this machine, with progress.

Each worker is a separate ``hpsearch worker`` process (like an array task) with its share of
the CPU threads; its log goes to ``runs/<study>/logs/worker_<i>.log``. Ctrl-C stops the workers
cleanly: the trials in flight are re-queued and resume from their checkpoints next time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpsearch.env import runs_dir
from hpsearch.preemption import raise_if_stop_requested, stop_signals
from hpsearch.study import BudgetState, budget_state, load_study
from hpsearch.worker import STOP_FILE_ENV

_logger = logging.getLogger(__name__)


def thread_env(threads: int) -> dict[str, str]:
    """Environment that limits TensorFlow/JAX/BLAS to ``threads`` CPU threads."""
    n = str(threads)
    return {
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1" if threads <= 2 else "2",
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={n}",
    }


@dataclass(frozen=True)
class WorkerStop:
    """Why one local worker stopped: ``kind`` is ``budget``, ``timeout``, ``n_trials``,
    ``preempted``, ``failures`` (from the worker's stop file) or ``exit`` (it wrote none)."""

    index: int
    kind: str
    message: str
    exit_code: int


@dataclass(frozen=True)
class RunResult:
    """Outcome of a local run: the workers' exit codes and whether it was interrupted."""

    exit_codes: list[int]
    interrupted: bool
    log_dir: Path
    stops: list[WorkerStop] = field(default_factory=list)
    budget: BudgetState | None = None
    timeout_s: float | None = None


def stop_summary(result: RunResult) -> tuple[str, int]:
    """Why the run ended, in one line, and how many trials of the budget remain.

    Example: ``("stopped: each worker reached the study's timeout_s (570 s)", 12)``.
    """
    budget = result.budget
    remaining = 0 if budget is None else max(0, budget.n_trials - budget.finished)
    kinds = {stop.kind for stop in result.stops}
    if result.interrupted:
        why = "interrupted: the trials in flight were re-queued and resume from their checkpoints"
    elif budget is not None and remaining == 0:
        why = f"done: the study's budget of {budget.n_trials} trials is reached"
    elif bad := [s for s in result.stops if s.kind in ("failures", "exit")]:
        why = "stopped: " + "; ".join(
            f"worker {s.index} {s.message}"
            if s.kind == "failures"
            else f"worker {s.index} exited with code {s.exit_code}: {s.message}"
            for s in bad
        )
    elif kinds == {"timeout"}:
        limit = "" if result.timeout_s is None else f" ({result.timeout_s:g} s)"
        why = f"stopped: each worker reached the study's budget.timeout_s{limit}"
    else:
        why = "stopped: " + "; ".join(f"worker {s.index} {s.message}" for s in result.stops)
    return why, remaining


def run_local(
    study_name: str,
    storage_url: str,
    workers: int,
    *,
    threads_per_worker: int | None = None,
    console: Console | None = None,
    poll_s: float = 2.0,
) -> RunResult:
    """Run ``workers`` worker processes on a launched study until they all stop.

    Args:
        study_name: A study created by :func:`hpsearch.study.launch_study`.
        storage_url: Its storage URL (passed to the workers through the environment).
        workers: Number of local worker processes.
        threads_per_worker: CPU threads each; defaults to ``cpu_count // workers``.
        console: Where the live progress goes; defaults to stderr.
        poll_s: Seconds between progress updates.
    """
    console = console or Console(stderr=True)
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    log_dir = runs_dir() / study_name / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(workers):
        _stop_file(log_dir, i).unlink(missing_ok=True)
        env = {
            **os.environ,
            **thread_env(threads),
            "HPSEARCH_STORAGE": storage_url,
            "HPSEARCH_WORKER_INDEX": str(i),
            STOP_FILE_ENV: str(_stop_file(log_dir, i).resolve()),
            "PYTHONUNBUFFERED": "1",
        }
        with open(log_dir / f"worker_{i}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hpsearch", "worker", "--study", study_name],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; we forward it
                )
            )
    study, spec = load_study(study_name, storage_url, heartbeat=False)
    interrupted = False
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    # Ctrl-C, a SIGTERM to `hpsearch run` (a batch job ending, `kill`) or SIGUSR1 stops the
    # workers. The signal is also remembered and checked at every poll: its exception can be
    # lost when it lands in a finalizer (see hpsearch.preemption).
    with (
        stop_signals(),
        Progress(*columns, console=console, disable=not console.is_terminal) as progress,
    ):
        task = progress.add_task(study_name, total=spec.budget.n_trials, detail="starting")
        last_line = ""
        try:
            while any(p.poll() is None for p in procs):
                raise_if_stop_requested()
                line = _update(
                    progress, task, study, budget_state(study, spec), procs, spec.objective.metric
                )
                if not console.is_terminal and line != last_line:
                    console.print(f"{study_name}: {line}")  # logs and CI get a line per change
                    last_line = line
                time.sleep(poll_s)
        except KeyboardInterrupt:
            interrupted = True
            progress.console.print(
                "[yellow]interrupted: stopping workers (trials in flight are re-queued)"
            )
            _stop(procs)
        budget = budget_state(study, spec)
        _update(progress, task, study, budget, procs, spec.objective.metric)
    codes = [p.wait() for p in procs]
    stops = [_read_stop(log_dir, i, code) for i, code in enumerate(codes)]
    return RunResult(codes, interrupted, log_dir, stops, budget, spec.budget.timeout_s)


def _stop_file(log_dir: Path, index: int) -> Path:
    return log_dir / f"worker_{index}.stop.json"


def _read_stop(log_dir: Path, index: int, code: int) -> WorkerStop:
    """The worker's stop file, else the last line of its log (it crashed or was killed)."""
    try:
        record = json.loads(_stop_file(log_dir, index).read_text(encoding="utf-8"))
        return WorkerStop(index, str(record["kind"]), str(record["message"]), code)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    last = ""
    try:
        with open(log_dir / f"worker_{index}.log", "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
            last = lines[-1].strip() if lines else ""
    except OSError:
        pass
    return WorkerStop(index, "exit", last[:300] or "no log output", code)


def _update(
    progress: Progress,
    task: object,
    study: optuna.Study,
    budget: BudgetState,
    procs: list[subprocess.Popen[bytes]],
    metric: str = "val_accuracy",
) -> str:
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    values = [t.value for t in trials if t.value is not None]
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    best = (min if minimize else max)(values, default=None)
    pruned = budget.finished - len(trials)
    alive = sum(p.poll() is None for p in procs)
    detail = (
        f"complete {len(trials)} · pruned {pruned} · failed {budget.failed} · "
        f"running {budget.running} · best {metric.replace('val_accuracy', 'val_acc')} "
        f"{'-' if best is None else f'{best:.4f}'} · workers {alive}"
    )
    progress.update(task, completed=budget.finished, detail=detail)  # type: ignore[arg-type]
    return f"{budget.finished}/{budget.n_trials} finished · {detail}"


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
