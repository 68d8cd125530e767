"""``hpsearch report``: a self-contained static report of one study (HTML, Markdown or CSV).

The HTML file needs no server and no network: CSS is inlined and the plots are SVG drawn here in
Python (:func:`svg_history`, also served by the dashboard), so it opens from a file or an e-mail.
It holds the leaderboard with the baselines, the best-so-far plots, failures by cause, trials
per Slurm job, the best trial's full configuration and the study file.

Example:
    >>> text = build_report("smoke", "sqlite:///hpsearch.db", "html")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from hpsearch import __version__
from hpsearch.baselines import load_baselines
from hpsearch.display import (
    DEFAULT_METRIC,
    format_metric,
    is_accuracy,
    mean_pm,
    metric_label,
    metric_short,
    percent,
    ranked_by,
)
from hpsearch.errors import SpecError
from hpsearch.markdown import md_code, md_fence, md_text
from hpsearch.ranking import best_complete_trials, leaderboard, state_label
from hpsearch.storage import get_storage, mask_url, resolve_url
from hpsearch.study import ATTR_SPEC_TOML, stored_attr

FORMATS = ("html", "md", "csv")
VAL_COLOR = "#1f6fb4"
TEST_COLOR = "#e3720c"
BASELINE_COLORS = {"test": "#2a9d4b", "val": "#8a5cc2"}
_CSV_COLUMNS: tuple[str, ...] = (
    "kind", "rank", "study", "trial", "state", "val_accuracy", "test_accuracy", "beats",
    "epochs", "wall_minutes", "gpu_minutes", "n_params", "config", "model", "metric", "source",
    "fail_reason", "slurm_job", "attempts", "params",
)  # fmt: skip
RETRAIN_COLUMNS = (
    "retrain_val_mean", "retrain_val_std", "retrain_test_mean", "retrain_test_std",
    "retrain_seeds",
)  # fmt: skip
_CSV_COLUMNS += RETRAIN_COLUMNS


def _retrain_head(metric: str) -> tuple[str, ...]:
    val = metric_short(metric)
    return ("trial", "study", f"search {val}", "search test", f"{val} mean ± std",
            "test acc mean ± std", "seeds", "configuration")  # fmt: skip


def _retrain_note(board: dict[str, Any]) -> str:
    metric = board.get("metric", DEFAULT_METRIC)
    return (
        "Re-trained by hpsearch best --seeds K --top N on the training split with K seeds "
        "each: mean ± sample std over the seeds next to the search's single run. The pick is "
        f"the best mean {ranked_by(metric, board.get('direction', 'maximize'))}; test accuracy "
        "is reported, never used to pick."
    )


# --------------------------------------------------------------------------------------------
# SVG plot
# --------------------------------------------------------------------------------------------


def svg_history(
    history: Sequence[dict[str, Any]],
    baselines: Sequence[dict[str, Any]],
    *,
    x: str = "trial",
    width: int = 760,
    height: int = 330,
    metric: str = DEFAULT_METRIC,
) -> str:
    """Best-so-far validation accuracy (and the test accuracy of that trial) as an SVG plot.

    For an objective that is not an accuracy (``val_loss``, ``val_auc``) the plot shows the
    best-so-far objective on its own scale, without test accuracy or baselines (other units).

    Args:
        history: :func:`hpsearch.ranking.best_so_far` points (``leaderboard()["history"]``).
        baselines: Drawn as dashed horizontal lines, labelled on the right.
        x: ``"trial"`` (n-th finished trial) or ``"time"`` (hours since the first start).
        width: Width in pixels. Defaults to `760`.
        height: Height in pixels. Defaults to `330`.
        metric: The objective (``leaderboard()["metric"]``). Defaults to `val_accuracy`.
    Returns:
        An ``<svg>`` element (no external references).
    """
    key = "hours" if x == "time" else "n"
    xlabel = "hours since the first trial started" if x == "time" else "finished trials"
    points = [p for p in history if p.get(key) is not None]
    left, right, top, bottom = 52, 250, 40, 40
    pw, ph = width - left - right, height - top - bottom
    title = f"Best so far over {'time' if x == 'time' else 'trials'}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{title}" '
        'font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{title}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{title}</text>',
    ]
    accuracy = is_accuracy(metric)
    if not accuracy:  # test accuracy and baselines are in other units than the objective
        points = [{**p, "best_test_accuracy": None} for p in points]
        baselines = []
    values = [p["best_val_accuracy"] for p in points]
    values += [p["best_test_accuracy"] for p in points if p["best_test_accuracy"] is not None]
    values += [p["val_accuracy"] for p in points if p.get("val_accuracy") is not None]
    values = [v for v in values if math.isfinite(v)]
    levels = [b["accuracy"] for b in baselines]
    if not points or not values:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" fill="#666">'
            "no complete trial yet</text></svg>"
        )
        return "\n".join(parts)
    if accuracy:
        lo = max(0.0, min(values + levels) - 0.02)
        hi = min(1.0, max(values + levels) + 0.01)
        if hi - lo < 0.02:
            lo, hi = max(0.0, hi - 0.05), min(1.0, hi + 0.01)
    else:
        pad = 0.05 * (max(values) - min(values)) or 0.05 * (abs(max(values)) or 1.0)
        lo, hi = min(values) - pad, max(values) + pad
    x0 = 0.0 if x == "time" else 1.0
    x1 = max(float(p[key]) for p in points)
    if x1 <= x0:
        x1 = x0 + 1.0

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (hi - v) / (hi - lo) * ph

    # axes, grid and ticks
    parts.append('<g stroke="#ddd" stroke-width="1">')
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
    parts.append("</g>")
    for t in _ticks(lo, hi):
        parts.append(
            f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">'
            f"{f'{t * 100:.1f}%' if accuracy else f'{t:.3g}'}</text>"
        )
    for t in _ticks(x0, x1, integer=x != "time"):
        parts.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
            'stroke="#888"/>'
            f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt_tick(t)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="#444">'
        f"{xlabel}</text>"
    )
    # baselines: dashed lines with labels pushed apart on the right
    labels: list[list[Any]] = []
    for b in baselines:
        if not lo <= b["accuracy"] <= hi:
            continue
        color = BASELINE_COLORS.get(b["metric"], "#555")
        y = sy(b["accuracy"])
        tip = html.escape(
            f"{b['model']} ({b['metric']} {b['accuracy'] * 100:.2f}%): {b['source']}"
        )
        parts.append(
            f'<line class="baseline" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-dasharray="5 4" stroke-width="1.2">'
            f"<title>{tip}</title></line>"
        )
        labels.append([y, b, color, tip])
    labels.sort(key=lambda item: item[0])
    for i in range(1, len(labels)):
        labels[i][0] = max(labels[i][0], labels[i - 1][0] + 11)
    for i in range(len(labels) - 2, -1, -1):  # keep the block inside the plot height
        limit = min(top + ph + bottom - 14, labels[i + 1][0] - 11)
        labels[i][0] = min(labels[i][0], limit)
    for y, b, color, tip in labels:
        line_y = sy(b["accuracy"])
        parts.append(
            f'<path d="M{left + pw},{line_y:.1f}L{left + pw + 4},{y:.1f}" stroke="{color}" '
            'fill="none" stroke-width="0.8"/>'
        )
        name = b["model"] if len(b["model"]) <= 30 else b["model"][:29] + "…"
        parts.append(
            f'<text x="{left + pw + 7}" y="{y + 4:.1f}" fill="{color}">'
            f"<title>{tip}</title>{b['accuracy'] * 100:.2f} {html.escape(name)}"
            f"{' (val)' if b['metric'] == 'val' else ''}</text>"
        )
    # every finished trial's validation accuracy (thinned for huge studies)
    stride = max(1, len(points) // 1500)
    dots = [
        f'<circle cx="{sx(p[key]):.1f}" cy="{sy(p["val_accuracy"]):.1f}" r="1.8"/>'
        for p in points[::stride]
        if p.get("val_accuracy") is not None and p["val_accuracy"] >= lo
    ]
    parts.append(f'<g fill="#9bb7d4" fill-opacity="0.6">{"".join(dots)}</g>')
    best_name = "best validation accuracy" if metric == DEFAULT_METRIC else f"best {metric}"
    for field, color, name in (
        ("best_val_accuracy", VAL_COLOR, best_name),
        ("best_test_accuracy", TEST_COLOR, "test accuracy of that trial"),
    ):
        path = _step_path(points, key, field, sx, sy)
        if path:
            parts.append(
                f'<path class="{field}" d="{path}" fill="none" stroke="{color}" '
                f'stroke-width="2"><title>{name}</title></path>'
            )
    last = points[-1]
    lx = left + 250
    parts.append(
        f'<g font-size="11"><rect x="{lx}" y="9" width="14" height="3" fill="{VAL_COLOR}"/>'
        f'<text x="{lx + 18}" y="14">{html.escape(best_name)} '
        f"({format_metric(last['best_val_accuracy'], metric)})</text>"
    )
    if accuracy:
        parts.append(
            f'<rect x="{lx}" y="24" width="14" height="3" fill="{TEST_COLOR}"/>'
            f'<text x="{lx + 18}" y="29">test accuracy of that trial '
            f"({percent(last['best_test_accuracy'])})</text>"
        )
    parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _step_path(points: Sequence[dict[str, Any]], key: str, field: str, sx: Any, sy: Any) -> str:
    out: list[str] = []
    prev: float | None = None
    for p in points:
        v = p[field]
        if v is None:
            prev = None
            continue
        if prev is None:
            out.append(f"M{sx(p[key]):.1f},{sy(v):.1f}")
        elif v != prev:
            out.append(f"H{sx(p[key]):.1f}V{sy(v):.1f}")
        prev = v
    if out and prev is not None:
        out.append(f"H{sx(points[-1][key]):.1f}")
    return "".join(out)


def _ticks(lo: float, hi: float, *, integer: bool = False, n: int = 5) -> list[float]:
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_tick(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.2g}"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def build_report(
    study: str,
    storage_url: str | None = None,
    fmt: str = "html",
    *,
    baselines_file: str | Path | None = None,
    top: int | None = None,
) -> str:
    """Render the report of one study.

    Args:
        study: Study name.
        storage_url: Study database; see :func:`hpsearch.storage.resolve_url`.
        fmt: ``html`` (self-contained, with plots), ``md`` or ``csv``. Defaults to `html`.
        baselines_file: Extra baselines TOML added to the shipped ones.
        top: Only the best ``top`` trials in the table (all by default).
    Raises:
        SpecError: For an unknown format.
        StorageError: If the study is not on the storage.
    """
    if fmt not in FORMATS:
        raise SpecError(f"--format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=False, read_only=True)
    board = leaderboard(
        storage, load_baselines(baselines_file), study=study, include_params=fmt == "csv"
    )
    board["storage"] = mask_url(url)
    if fmt == "csv":
        return render_csv(board["rows"], board["metric"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = optuna.load_study(study_name=study, storage=storage)
    spec_toml = str(stored_attr(loaded, ATTR_SPEC_TOML) or "")
    best = next(iter(best_complete_trials(loaded, 1)), None)
    if fmt == "md":
        return render_markdown(board, spec_toml, best, top=top)
    return render_html(board, spec_toml, best, top=top)


def render_csv(rows: Sequence[dict[str, Any]], metric: str = DEFAULT_METRIC) -> str:
    """The leaderboard (trials and baselines) as CSV, one line per row.

    ``rank`` is empty for unfinished and failed trials, ``attempts`` lists the earlier attempts
    of a re-queued trial, and ``params`` holds the trial's Optuna parameters as JSON. The
    objective's column is named after the metric (``val_accuracy``, ``val_loss``, ...).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    if metric != DEFAULT_METRIC:
        header = dict(zip(_CSV_COLUMNS, _CSV_COLUMNS, strict=True))
        header["val_accuracy"] = metric
        writer.writerow(header)
    else:
        writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                **r,
                "beats": ";".join(r.get("beats") or []),
                "attempts": ";".join(str(n) for n in r.get("attempts") or []),
                "params": json.dumps(r["params"], sort_keys=True) if r.get("params") else "",
            }
        )
    return buf.getvalue()


