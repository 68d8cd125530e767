"""``hpsearch submit`` and ``hpsearch cancel``: a study's Slurm array jobs.

``hpsearch status`` shows the jobs through :func:`hpsearch.slurm.status_for_study`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hpsearch.cli import NameArg, StorageOpt, app, err, out
from hpsearch.errors import SubmissionError

__all__ = ["cancel", "submit"]

_PROFILE_HELP = (
    "Site profile: slurm_array/NAME.toml (bridges2, expanse, generic, ...) or a path to one. "
    "Default: $HPSEARCH_SLURM_PROFILE, else generic."
)


@app.command()
def submit(
    name: NameArg,
    array: Annotated[
        str | None,
        typer.Option(help="Array task ids with an optional throttle, e.g. 0-31%8 (required)."),
    ] = None,
    storage: StorageOpt = None,
    profile: Annotated[str | None, typer.Option(help=_PROFILE_HELP, show_default=False)] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Account (allocation) to charge.")] = None,
    gpus_per_task: Annotated[
        int | None, typer.Option(help="GPUs per array task (0 = CPU only).")
    ] = None,
    workers_per_gpu: Annotated[
        int | None, typer.Option(help="Worker processes per task, sharing its GPU.")
    ] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="CPU cores per task.")] = None,
    mem: Annotated[str | None, typer.Option(help="Memory per task, e.g. 16G.")] = None,
    time: Annotated[
        str | None, typer.Option(help="Time limit per task run, HH:MM:SS or D-HH:MM:SS.")
    ] = None,
    container: Annotated[
        str | None,
        typer.Option(help="Singularity image: workers run in `singularity exec --nv IMAGE`."),
    ] = None,
    signal_seconds: Annotated[
        int | None,
        typer.Option(help="Seconds before the time limit to checkpoint and requeue (USR1)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the job script; submit nothing.")
    ] = False,
) -> None:
    """Submit a Slurm job array whose tasks run `hpsearch worker` for a launched study.

    Flags override the profile's values. The script goes to runs/STUDY/sbatch/, the logs to
    runs/STUDY/logs/JOB_TASK.out. Prints the job id.
    """
    from hpsearch.slurm import SubmitOptions, render_script, submit_script

    if not array:
        raise SubmissionError(
            "`--array` is required: which array tasks to run and how many at once. "
            "Example: --array 0-31%8"
        )
    options = SubmitOptions(
        array=array,
        profile=profile,
        partition=partition,
        account=account,
        gpus_per_task=gpus_per_task,
        workers_per_gpu=workers_per_gpu,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time=time,
        container=container,
        signal_seconds=signal_seconds,
    )
    job = render_script(name, storage, options)
    for note in job.notes:
        typer.echo(f"note: {note}", err=True)
    if dry_run:
        typer.echo(job.script, nl=False)
        return
    submitted = submit_script(job)
    typer.echo(submitted.job_id)
    err.print(
        f"submitted array job {submitted.job_id} ({job.array.text}, profile {job.profile_name}) "
        f"for study {name}\n  script {submitted.script_path}\n  logs   "
        f"{submitted.log_dir}/{submitted.job_id}_<task>.out\n  watch: hpsearch status {name}",
        markup=False,
        highlight=False,
    )


@app.command()
def cancel(name: NameArg) -> None:
    """Cancel the study's Slurm jobs (named hpsearch-STUDY); trials in flight are re-queued."""
    from hpsearch.slurm import JOB_NAME_PREFIX, cancel_study

    jobs = cancel_study(name)
    if not jobs:
        out.print(f"no jobs named {JOB_NAME_PREFIX}{name} in the queue", markup=False)
        return
    for job in jobs:
        out.print(f"cancelled {job.describe()}", markup=False, highlight=False)
