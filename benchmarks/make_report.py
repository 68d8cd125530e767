"""Assemble BENCHMARKS.md from the results files the benchmark scripts write.

Each benchmark writes ``benchmarks/results/<name>.md`` (full mode) or ``<name>_quick.md``
(``--quick``); this script puts the sections together, full results first and quick ones only
where no full result exists (clearly labelled), so re-running a benchmark and then this script
updates the document.

    .venv/bin/python benchmarks/make_report.py            # writes BENCHMARKS.md
    .venv/bin/python benchmarks/make_report.py --check    # exit 1 if BENCHMARKS.md is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import _common

OUTPUT = _common.REPO_ROOT / "BENCHMARKS.md"
LINK_PREFIX = "benchmarks/results/"
GPU_SECTIONS = ("gpu", "search_gpu")  # results measured on a GPU are labelled as such

# (results name, title, full command, what to say when nothing has been run)
SECTIONS = (
    (
        "overhead",
        "overhead",
        ".venv/bin/python benchmarks/overhead.py",
        "not run yet",
    ),
    (
        "overhead_custom",
        "overhead: a custom model builder (examples/custom_cnn's tiny ResNet)",
        ".venv/bin/python benchmarks/overhead.py --builder custom",
        "not run yet",
    ),
    (
        "search",
        "search (CPU setting)",
        ".venv/bin/python benchmarks/search.py",
        "not run yet",
    ),
    (
        "search_cpu_10seeds",
        "search: the CPU setting's 120 s budget, 10 seeds (hpsearch, plain Optuna, transfer)",
        ".venv/bin/python benchmarks/search.py --methods hpsearch,optuna,hpsearch_transfer "
        "--earlier-budget-s 600 --name search_cpu_10seeds",
        "not run yet",
    ),
    (
        "search_cpu_10seeds_kt_random",
        "search: the CPU setting's 120 s budget, 10 seeds (hpsearch, KerasTuner, random)",
        ".venv/bin/python benchmarks/search.py --methods hpsearch,kerastuner,random "
        "--name search_cpu_10seeds_kt_random",
        "not run yet",
    ),
    (
        "search_data_fractions",
        "search: training-set size as a fidelity (hpsearch with and without data_fractions)",
        ".venv/bin/python benchmarks/search.py --methods hpsearch,hpsearch_data "
        "--name search_data_fractions",
        "not run yet",
    ),
    (
        "search_transfer",
        "search: transfer from an earlier study (hpsearch_transfer)",
        ".venv/bin/python benchmarks/search.py --budget-s 60 "
        "--methods hpsearch,kerastuner,optuna,random,hpsearch_transfer --name search_transfer",
        "not run yet",
    ),
    (
        "search_small_4workers",
        "search: 4 parallel workers sharing one PostgreSQL study (small CPU setting; before "
        "hpsearch stopped pruning a trial's last epoch)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 "
        "--methods hpsearch,optuna,random",
        "not run yet",
    ),
    (
        "search_small_4workers_transfer",
        "search: 4 parallel workers with transfer from an earlier study (small CPU setting)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 "
        "--methods hpsearch,optuna,random,hpsearch_transfer --target 0.82 "
        "--earlier-budget-s 300 --name search_small_4workers_transfer",
        "not run yet",
    ),
    (
        "search_small_4workers_testtop",
        "search: 4 parallel workers, testing only the best trial so far (test_top = 1; "
        "hpsearch, plain Optuna)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 "
        "--methods hpsearch,optuna,hpsearch_testtop --target 0.82 "
        "--name search_small_4workers_testtop",
        "not run yet",
    ),
    (
        "search_small_4workers_testtop_random",
        "search: 4 parallel workers, testing only the best trial so far (test_top = 1; "
        "hpsearch, random search)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 "
        "--methods hpsearch,random,hpsearch_testtop --target 0.82 "
        "--name search_small_4workers_testtop_random",
        "not run yet",
    ),
    (
        "search_small_4workers_120s",
        "search: 4 parallel workers with twice the budget (120 s per method and seed; "
        "hpsearch with and without test_top = 1)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 --budget-s 120 "
        "--target 0.84 --methods hpsearch,optuna,random,hpsearch_testtop "
        "--name search_small_4workers_120s",
        "not run yet",
    ),
    (
        "search_small_4workers_kt",
        "search: 4 parallel workers, KerasTuner in its own parallel mode (120 s per method "
        "and seed; hpsearch, KerasTuner, plain Optuna)",
        ".venv/bin/python benchmarks/search.py --setting small --workers 4 --budget-s 120 "
        "--target 0.84 --methods hpsearch,kerastuner,optuna --name search_small_4workers_kt",
        "not run yet",
    ),
    (
        "search_gpu",
        "search (GPU setting)",
        ".venv/bin/python benchmarks/search.py --setting gpu",
        "not run: no machine with a GPU was available. No GPU numbers are claimed.",
    ),
    (
        "storage",
        "storage",
        ".venv/bin/python benchmarks/storage.py",
        "not run yet",
    ),
    (
        "storage_20k",
        "storage: a 20,000-trial study",
        ".venv/bin/python benchmarks/storage.py --backends postgresql --sizes 20000 "
        "--workers 8,32 --trials 320 --repeats 1 --limit-workers 0 --name storage_20k",
        "not run yet",
    ),
    (
        "storage_levers",
        "storage levers: Optuna's gRPC proxy, a study per worker",
        ".venv/bin/python benchmarks/storage.py --backends postgresql --sizes 1000 "
        "--trials 320 --modes plain,hpsearch,grpc,separate --limit-workers 0 "
        "--name storage_levers",
        "not run yet",
    ),
    (
        "storage_after_package",
        "storage: after the storage package (PostgreSQL, 1,000 trials, 8 and 32 workers)",
        ".venv/bin/python benchmarks/storage.py --backends postgresql --sizes 1000 "
        "--workers 8,32 --trials 320 --repeats 1 --limit-workers 0 --name storage_after_package",
        "not run yet",
    ),
    (
        "constant_liar_before",
        "constant liar, before the storage package (hpsearch 3ab51d4)",
        "PYTHONPATH=<checkout of 3ab51d4> .venv/bin/python benchmarks/constant_liar.py "
        "--name constant_liar_before",
        "not run yet",
    ),
    (
        "constant_liar",
        "constant liar: near-duplicates of running trials",
        ".venv/bin/python benchmarks/constant_liar.py",
        "not run yet",
    ),
    (
        "gpu",
        "gpu",
        ".venv/bin/python benchmarks/gpu.py",
        "not run: no machine with a GPU was available (on a machine without one the script "
        "prints `RESULT gpu=skipped` and exits 0). No GPU numbers are claimed.",
    ),
    (
        "dashboard",
        "dashboard",
        ".venv/bin/python benchmarks/dashboard.py --quick",
        "not run yet",
    ),
)

INTRO = """# Benchmarks