def _table_rows(board: dict[str, Any], top: int | None) -> list[dict[str, Any]]:
    if top is None:
        return list(board["rows"])
    return [r for r in board["rows"] if r["kind"] == "baseline" or (r["rank"] or 10**12) <= top]


def _head(metric: str) -> tuple[str, ...]:
    return (
        "rank", "study", "trial", metric_label(metric), "test acc", "beats", "epochs",
        "wall min", "GPU min", "params", "configuration", "state",
    )  # fmt: skip


_NUMERIC_COLUMNS = frozenset({0, 2, 3, 4, 5, 6, 7, 8, 9})
_APART = (
    '<tr class="unranked-head"><td colspan="12">Not ranked: running, queued and failed trials '
    "(only finished trials get a rank)</td></tr>"
)


def _cells(r: dict[str, Any], metric: str = DEFAULT_METRIC) -> list[str]:
    if r["kind"] == "baseline":
        acc = percent(r["test_accuracy"])
        return [
            "", "baseline", "", acc if r["metric"] == "val" else "",
            acc if r["metric"] != "val" else "", "", "", "", "", "",
            f"{r['model']} — {r['source']}", "",
        ]  # fmt: skip
    return [
        "" if r["rank"] is None else str(r["rank"]),
        r["study"] or "",
        str(r["trial"]),
        format_metric(r["val_accuracy"], metric),
        percent(r["test_accuracy"]),
        f"★ {len(r['beats'])}" if r["beats"] else "",
        "" if r["epochs"] is None else str(r["epochs"]),
        _num(r["wall_minutes"]),
        _num(r["gpu_minutes"]),
        "" if r["n_params"] is None else f"{r['n_params']:,}",
        r["config"] or "",
        state_label(r),
    ]


