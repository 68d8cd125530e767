"""``hpsearch run``: launch a study and run N worker processes on this machine, with progress.

Each worker is a separate ``hpsearch worker`` process (like an array task) with its share of
the CPU threads; its log goes to ``runs/<study>/logs/worker_<i>.log``. Ctrl-C stops the workers
cleanly: the trials in flight are re-queued and resume from their checkpoints next time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpsearch.env import runs_dir
from hpsearch.preemption import raise_if_stop_requested, stop_signals
from hpsearch.study import BudgetState, budget_state, load_study

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
class RunResult:
    """Outcome of a local run: the workers' exit codes and whether it was interrupted."""

    exit_codes: list[int]
    interrupted: bool
    log_dir: Path


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
        env = {
            **os.environ,
            **thread_env(threads),
            "HPSEARCH_STORAGE": storage_url,
            "HPSEARCH_WORKER_INDEX": str(i),
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
        _update(progress, task, study, budget_state(study, spec), procs, spec.objective.metric)
    return RunResult([p.wait() for p in procs], interrupted, log_dir)


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