hpsearch measured against plain Keras, KerasTuner and plain Optuna. Every section below is
written by its script in `benchmarks/` (results in `benchmarks/results/<name>.{md,json}`) and
assembled by `benchmarks/make_report.py`; to update a section, re-run its script and then
`.venv/bin/python benchmarks/make_report.py`. Every script has a `--quick` mode (≤ 5 min on a
2-core machine) that ends with a `RESULT name=value` line; quick results appear here only
where no full run exists, and are labelled as such. A full-mode run with smaller budgets than
the script's defaults is labelled as a reduced run, with what was reduced. Results from a GPU
are labelled as GPU results; CPU runs never claim GPU numbers.

Caveat: the numbers from the development machine (2 cores, shared with other jobs while they
were measured) are noisy; timing ratios within a few percent, and accuracy differences
smaller than the standard deviations, are not significant. Hosts of the same kind also differ
in speed by up to about 2×: at the CPU setting's 120 s budget, with the same code and seeds,
hpsearch completed 4.1 trials per run in "hpsearch, plain Optuna, transfer" and 2.2 in
"hpsearch, KerasTuner, random" (two hosts, one day), and KerasTuner 16.7 on 2026-11-25's host
and 7.2 on the latter. So methods are compared only within one run, on one host; figures from
different sections are not comparable with each other.
"""


def _load(name: str) -> tuple[str, dict[str, Any], bool] | None:
    """(markdown, json, is_quick) of a result, preferring the full run."""
    for candidate, quick in ((name, False), (f"{name}_quick", True)):
        md = _common.RESULTS_DIR / f"{candidate}.md"
        if md.exists():
            js = _common.RESULTS_DIR / f"{candidate}.json"
            data = json.loads(js.read_text(encoding="utf-8")) if js.exists() else {}
            return md.read_text(encoding="utf-8"), data, quick
    return None


def _relink(markdown: str) -> str:
    """Point relative image/file links of a results file at ``benchmarks/results/``."""
    return re.sub(
        r"(!?\[[^\]]*\]\()(?![a-z]+://|/|#|benchmarks/)([^)]+\))", rf"\1{LINK_PREFIX}\2", markdown
    )


def _demote(markdown: str) -> str:
    """Turn a section that starts at ``#`` into one that starts at ``##`` (code untouched)."""
    if not markdown.startswith("# "):
        return markdown
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(lines)