def render_html(
    board: dict[str, Any],
    spec_toml: str,
    best: optuna.trial.FrozenTrial | None,
    *,
    top: int | None = None,
) -> str:
    """The self-contained HTML report (inline CSS and SVG, no scripts, no network)."""
    from hpsearch.dashboard import assets_dir

    css = (assets_dir() / "style.css").read_text(encoding="utf-8")
    e = html.escape
    name = board["study"]
    metric = board.get("metric", DEFAULT_METRIC)
    order = ranked_by(metric, board.get("direction", "maximize"))
    trs = []
    for r in _table_rows(board, top):
        if r["kind"] == "trial" and r["rank"] is None and _APART not in trs:
            trs.append(_APART)
        cls = "baseline" if r["kind"] == "baseline" else f"trial {r['state']}"
        if r.get("beats"):
            cls += " beats"
        cells = _cells(r, metric)
        tds = []
        for i, c in enumerate(cells):
            attrs = ""
            if i == 5 and r.get("beats"):
                attrs = f' title="beats: {e("; ".join(r["beats"]))}"'
            if i in _NUMERIC_COLUMNS:
                attrs += ' class="num"'
            if i == 10:
                attrs = ' class="config"'
            tds.append(f"<td{attrs}>{e(c)}</td>")
        trs.append(f'<tr class="{cls}">{"".join(tds)}</tr>')
    head = "".join(
        ('<th class="num">' if i in _NUMERIC_COLUMNS else "<th>") + f"{e(h)}</th>"
        for i, h in enumerate(_head(metric))
    )
    counts = board["counts"]
    summary = " · ".join(f"{k} {v}" for k, v in counts.items() if v)
    best_html = "<p>No complete trial yet.</p>"
    if best is not None:
        items = [
            ("trial", str(best.number)),
            (_value_name(metric), format_metric(best.value, metric)),
        ]
        items += [(f"param {k}", _plain(v)) for k, v in sorted(best.params.items())]
        items += [(f"attr {k}", _plain(v)) for k, v in sorted(best.user_attrs.items())]
        curve = ", ".join(
            f"{step}: {v:.4f}" for step, v in sorted(best.intermediate_values.items())
        )
        items.append((f"{metric} per epoch", curve))
        best_html = (
            '<table class="kv">'
            + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in items)
            + "</table>"
        )
    fails = "".join(
        f"<tr><td>{e(c)}</td><td>{n}</td></tr>" for c, n in board["failed_by_cause"].items()
    )
    jobs = "".join(
        f"<tr><td>{e(j['job'])}</td><td>{j['tasks']}</td><td>{j['trials']}</td>"
        f"<td>{j['complete']}</td><td>{j['pruned']}</td><td>{j['fail']}</td>"
        f"<td>{j['running']}</td></tr>"
        for j in board["slurm_jobs"]
    )
    shown = "" if top is None else f" (best {top} trials shown)"
    plots = "".join(
        svg_history(board["history"], board["baselines"], x=x, metric=metric)
        for x in ("trial", "time")
    )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hpsearch report: {e(name)}</title>
