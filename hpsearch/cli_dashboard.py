"""``hpsearch dashboard`` and ``hpsearch report``: thin wrappers over :mod:`hpsearch.dashboard`
and :mod:`hpsearch.report`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hpsearch.cli import NameArg, StorageOpt, app, err, out
from hpsearch.display import plain

BaselinesOpt = Annotated[
    Path | None,
    typer.Option(
        help=escape("Extra baselines TOML ([[baseline]] tables) added to the shipped ones.")
    ),
]


def _warn_token_on_command_line(value: str | None) -> str | None:
    """Other users see a command line in `ps`: say where the token belongs instead."""
    if value and value != "auto":
        err.print(
            "[yellow]warning: the --token value can be read by other users of this machine in "
            "`ps`. Set $HPSEARCH_DASHBOARD_TOKEN instead, or use --token auto (a new random "
            "token, shown in the printed link)",
            highlight=False,
        )
    return value


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[
        str,
        typer.Option(help="Address to bind. Anything but loopback needs --token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8080,
    baselines: BaselinesOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token every request must carry (Authorization: Bearer, or ?token= "
            "once in a browser), at least 16 characters; 'auto' makes a random one. "
            "Default: $HPSEARCH_DASHBOARD_TOKEN.",
            show_default=False,
            callback=_warn_token_on_command_line,
        ),
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option(help="Let optuna-dashboard edit studies (read-only by default).")
    ] = False,
) -> None:
    """Serve optuna-dashboard and a leaderboard ranking all trials against literature baselines.

    The leaderboard is at /leaderboard (JSON at /api/leaderboard), optuna-dashboard at
    /dashboard. Binds 127.0.0.1; any other --host needs --token.

    On a cluster, run it on the login node and open it through an SSH tunnel:
    `ssh -L 8080:localhost:8080 user@login-node`, then http://localhost:8080/leaderboard.
    """
    from hpsearch.dashboard import TOKEN_ENV, make_dashboard_server
    from hpsearch.storage import mask_url, resolve_url

    token = token or os.environ.get(TOKEN_ENV) or None
    server, link = make_dashboard_server(
        storage,
        host=host,
        port=port,
        baselines_file=baselines,
        token=token,
        allow_writes=allow_writes,
    )
    mode = "read-write" if allow_writes else "read-only"
    err.print(plain(f"hpsearch dashboard for {mask_url(resolve_url(storage))} ({mode})", 400))
    out.print(plain(f"leaderboard: {link}", limit=None), soft_wrap=True)
    out.print(
        plain(f"optuna-dashboard: {link.replace('/leaderboard', '/dashboard', 1)}", limit=None),
        soft_wrap=True,
    )
    out.file.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("dashboard stopped")
    finally:
        server.server_close()


@app.command()
def report(
    name: NameArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="File to write (default: STUDY_report.FORMAT); - for stdout."
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="html (self-contained, with plots), md or csv. Default: from the -o suffix, "
            "else html.",
            show_default=False,
        ),
    ] = None,
    storage: StorageOpt = None,
    baselines: BaselinesOpt = None,
    top: Annotated[
        int | None, typer.Option(help="Only the best N trials in the table (default: all).")
    ] = None,
) -> None:
    """Write a self-contained report of one study (html, md or csv): no server needed.

    Holds the leaderboard next to the baselines, best-so-far plots, the best trial's full
    configuration and the study file.
    """
    from hpsearch.baselines import load_baselines
    from hpsearch.dashboard import write_study_notes
    from hpsearch.report import build_report
    from hpsearch.storage import get_storage

    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output is not None else ""
        fmt = {"htm": "html", "markdown": "md"}.get(suffix, suffix) or "html"
        if fmt not in ("html", "md", "csv"):
            fmt = "html"
    text = build_report(name, storage, fmt, baselines_file=baselines, top=top)
    write_study_notes(
        get_storage(storage, heartbeat=False, read_only=True), load_baselines(baselines), [name]
    )
    if output is not None and str(output) == "-":
        out.file.write(text)
        return
    target = output or Path(f"{default_file_name(name)}_report.{fmt}")
    target.write_text(text, encoding="utf-8")
    err.print(plain(f"wrote {target} ({fmt}, {len(text.encode()):,} bytes)", limit=None))


def default_file_name(name: str) -> str:
    """A study name as a file name in the current folder: no folders, no leading dots.

    Example:
        >>> default_file_name("../../x")
        '_.._x'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100].lstrip(".")
    return safe or "study"
