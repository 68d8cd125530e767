"""Shared helpers of the benchmark scripts: machine facts, versions, results files.

Every benchmark writes ``benchmarks/results/<name>.md`` (a section of BENCHMARKS.md) and
``benchmarks/results/<name>.json`` (the raw numbers), then prints ``RESULT name=value`` last.
``benchmarks/make_report.py`` assembles BENCHMARKS.md from the ``.md`` files.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = Path(os.environ.get("HPSEARCH_BENCH_RESULTS") or BENCH_DIR / "results")
"""Where results go; ``$HPSEARCH_BENCH_RESULTS`` redirects them (the tests do)."""
REPO_ROOT = BENCH_DIR.parent
PACKAGES = (
    "hpsearch",
    "optuna",
    "optuna-integration",
    "keras",
    "tensorflow",
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda12-plugin",
    "keras-tuner",
    "sqlalchemy",
    "psycopg2-binary",
    "pymysql",
    "numpy",
)


def cpu_model() -> str:
    """CPU model name as ``lscpu`` prints it (falls back to ``platform.processor()``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def gpus() -> list[str]:
    """Names of the NVIDIA GPUs that ``nvidia-smi -L`` lists; empty without a GPU or driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [
        line.split(":", 1)[1].split("(")[0].strip() for line in out.splitlines() if ":" in line
    ]


def gpu_driver() -> str | None:
    """NVIDIA driver version (``nvidia-smi``), or None without a GPU or driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0] if lines else None


def machine() -> dict[str, Any]:
    """CPU model, core count, GPUs and their driver, OS and host (recorded with every result)."""
    found = gpus()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpus": found,
        "gpu_driver": gpu_driver() if found else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "host": platform.node(),
    }


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that matter for the numbers."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    if found.get("hpsearch") == "not installed":  # imported from the checkout (PYTHONPATH)
        try:
            import hpsearch

            found["hpsearch"] = f"{hpsearch.__version__} (checkout)"
        except ImportError:
            pass
    return found


def now() -> str:
    """UTC date and time, ISO format, minutes precision."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """The command that ran this benchmark, relative to the repository root.

    The interpreter is written as ``.venv/bin/python`` when it is the repository's virtual
    environment, else as it was called (e.g. ``python3`` with packages on ``PYTHONPATH``).
    """
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    venv = REPO_ROOT / ".venv"
    python = ".venv/bin/python" if Path(sys.prefix).resolve() == venv.resolve() else "python3"
    return shlex.join([python, script_text, *sys.argv[1:]])


def header(title: str, meta: dict[str, Any]) -> str:
    """The common head of a results section: command, machine, date, versions."""
    m = meta["machine"]
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "none"
    if m.get("gpu_driver"):
        gpu += f", driver {m['gpu_driver']}"
    pkgs = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v != "not installed")
    return (
        f"## {title}\n\n"
        f"- Command: `{meta['command']}`\n"
        f"- Machine: {m['cpu']}, {m['cores']} cores, GPU: {gpu} "
        f"({m['os']}, Python {m['python']})\n"
        f"- Date: {meta['date']}, run time {meta['runtime_s']:.0f} s\n"
        f"- Versions: {pkgs}\n" + "".join(f"- Note: {note}\n" for note in meta.get("notes", []))
    )


def meta(runtime_s: float, **extra: Any) -> dict[str, Any]:
    """Metadata stored with every result (and shown by :func:`header`)."""
    return {
        "command": command_line(),
        "machine": machine(),
        "date": now(),
        "versions": versions(),
        "runtime_s": runtime_s,
        **extra,
    }


def write_results(name: str, markdown: str, data: dict[str, Any]) -> Path:
    """Write ``results/<name>.md`` and ``results/<name>.json``; returns the markdown path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md = RESULTS_DIR / f"{name}.md"
    md.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    (RESULTS_DIR / f"{name}.json").write_text(
        json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8"
    )
    return md


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value, NaN for none)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def result_line(name: str, value: object) -> None:
    """Print the key figure as the last line: ``RESULT name=value``."""
    print(f"RESULT {name}={value}", flush=True)