def _paired_figure(other: str, t: dict[str, Any]) -> str:
    """One paired comparison of a search benchmark: best-val gain, time ratio, their p."""
    figure = f"vs {other} {t['val_gain']:+.4f} (p {t['val_p']:.2g}"
    if None not in (t.get("time_ratio"), t.get("time_p")):
        figure += f", time ratio {t['time_ratio']:.2f}, p {t['time_p']:.2g}"
    return figure + f", {t['pairs']} seeds)"


def _key_figure(name: str, data: dict[str, Any]) -> str:
    try:
        if name in ("overhead", "overhead_custom"):
            summary = data["summary"]
            figure = f"time ratio {summary['median_ratio']:.3f} (target ≤ 1.03)"
            if "noise_free_ratio" in summary:
                figure += (
                    f"; measured directly, hpsearch adds {summary['added_s_median']:.2f} s "
                    f"per trial, ratio {summary['noise_free_ratio']:.3f}"
                )
            return figure
        if name.startswith("search"):
            s = data["summary"]
            parts = [f"{m} {v['best_val'][0]:.4f}" for m, v in s.items()]
            times = [
                f"{m} {v['time_to_target_s'][0]:.0f} s ({v['reached']}/{v['runs']} seeds)"
                if v["reached"]
                else f"{m} not reached (0/{v['runs']} seeds)"
                for m, v in s.items()
                if v.get("time_to_target_s") and v["time_to_target_s"][0] is not None
            ]
            if data["meta"].get("log"):  # best val only (see search.summarize_log)
                times = []
            figure = "mean best val acc: " + ", ".join(parts)
            figure += "; mean time to target: " + ", ".join(times) if times else ""
            tables = {"hpsearch": data.get("paired", {}), **data.get("paired_variants", {})}
            for ours, tests in tables.items():
                vs = [_paired_figure(m, t) for m, t in tests.items() if t.get("val_p") is not None]
                figure += f"; {ours} paired by seed: " + ", ".join(vs) if vs else ""
            return figure
        if name in ("storage", "storage_20k", "storage_after_package"):
            rows = [r for res in data["results"].values() for r in res.get("rows", [])]
            rows = [r for r in rows if r["backend"] == "postgresql" and "died" not in r]
            modes: dict[tuple[int, int], dict[str, float]] = {}
            for r in rows:
                modes.setdefault((r["workers"], r["size"]), {})[r["mode"]] = r["trials_per_s"]
            top, size = max(k for k, v in modes.items() if len(v) == 2)
            cell = modes[(top, size)]
            figure = (
                f"PostgreSQL, {top} workers, {size:,} trials: hpsearch "
                f"{cell['hpsearch']:.1f} vs plain Optuna {cell['plain']:.1f} trials/s "
                f"(×{cell['hpsearch'] / cell['plain']:.2f})"
            )
            for r in data.get("connection_limit", {}).get("rows", []):
                figure += f"; {r['workers']} workers vs 100 connections: {r['mode']} "
                figure += f"{r['errors']} errors"
            return figure
        if name == "storage_levers":
            return _levers_figure(data)
        if name.startswith("constant_liar"):
            share = {}
            for mode in ("plain", "hpsearch"):
                runs = [r for r in data["runs"] if r["mode"] == mode]
                near = sum(r["near_duplicates"] for r in runs)
                share[mode] = f"{near / sum(r['trials'] for r in runs):.1%}"
            return (
                f"trials started next to a near-duplicate running trial: hpsearch "
                f"{share['hpsearch']}, plain Optuna {share['plain']}"
            )
        if name == "gpu":
            best = max(data["trials_per_hour"], key=lambda t: t["trials_per_hour"])
            figure = f"best {best['trials_per_hour']:.0f} trials/h ({best['workers']} workers/GPU)"
            for e in data.get("epoch_times", []):
                if "rows" in e:
                    epochs = ", ".join(
                        f"{r['epoch_s']:.1f} s (batch {r['batch_size']})" for r in e["rows"]
                    )
                    figure += f"; workshop CNN epoch on {e['backend']}: {epochs}"
                else:
                    figure += f"; {e['backend']}: skipped (see section)"
            return figure
    except (KeyError, ValueError, TypeError):
        pass
    return "see section"


