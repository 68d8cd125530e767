"""Fast checks of the benchmark scripts (the benchmarks themselves are run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("overhead.py", "search.py", "storage.py", "gpu.py", "make_report.py")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=BENCH.parent
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    proc = _run(str(BENCH / script), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_gpu_skips_cleanly_without_gpu() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    if _common.gpus():
        pytest.skip("this machine has a GPU: the skip path does not apply")
    proc = _run(str(BENCH / "gpu.py"), "--quick")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "RESULT gpu=skipped"
    assert "no NVIDIA GPU" in proc.stderr


def test_make_report_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = _run(str(BENCH / "make_report.py"), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text().lower()
    for title in ("overhead", "search", "storage", "gpu", "dashboard"):
        assert f"## {title}" in text


def test_search_spaces_match_hpsearch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-written Optuna and KerasTuner spaces equal fashion_mnist_quick's."""
    pytest.importorskip("keras_tuner")
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    from hpsearch.spec import spec_from_dict

    spec = spec_from_dict(search._spec_dict("t", search.SETTINGS["cpu"], seed=0))
    search.check_same_space(spec)
