"""The ``hpsearch`` command line: thin wrappers over the library modules.

An :class:`~hpsearch.errors.HpsearchError` prints as one line on stderr with exit code 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hpsearch import attr_names
from hpsearch.display import (
    DEFAULT_METRIC,
    clean,
    mean_pm,
    metric_label,
    metric_short,
    plain,
    ranked_by,
)
from hpsearch.errors import HpsearchError

app = typer.Typer(
    help=(
        "Automated hyperparameter search for Keras CNNs, on one machine or a Slurm cluster.\n\n"
        "Typical use: `hpsearch validate studies/x.toml`, `hpsearch run studies/x.toml "
        "--workers 2` (or `hpsearch launch` + `hpsearch submit` on a cluster), then "
        "`hpsearch status NAME`.\n\n"
        "The storage URL comes from --storage, else $HPSEARCH_STORAGE, else "
        "sqlite:///hpsearch.db."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"debug": False}


def _warn_password_on_command_line(ctx: typer.Context, url: str | None) -> str | None:
    """Other users see a command line in `ps`: say where the password belongs instead.

    (`submit` refuses such a URL with its own error unless the password has another way in.)
    """
    from hpsearch.storage import has_password

    if url and has_password(url) and ctx.info_name != "submit":
        err.print(
            "[yellow]warning: the --storage URL carries a password, which other users of "
            "this machine can read in `ps`. Put it in ~/.pgpass (PostgreSQL), ~/.my.cnf "
            "(MariaDB) or $HPSEARCH_DB_PASSWORD and leave it out of the URL"
        )
    return url


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="SQLAlchemy URL of the study database: sqlite:///hpsearch.db, "
        "postgresql://user@host:5432/db (or postgresql+psycopg://...) or "
        "mysql+pymysql://user@host:3306/db. Keep passwords in ~/.pgpass, ~/.my.cnf or "
        "$HPSEARCH_DB_PASSWORD. Default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db.",
        show_default=False,
        callback=_warn_password_on_command_line,
    ),
]


def _set_checkpoint_dir(path: Path | None) -> Path | None:
    if path is not None:
        os.environ["HPSEARCH_CHECKPOINT_DIR"] = str(path.resolve())
    return path


CheckpointDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint-dir",
        help="Folder for per-epoch checkpoints, on a filesystem every node sees "
        "(default: $HPSEARCH_CHECKPOINT_DIR, else runs/<study>/checkpoints).",
        show_default=False,
        callback=_set_checkpoint_dir,
    ),
]
SpecArg = Annotated[Path, typer.Argument(help="Study file, e.g. studies/fashion_mnist.toml.")]
NameArg = Annotated[str, typer.Argument(help="Study name (the `name` in its study file).")]


def _print_version(value: bool) -> None:
    if value:
        from hpsearch import __version__

        print(f"hpsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Logging level (or $HPSEARCH_LOG_LEVEL).", show_default=False)
    ] = "",
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    _state["debug"] = debug
    # Workers log every epoch; interactive commands only warnings (their output is the result).
    default = "INFO" if ctx.invoked_subcommand == "worker" else "WARNING"
    level = (log_level or os.environ.get("HPSEARCH_LOG_LEVEL") or default).upper()
    if level != "INFO" and ctx.invoked_subcommand != "worker":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command()
def init(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder to write the study file to (created if missing), or a .toml."),
    ] = Path("."),
    example: Annotated[
        str,
        typer.Option(
            help="Shipped study to start from: fashion_mnist_quick (CPU-sized demo), "
            "fashion_mnist, mnist, cifar10 (GPU-sized) or smoke (trials take seconds)."
        ),
    ] = "fashion_mnist_quick",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter study file (a copy of a shipped study) to edit and run."""
    from hpsearch.resources import write_example

    path = write_example(directory, example, force=force)
    out.print(f"wrote {path}")
    err.print(
        escape(
            f"next: edit it (name, [data], [budget], [search]), then `hpsearch validate {path}` "
            f"and `hpsearch run {path} --workers 2`"
        )
    )


@app.command()
def studies(
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """List the studies on a storage: trials by state and best value."""
    from hpsearch.study import list_study_overviews

    found = list_study_overviews(storage)
    if as_json:
        rows = [
            {
                "name": o.name,
                "dataset": o.dataset,
                "direction": o.direction,
                "n_trials": o.n_trials,
                "counts": o.counts,
                "best_value": o.best_value,
            }
            for o in found
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table(title_justify="left")
    table.add_column("study")
    table.add_column("dataset")
    states = ("complete", "pruned", "fail", "running", "waiting")
    for column in ("trials", *states, "best"):
        table.add_column(column, justify="right")
    for o in found:
        table.add_row(
            escape(o.name),
            escape(o.dataset or ""),
            str(o.n_trials),
            *(str(o.counts.get(state, 0)) for state in states),
            _fmt(o.best_value),
        )
    out.print(table if found else "no studies on this storage")


@app.command()
def validate(spec_file: SpecArg) -> None:
    """Check a study file and print the resolved search space. Touches no database."""
    from hpsearch.space import describe
    from hpsearch.spec import load_spec
    from hpsearch.usercode import check_study_runs

    spec = load_spec(spec_file)
    shape, num_classes = check_study_runs(spec, str(spec_file))
    table = Table(title=plain(f"{spec.name}: search space"), title_justify="left")
    for column in ("parameter", "kind", "values"):
        table.add_column(column)
    for row in describe(spec.search, spec.model.builder):
        table.add_row(*(plain(cell) for cell in row))
    out.print(table)
    b, d = spec.budget, spec.data
    o = spec.objective
    out.print(
        plain(
            f"model {spec.model.builder} · input {shape} · {num_classes} classes · "
            f"{o.direction} {o.metric}",
            limit=None,
        )
    )
    out.print(
        plain(
            f"dataset {clean(d.label, 120)} (val {d.val_fraction:.0%} seed {d.split_seed}"
            f"{f', train subset {d.train_subset}' if d.train_subset else ''}) · "
            f"{b.n_trials} trials × ≤{b.max_epochs} epochs · sampler {spec.sampler.kind} · "
            f"pruner {spec.pruner.kind}{_fractions(spec)} · {_warm_start_summary(spec)}",
            limit=None,
        )
    )
    out.print(plain(f"{clean(spec_file, 300)}: OK", limit=None, style="green"))


@app.command()
def launch(spec_file: SpecArg, storage: StorageOpt = None) -> None:
    """Create the study in the database (or continue it) and queue its warm-start trials.

    Launching the same file again continues the study; a changed file under an existing name
    is refused. Nothing is written when the file is invalid.
    """
    launched = _launch(spec_file, storage)
    out.print(launched.study.study_name)


def _fractions(spec: Any) -> str:
    """`` (data 12%→25%→50%→all)`` for a ``pruner.data_fractions`` schedule, else empty."""
    shares = spec.pruner.data_fractions
    return f" (data {'→'.join(f'{f:.0%}' for f in shares)}→all)" if shares else ""


def _warm_start_summary(spec: Any) -> str:
    """``2 warm-start config(s), + best 5 of study X`` (``from_study`` is read at launch)."""
    from hpsearch.transfer import transfer_entries

    studies = transfer_entries(spec)
    text = f"{len(spec.warm_start) - len(studies)} warm-start config(s)"
    return text + "".join(f", + best {e.top} of study {e.study}" for e in studies)


def _launch(spec_file: Path, storage: str | None) -> Any:
    from hpsearch.api import launch_study_from
    from hpsearch.storage import mask_url
    from hpsearch.study import budget_state

    launched = launch_study_from(spec_file, storage)
    spec = launched.spec
    b = budget_state(launched.study, spec)
    verb = "created" if launched.created else "continuing"
    if launched.changes:
        verb = f"extended ({', '.join(launched.changes)}), continuing"
    err.print(
        Text.assemble(
            f"{verb} study ",
            (spec.name, "bold"),
            f" in {clean(mask_url(launched.storage_url), 300)}: "
            f"{b.finished}/{b.n_trials} trials finished, {b.waiting} queued",
        )
    )
    for line in launched.warm_started:
        err.print(plain(line, limit=2000))
    return launched


@app.command()
def worker(
    study: Annotated[str, typer.Option(help="Name of a launched study.")],
    storage: StorageOpt = None,
    n_trials: Annotated[
        int | None, typer.Option(help="Stop after this many trials (default: study budget).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Start no new trial after this many seconds (default: spec)."),
    ] = None,
    checkpoint_dir: CheckpointDirOpt = None,
) -> None:
    """Run trials of a study until its budget is reached (what each Slurm array task runs).

    SIGTERM/SIGUSR1/Ctrl-C re-queue the trial in flight; it resumes from its last epoch.
    """
    from hpsearch.worker import run_worker

    result = run_worker(study, storage, n_trials=n_trials, timeout_s=timeout)
    err.print(f"worker stopped after {result.trials_run} trial(s): {result.stopped_because}")


@app.command()
def run(
    spec_file: SpecArg,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    storage: StorageOpt = None,
    threads_per_worker: Annotated[
        int | None, typer.Option(min=1, help="CPU threads per worker (default: cores/workers).")
    ] = None,
    checkpoint_dir: CheckpointDirOpt = None,
) -> None:
    """Launch a study and run it with local worker processes, showing live progress.

    Ends with the leaderboard. Ctrl-C stops cleanly; run the same command again to continue.
    """
    from hpsearch.local import run_local
    from hpsearch.storage import warn_if_many_sqlite_workers

    launched = _launch(spec_file, storage)
    if warning := warn_if_many_sqlite_workers(launched.storage_url, workers):
        err.print(plain(f"warning: {warning}", limit=None, style="yellow"))
    result = run_local(
        launched.spec.name,
        launched.storage_url,
        workers,
        threads_per_worker=threads_per_worker,
        console=err,
    )
    _print_status(launched.spec.name, launched.storage_url, top=10, baselines_file=None)
    err.print(plain(f"worker logs: {result.log_dir}/", limit=None))
    _print_run_end(launched.spec.name, launched.storage_url, result)
    if result.interrupted:
        raise typer.Exit(130)
    if any(code != 0 for code in result.exit_codes):
        err.print(f"[red]workers exited with codes {result.exit_codes}; see the logs above")
        raise typer.Exit(1)


def _print_run_end(name: str, url: str, result: Any) -> None:
    """Why `hpsearch run` ended, how many trials remain, and what to type next."""
    import shlex

    from hpsearch.local import stop_summary
    from hpsearch.storage import mask_url, resolve_url

    why, remaining = stop_summary(result)
    if remaining and result.budget is not None:
        why += (
            f". {remaining} of {result.budget.n_trials} trials remain: run the same command "
            "again to continue"
        )
    err.print(f"[{'yellow' if remaining else 'green'}]{escape(why)}", soft_wrap=True)
    opt = "" if url == resolve_url(None) else f" --storage {shlex.quote(mask_url(url))}"
    err.print(
        escape(
            f"next: hpsearch status {name}{opt} · hpsearch best {name} --export best_{name}/"
            f"{opt} · hpsearch dashboard{opt}"
        ),
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def status(
    name: NameArg,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    top: Annotated[int, typer.Option(help="Trials to show in the leaderboard.")] = 10,
    baselines: Annotated[
        Path | None,
        typer.Option(help=escape("Extra baselines TOML ([[baseline]] tables).")),
    ] = None,
) -> None:
    """Trials by state, failures by cause, and the best trials ranked next to baselines."""
    if as_json:
        from hpsearch.baselines import load_baselines
        from hpsearch.ranking import study_summary
        from hpsearch.study import dataset_key, load_study

        study, spec = load_study(name, storage, heartbeat=False, read_only=True)
        summary = study_summary(study, load_baselines(baselines), dataset_key(spec))
        if _went_through_slurm(study):
            summary.update(_slurm_status(name))
        out.print_json(json.dumps(summary, default=str))
        return
    _print_status(name, storage, top=top, baselines_file=baselines)


def _went_through_slurm(study: Any) -> bool:
    """Whether the study was submitted from here or any of its trials ran in a Slurm job."""
    from hpsearch.env import runs_dir

    if (runs_dir() / study.study_name / "sbatch").is_dir():
        return True
    return any(attr_names.SLURM_JOB_ID in t.user_attrs for t in study.get_trials(deepcopy=False))


def _slurm_status(name: str) -> dict[str, Any]:
    try:
        from hpsearch import slurm
    except ImportError:
        return {}
    return slurm.status_for_study(name)


def _print_status(name: str, storage: str | None, top: int, baselines_file: Path | None) -> None:
    from hpsearch.baselines import load_baselines
    from hpsearch.ranking import study_summary
    from hpsearch.study import dataset_key, load_study

    study, spec = load_study(name, storage, heartbeat=False, read_only=True)
    summary = study_summary(study, load_baselines(baselines_file), dataset_key(spec))
    counts = summary["counts"]
    causes = ", ".join(f"{k} {v}" for k, v in summary["failed_by_cause"].items())
    out.print(
        Text.assemble(
            (clean(name, 100), "bold"),
            f" ({clean(spec.data.label, 120)}): {summary['n_trials']} trials · "
            f"complete {counts['complete']} · pruned {counts['pruned']} · "
            f"failed {counts['fail']}{f' ({clean(causes, 300)})' if causes else ''} · "
            f"running {counts['running']} · queued {counts['waiting']}"
            + (
                f" · {summary['resumed']} interrupted attempt(s) resumed"
                if summary["resumed"]
                else ""
            ),
        )
    )
    metric = spec.objective.metric
    order = ranked_by(metric, spec.objective.direction)
    table = Table(
        title=f"Leaderboard: ranked by {order}; test accuracy reported, never used "
        "to select. beats = baselines beaten, each on its own metric (test or val)"
        + (
            ""
            if any(r["kind"] == "baseline" for r in summary["leaderboard"])
            else f"; no literature baselines for {dataset_key(spec)}"
        ),
        title_justify="left",
    )
    for column in (
        "rank",
        "trial",
        metric_label(metric),
        "test acc",
        "beats",
        "epochs",
        "min",
        "params",
    ):
        table.add_column(column, justify="right")
    table.add_column("config")
    shown = 0
    for row in summary["leaderboard"]:
        if row["kind"] == "baseline":
            if shown < top:
                table.add_row(
                    "",
                    "baseline",
                    "",
                    f"{row['test_accuracy']:.4f}" + (" (val)" if row["metric"] == "val" else ""),
                    "",
                    "",
                    "",
                    "",
                    plain(f"{row['model']} — {row['source']}", style="dim"),
                    style="cyan",
                )
            continue
        if row["rank"] is None or shown >= top:
            continue
        shown += 1
        notes = [] if row["state"] == "complete" else [row["state"]]
        notes += [f"retry of #{n}" for n in row["attempts"]]
        table.add_row(
            str(row["rank"]),
            str(row["trial"]) + (f" ({', '.join(notes)})" if notes else ""),
            _fmt(row["val_accuracy"]),
            _fmt(row["test_accuracy"]),
            f"★ {len(row['beats'])}" if row["beats"] else "",
            str(row["epochs"] or ""),
            "" if row["wall_minutes"] is None else f"{row['wall_minutes']:.1f}",
            "" if row["n_params"] is None else f"{row['n_params']:,}",
            plain(row["config"] or "", limit=None),
        )
    out.print(table)
    _print_unranked(summary["leaderboard"], top)
    _print_retrained(summary["leaderboard"], metric, spec.objective.direction)
    slurm = _slurm_status(name).get("slurm_jobs") if _went_through_slurm(study) else None
    if slurm:
        out.print(plain(f"Slurm: {slurm}", limit=500))


def _print_unranked(rows: list[dict[str, Any]], top: int) -> None:
    """Running, queued and failed trials: listed apart, never ranked."""
    from hpsearch.ranking import state_label

    unranked = [r for r in rows if r["kind"] == "trial" and r["rank"] is None]
    if not unranked:
        return
    items = []
    for r in unranked[:top]:
        label = state_label(r).replace("waiting", "queued", 1)
        if r["state"] in ("running", "waiting") and r["epochs"]:
            label += f", epoch {r['epochs']} val {_fmt(r['val_accuracy'])}"
        items.append(f"{r['trial']} {label}")
    more = f" · and {len(unranked) - top} more" if len(unranked) > top else ""
    out.print(
        "Not ranked (running, queued, failed): " + " · ".join(items) + more,
        markup=False,
        highlight=False,
    )


def _retrain_columns(metric: str) -> tuple[str, ...]:
    """Numeric columns of both re-training tables: the search's figures, then over seeds."""
    val = metric_short(metric)
    return ("trial", f"search {val}", "search test", f"{val} mean ± std", "test mean ± std")


def _print_retrained(rows: list[dict[str, Any]], metric: str, direction: str) -> None:
    """Trials re-trained by `hpsearch best --seeds K --top N`: search vs re-trained figures."""
    done = [r for r in rows if r["kind"] == "trial" and r.get("retrain_seeds")]
    if not done:
        return
    table = Table(
        title="Re-trained (hpsearch best --seeds): mean ± std over seeds vs the search's run",
        title_justify="left",
    )
    for column in _retrain_columns(metric):
        table.add_column(column, justify="right")
    table.add_column("seeds", justify="right")
    sign = 1.0 if direction == "minimize" else -1.0
    for r in sorted(done, key=lambda r: sign * (r["retrain_val_mean"] or 0.0)):
        table.add_row(
            str(r["trial"]),
            _fmt(r["val_accuracy"]),
            _fmt(r["test_accuracy"]),
            mean_pm(r["retrain_val_mean"], r["retrain_val_std"], _fmt),
            mean_pm(r["retrain_test_mean"], r["retrain_test_std"], _fmt),
            str(r["retrain_seeds"]),
        )
    out.print(table)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@app.command()
def best(
    name: NameArg,
    export: Annotated[
        Path | None,
        typer.Option(help="Folder to write the model and metadata to (created; never a link)."),
    ] = None,
    storage: StorageOpt = None,
    seeds: Annotated[
        int, typer.Option(min=1, help="Re-train each candidate with this many seeds.")
    ] = 1,
    top: Annotated[
        int,
        typer.Option(min=1, help="Candidates: the best complete trials by validation accuracy."),
    ] = 1,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing export in the folder.")
    ] = False,
) -> None:
    """Re-train the best configurations with several seeds, pick one, test it, export it.

    With --seeds K --top N the N best complete trials are re-trained K times each on the
    training split; the one with the best mean validation accuracy is picked and its test
    accuracy reported as mean ± std (stored in the study: status and reports show it). The pick
    is then re-trained on train+validation and saved to --export DIR: a model that takes raw
    images, and hpsearch.json describing its input, classes, metrics, seeds and versions.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hpsearch.export import export_best
    from hpsearch.study import load_study

    study, spec = load_study(name, storage, heartbeat=False, read_only=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("re-training", total=None)

        def show(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total, description=escape(what))

        record = export_best(study, spec, export, seeds=seeds, top=top, force=force, progress=show)
    if record["selection"] is not None:
        _print_selection(record["selection"])
    if export is not None:
        m = record["metrics"]
        out.print(
            f"trial {record['trial']}: search val acc {m['search_val_accuracy']:.4f}, "
            f"re-trained on train+val: test acc {m['retrained_test_accuracy']:.4f} → "
            f"{escape(str(export))}/model.keras (takes raw images, see hpsearch.json)",
            highlight=False,
        )


def _print_selection(selection: dict[str, Any]) -> None:
    table = Table(
        title=f"Re-trained on the training split, seeds {selection['seeds']}: picked by "
        f"{escape(selection['picked_by'])}",
        title_justify="left",
    )
    metric = (selection["candidates"] or [{}])[0].get("metric", DEFAULT_METRIC)
    for column in _retrain_columns(metric):
        table.add_column(column, justify="right")
    table.add_column("config")
    for c in selection["candidates"]:
        picked = c["trial"] == selection["picked_trial"]
        table.add_row(
            f"{'→ ' if picked else ''}{c['trial']}",
            _fmt(c["search_val_accuracy"]),
            _fmt(c["search_test_accuracy"]),
            mean_pm(c["val_mean"], c["val_std"], _fmt),
            mean_pm(c["test_mean"], c["test_std"], _fmt),
            escape(c["config"]),
            style="bold" if picked else None,
        )
    out.print(table)
    if selection["picked_trial"] != selection["search_best_trial"]:
        out.print(
            f"The search's best trial {selection['search_best_trial']} was not the best over "
            f"seeds: picked trial {selection['picked_trial']}."
        )


def main() -> None:
    """Console entry point: run the app, turning HpsearchError into one line + exit 1."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app()
    except HpsearchError as e:
        if _state["debug"]:
            raise
        # One line whatever the message holds (control characters escaped, length capped).
        print(f"error: {clean(e, 2000)}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # a database that fails mid-command: one line, not a traceback
        from hpsearch.storage import database_error

        message = database_error(e)
        if message is None or _state["debug"]:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def _register_command_modules() -> None:
    """Commands with their own module (Slurm, dashboard) add themselves to ``app``."""
    import importlib

    for module in ("hpsearch.cli_slurm", "hpsearch.cli_dashboard"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


_register_command_modules()