def _levers_figure(data: dict[str, Any]) -> str:
    """The change from the fewest to the most workers per mode, and the proxy's ratio."""
    rows = [r for res in data["results"].values() for r in res.get("rows", [])]
    rate = {(r["workers"], r["mode"]): r["trials_per_s"] for r in rows if "died" not in r}
    counts = sorted({w for w, _ in rate if w > 1})
    low, high = counts[0], counts[-1]
    names = {"hpsearch": "hpsearch", "separate": "a study per worker", "plain": "plain"}
    changes = [
        f"{label} {100 * (rate[(high, mode)] / rate[(low, mode)] - 1):+.0f} %"
        for mode, label in names.items()
        if (low, mode) in rate and (high, mode) in rate
    ]
    figure = f"PostgreSQL, {low} → {high} workers: " + ", ".join(changes)
    if (high, "grpc") in rate and (high, "plain") in rate:
        figure += (
            f"; gRPC proxy at {high} workers ×{rate[(high, 'grpc')] / rate[(high, 'plain')]:.2f} "
            "plain Optuna"
        )
    return figure


def build() -> str:
    """The text of BENCHMARKS.md."""
    overview = []
    sections = []
    for name, title, command, missing in SECTIONS:
        found = _load(name)
        if found is None:
            overview.append((title, "–", missing.split(":")[0].split(".")[0]))
            sections.append(f"## {title}\n\nFull mode: `{command}`. Status: {missing}\n")
            continue
        markdown, data, quick = found
        status = "quick mode only" if quick else "full"
        reduced = data.get("meta", {}).get("reduced")
        if reduced and not quick:
            status = "reduced run: " + "; ".join(reduced)
        gpus = data.get("meta", {}).get("machine", {}).get("gpus")
        if gpus and name in GPU_SECTIONS:
            status = f"GPU results ({', '.join(gpus)}), {status}"
        overview.append((title, status, _key_figure(name, data)))
        note = ""
        if quick:
            note = (
                f"> **Quick (smoke) mode only.** These are the `--quick` settings, not the "
                f"benchmark itself; the full mode is `{command}`.\n\n"
            )
        body = _demote(_relink(markdown).strip())
        if note and body.startswith("## "):
            first, _, rest = body.partition("\n")
            body = f"{first}\n\n{note}{rest.lstrip()}"
        elif note:
            body = f"## {title}\n\n{note}{body}"
        sections.append(body + "\n")
    text = INTRO + "\n## Overview\n\n"
    text += _common.table(["benchmark", "results", "key figure"], overview)
    return text + "\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if BENCHMARKS.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="defaults to BENCHMARKS.md")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        stale = current != text
        print(f"{args.output}: {'stale' if stale else 'up to date'}", file=sys.stderr)
        _common.result_line("report_up_to_date", str(not stale).lower())
        return 1 if stale else 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    _common.result_line("report_sections", len(SECTIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