<style>{css}</style></head>
<body class="report"><header><h1>hpsearch report: {e(name)}</h1>
<p class="meta">dataset <b>{e(board["dataset"])}</b> · {board["n_trials"]} trials ({e(summary)})
· storage {e(board["storage"])} · generated {when} by hpsearch {__version__}</p></header>
<main>
<section><h2>Best so far</h2><div class="plots">{plots}</div>
<p class="note">{_plot_note(metric)}</p>
</section>
<section><h2>Leaderboard{shown}</h2>
<p class="note">Ranked by {e(order)}. Only finished trials (complete, or pruned at
their last epoch) are ranked; running, queued and failed trials follow without a rank, and a
re-queued trial is one row with its earlier attempts. ★ = beats that many baselines on the
baseline's own metric (test accuracy vs test baselines, validation vs val baselines); hover
for which.</p>
<table id="leaderboard" class="board"><thead><tr>{head}</tr></thead>
<tbody>{"".join(trs)}</tbody></table></section>
{_retrained_html(board)}
<section class="side"><div><h2>Failed trials by cause</h2>
<table class="small"><thead><tr><th>cause</th><th>trials</th></tr></thead>
<tbody>{fails}</tbody></table></div>
<div><h2>Trials per Slurm job</h2><table class="small"><thead><tr><th>job</th><th>tasks</th>
<th>trials</th><th>complete</th><th>pruned</th><th>fail</th><th>running</th></tr></thead>
<tbody>{jobs}</tbody></table></div></section>
<section><h2>Best trial: full configuration</h2>{best_html}</section>
<section><h2>Study file</h2><pre class="toml">{e(spec_toml) or "(not stored)"}</pre></section>
</main></body></html>
"""


def render_markdown(
    board: dict[str, Any],
    spec_toml: str,
    best: optuna.trial.FrozenTrial | None,
    *,
    top: int | None = None,
) -> str:
    """The report as GitHub-flavoured Markdown (tables; plots only in the HTML format).

    Every piece of user data goes through :mod:`hpsearch.markdown`, so it renders as text.
    """
    counts = ", ".join(f"{k} {v}" for k, v in board["counts"].items() if v)
    metric = board.get("metric", DEFAULT_METRIC)
    head = _head(metric)
    out = [
        f"# hpsearch report: {md_text(board['study'])}",
        "",
        f"Dataset **{md_text(board['dataset'])}**, {board['n_trials']} trials ({counts}), "
        f"storage {md_code(board['storage'])}, hpsearch {__version__}.",
        "",
        "## Leaderboard",
        "",
        f"Ranked by {md_text(ranked_by(metric, board.get('direction', 'maximize')))}; test "
        "accuracy is reported, never used to select. "
        "Only finished trials (complete, or pruned at their last epoch) are ranked; running, "
        "queued and failed trials follow without a rank. "
        "★ = beats that many baselines on the baseline's own metric.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in _table_rows(board, top):
        cells = [md_text(c) for c in _cells(r, metric)]
        if r["kind"] == "baseline":
            cells = [f"*{c}*" if c else "" for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    retrained = _retrained(board)
    if retrained:
        out += ["", "## Re-trained with several seeds", "", _retrain_note(board), ""]
        rhead = _retrain_head(metric)
        out += ["| " + " | ".join(rhead) + " |", "|" + "---|" * len(rhead)]
        out += ["| " + " | ".join(md_text(c) for c in cells) + " |" for cells in retrained]
    out += ["", "## Failed trials by cause", "", "| cause | trials |", "|---|---|"]
    out += [f"| {md_text(c)} | {n} |" for c, n in board["failed_by_cause"].items()]
    out += [
        "",
        "## Trials per Slurm job",
        "",
        "| job | tasks | trials | complete | pruned | fail | running |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {md_text(j['job'])} | {j['tasks']} | {j['trials']} | {j['complete']} | "
        f"{j['pruned']} | {j['fail']} | {j['running']} |"
        for j in board["slurm_jobs"]
    ]
    out += ["", "## Best trial: full configuration", ""]
    if best is None:
        out.append("No complete trial yet.")
    else:
        out += ["| key | value |", "|---|---|", f"| trial | {best.number} |"]
        out.append(f"| {md_text(_value_name(metric))} | {format_metric(best.value, metric)} |")
        for label, items in (("param", best.params), ("attr", best.user_attrs)):
            out += [
                f"| {label} {md_code(k, in_table=True)} | {md_text(_plain(v))} |"
                for k, v in sorted(items.items())
            ]
    out += ["", "## Study file", "", md_fence(spec_toml or "(not stored)", "toml"), ""]
    return "\n".join(out)


def _value_name(metric: str) -> str:
    return "validation accuracy" if metric == DEFAULT_METRIC else metric


def _plot_note(metric: str) -> str:
    if not is_accuracy(metric):
        return (
            f"The blue line is the best {html.escape(metric)} so far (test accuracy and "
            "literature baselines are in other units, so they are not drawn)."
        )
    return (
        "The blue line is the best validation accuracy so far; the orange line is the test "
        "accuracy of that same trial (selection never looks at test accuracy). Dashed lines "
        "are the literature baselines (green: test accuracy, purple: validation accuracy as "
        "reported)."
    )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def _retrained(board: dict[str, Any]) -> list[list[str]]:
    """Cells of the re-trained trials (``hpsearch best --seeds``), best mean val first."""
    metric = board.get("metric", DEFAULT_METRIC)
    sign = 1.0 if board.get("direction") == "minimize" else -1.0
    rows = [r for r in board["rows"] if r["kind"] == "trial" and r.get("retrain_seeds")]
    rows.sort(
        key=lambda r: (sign * (r.get("retrain_val_mean") or 0.0), r["study"] or "", r["trial"])
    )

    def fmt(v: float) -> str:
        return format_metric(v, metric)

    return [
        [
            str(r["trial"]),
            r["study"] or "",
            fmt(r["val_accuracy"]),
            percent(r["test_accuracy"]),
            mean_pm(r.get("retrain_val_mean"), r.get("retrain_val_std"), fmt),
            mean_pm(r.get("retrain_test_mean"), r.get("retrain_test_std")),
            str(r["retrain_seeds"]),
            r["config"] or "",
        ]
        for r in rows
    ]


_RETRAIN_CLASSES = {1: "", 7: "config"}


def _retrained_html(board: dict[str, Any]) -> str:
    cells = _retrained(board)
    if not cells:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in _retrain_head(board.get("metric", DEFAULT_METRIC)))
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{_RETRAIN_CLASSES.get(i, "num")}">{e(c)}</td>' for i, c in enumerate(row)
        )
        + "</tr>"
        for row in cells
    )
    return (
        "<section><h2>Re-trained with several seeds</h2>"
        f'<p class="note">{e(_retrain_note(board))}</p>'
        f'<table id="retrained" class="board"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )
