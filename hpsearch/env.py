"""Where this process runs: the runs folder, host, Slurm job/array ids and GPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def runs_dir() -> Path:
    """Folder for checkpoints, logs and job scripts: ``$HPSEARCH_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("HPSEARCH_RUNS_DIR", "runs"))


def checkpoint_dir(study: str) -> Path:
    """Checkpoints of ``study``: ``$HPSEARCH_CHECKPOINT_DIR/<study>``, else under the runs folder.

    On a cluster it must be on a filesystem that every node sees, so that a requeued or retried
    trial finds the checkpoint of the worker that ran it before.
    """
    root = os.environ.get("HPSEARCH_CHECKPOINT_DIR")
    return Path(root) / study if root else runs_dir() / study / "checkpoints"


def where_am_i() -> dict[str, str]:
    """Host, Slurm job/array ids and GPU of this process (recorded on every trial)."""
    env = os.environ
    info = {"host": env.get("SLURMD_NODENAME") or socket.gethostname(), "pid": str(os.getpid())}
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
    if job:
        info["slurm_job_id"] = job
    for key, var in (
        ("slurm_array_task_id", "SLURM_ARRAY_TASK_ID"),
        ("slurm_restart_count", "SLURM_RESTART_COUNT"),
        ("gpu", "CUDA_VISIBLE_DEVICES"),
    ):
        if env.get(var):
            info[key] = env[var]
    return info


def log_prefix() -> str:
    """``job 123_4`` inside a Slurm array task, ``pid 999`` elsewhere."""
    env = os.environ
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
    if job and env.get("SLURM_ARRAY_TASK_ID"):
        return f"job {job}_{env['SLURM_ARRAY_TASK_ID']}"
    return f"job {job}" if job else f"pid {os.getpid()}"
