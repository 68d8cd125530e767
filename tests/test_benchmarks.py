"""Fast checks of the benchmark scripts (the benchmarks themselves are run by hand)."""

from __future__ import annotations

import json
import os
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


@pytest.mark.slow
def test_search_spaces_match_hpsearch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-written Optuna and KerasTuner spaces equal fashion_mnist_quick's."""
    pytest.importorskip("keras_tuner")
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    from hpsearch.spec import spec_from_dict

    spec = spec_from_dict(search._spec_dict("t", search.SETTINGS["cpu"], seed=0))
    search.check_same_space(spec)


def test_storage_repeats_are_reported_as_median_and_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Repeated storage cells: one row per cell with the median, the range and every error;
    the scaling table shows the change of the median from the fewest to the most workers."""
    monkeypatch.syspath_prepend(str(BENCH))
    import storage

    def run(workers: int, mode: str, rate: float, errors: int = 0) -> dict[str, object]:
        return {"backend": "postgresql", "size": 1000, "workers": workers, "mode": mode,
                "trials_per_s": rate, "trials": 160, "errors": errors, "p50_ms": rate}  # fmt: skip

    runs = [run(8, "plain", r) for r in (10.0, 12.0, 11.0)]
    runs += [run(32, "plain", r) for r in (5.0, 6.0, 7.0)]
    runs += [run(8, "hpsearch", r) for r in (40.0, 30.0, 20.0)]
    runs += [run(32, "hpsearch", 33.0, errors=e) for e in (0, 1, 0)]
    rows = {(r["workers"], r["mode"]): r for r in storage._median_of_repeats(runs)}
    assert len(rows) == 4
    eight = rows[(8, "hpsearch")]
    assert (eight["trials_per_s"], eight["trials_per_s_min"], eight["trials_per_s_max"]) == (
        30.0, 20.0, 40.0,
    )  # fmt: skip
    assert eight["repeats"] == 3 and eight["trials"] == 480
    assert rows[(32, "hpsearch")]["errors"] == 1  # an error in any repeat is shown
    assert storage._rate(eight) == "30.0 (20.0–40.0)"
    cells: dict[tuple[str, int, int], dict[str, dict[str, object]]] = {}
    for r in rows.values():
        cells.setdefault(("postgresql", 1000, r["workers"]), {})[r["mode"]] = r
    table = storage._scaling_table(cells)
    assert "| postgresql | 1,000 | 11.0 (10.0–12.0) → 6.0 (5.0–7.0) | -45 % |" in table
    assert "30.0 (20.0–40.0) → 33.0 (33.0–33.0) | +10 % |" in table


def test_storage_levers_are_compared_with_plain_and_hpsearch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run with ``--modes plain,hpsearch,grpc,separate`` gets a table of the gRPC proxy's
    trials/s as a ratio to both plain and hpsearch, its CPU split into workers, proxy and
    database, and a column per mode in the table of the change from 8 to 32 workers."""
    monkeypatch.syspath_prepend(str(BENCH))
    import storage

    def row(workers: int, mode: str, rate: float) -> dict[str, object]:
        return {"backend": "postgresql", "size": 1000, "workers": workers, "mode": mode,
                "trials_per_s": rate, "trials": 320, "errors": 0, "p50_ms": 500.0,
                "p99_ms": 900.0, "load_s_median": 1.5, "client_cpu_ms": 17.0,
                "proxy_cpu_ms": 60.0, "server_cpu_ms": 16.0}  # fmt: skip

    rates = {"plain": (20.0, 10.0), "hpsearch": (60.0, 50.0), "grpc": (15.0, 12.0),
             "separate": (80.0, 64.0)}  # fmt: skip
    cells: dict[tuple[str, int, int], dict[str, dict[str, object]]] = {}
    for mode, (at8, at32) in rates.items():
        for workers, rate in ((8, at8), (32, at32)):
            cells.setdefault(("postgresql", 1000, workers), {})[mode] = row(workers, mode, rate)
    table = storage._grpc_table(cells)
    assert "| postgresql | 1,000 | 32 | 12.0 | 1.20 | 4.17 | 500 / 900 | 17 + 60 + 16 |" in table
    scaling = storage._scaling_table(cells)
    assert "gRPC proxy 8 → 32" in scaling and "15.0 → 12.0 | -20 % |" in scaling
    assert "hpsearch, a study per worker 8 → 32" in scaling and "the floor" in scaling
    assert storage._grpc_table({k: {"plain": v["plain"]} for k, v in cells.items()}) == ""


def test_search_pairs_seeds_and_tests_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """hpsearch against each method, paired by seed: mean gain and Wilcoxon p, a run that never
    reached the target counted as the budget, a seed without a result left out."""
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    def runs(method: str, vals: list[float | None], hit: list[float | None]) -> list[dict]:  # type: ignore[type-arg]
        out = []
        for seed, (v, t) in enumerate(zip(vals, hit, strict=True)):
            events = [] if v is None else [{"t": 50.0, "val": v}]
            if t is not None:
                events.insert(0, {"t": t, "val": 0.9})
            out.append({"method": method, "seed": seed, "events": events})
        return out

    ours = [0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, None]
    theirs = [0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.88, 0.95]  # below the target
    data = runs("hpsearch", ours, [10, 10, 10, 10, 10, 10, 10, None])
    data += runs("optuna", theirs, [20, 20, 20, 20, 20, 20, None, None])
    summary = search.summarize(data, budget_s=100, target=0.9)
    t = search.paired_tests(summary, budget_s=100)["optuna"]
    assert t["pairs"] == 7  # seed 7: hpsearch has no result
    # optuna's best is 0.90 (its trial that hit the target) on seeds 0-5, 0.88 on seed 6
    gains = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.97 - 0.88]
    assert t["val_gain"] == pytest.approx(sum(gains) / 7) and t["val_p"] < 0.05
    # times: -10 s on six seeds, 10 - 100 (never reached) on seed 6
    assert t["time_gain_s"] == pytest.approx((6 * -10 - 90) / 7) and t["time_p"] < 0.05
    table = search.paired_table({"optuna": t})
    assert "| hpsearch − optuna | 7 | +0.0429 |" in table


CLOCK_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import search

search.RESEND_S = 0.3
folder = Path(sys.argv[2])
(folder / "go").write_text(repr(time.time()))
clock = search._Clock(budget_s=1.0)
search.signal.signal(search.signal.SIGTERM, clock.on_term)
dropped = []

def training_that_drops_the_first_signal():
    while True:
        try:
            time.sleep(0.02)
        except search.BudgetExhausted:
            if not dropped:  # as when the signal lands in a weakref callback
                dropped.append(1)
                continue
            raise

clock.start(folder / "ready_0")
clock.run(training_that_drops_the_first_signal)
print(len(dropped), round(clock.t_end, 2))
"""


def test_search_clock_stops_a_run_whose_first_signal_was_lost(tmp_path: Path) -> None:
    """A budget signal whose exception Python dropped (it landed in a finalizer) is sent again:
    the run still ends near its budget instead of training on until the parent's timeout."""
    proc = _run("-c", CLOCK_SCRIPT, str(BENCH), str(tmp_path), timeout=30)
    assert proc.returncode == 0, proc.stderr
    dropped, ended_at = proc.stdout.split()
    assert dropped == "1"
    assert 1.0 <= float(ended_at) < 3.0


def test_search_rerun_of_an_interrupted_run_starts_from_a_fresh_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benchmark continued with the same --work-dir re-runs an unfinished method and seed:
    the interrupted invocation's study and files must not count for the new run."""
    import argparse

    import optuna

    monkeypatch.syspath_prepend(str(BENCH))
    import search

    storage = f"sqlite:///{tmp_path / 'bench.db'}"
    args = argparse.Namespace(workers=2, threads=2)
    launcher = search._Launcher(args, "small", search.SETTINGS["small"], [], storage, tmp_path)
    name = launcher.study_name("optuna", 1)
    old = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    old.add_trial(optuna.trial.create_trial(value=0.99))  # the interrupted run's best
    other = optuna.create_study(study_name="bench_earlier_other", storage=storage)
    folder = tmp_path / "optuna_1"
    folder.mkdir()
    (folder / "result_0.json").write_text("{}")

    launcher.start_afresh(folder, name)

    assert list(folder.iterdir()) == []
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert name not in names and other.study_name in names


def test_search_continued_run_reports_its_runs_time_not_the_report_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benchmark continued with the same --work-dir keeps the runs finished before: its run
    time is the sum of every run's own time (recorded when it ran), not the seconds the last
    invocation took to write the report, and the header says runs were kept."""
    import argparse

    monkeypatch.syspath_prepend(str(BENCH))
    import search

    args = argparse.Namespace(workers=1, threads=2)
    launcher = search._Launcher(args, "small", search.SETTINGS["small"], [], None, tmp_path)
    folder = tmp_path / "optuna_0"
    folder.mkdir()
    result = {"worker": 0, "events": [], "counts": {"complete": 3}, "seed": 0}
    (folder / "result_0.json").write_text(json.dumps(result))
    (folder / "wall_s").write_text("80.5")

    kept = launcher.run("optuna", 0, 60.0)

    assert kept["kept"] and kept["wall_s"] == 80.5
    fresh = {"wall_s": 79.5}
    assert search._runtime([fresh], None, 3.0) == (3.0, [])
    runtime, notes = search._runtime([kept, fresh], None, 3.0)
    assert runtime == 160.0
    assert notes == [
        "1 of 2 runs were finished by an earlier invocation: run time is the sum "
        "of every run's own time"
    ]
    unknown = {**kept, "wall_s": None}
    runtime, notes = search._runtime([unknown, fresh], None, 3.0)
    assert runtime == 3.0 and "without their recorded time" in notes[0]


def test_search_title_names_a_budget_above_the_settings_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 120 s run of the 60 s small setting is not titled as if it were the 60 s run."""
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    assert search.longer_budget("small", 120, 60) == ", 120 s per method instead of 60 s"
    assert search.longer_budget("small", 60, 60) == ""
    assert search.longer_budget("small", 30, 60) == ""  # named among the reductions
    assert search.longer_budget("quick", 90, 45) == ""


def test_search_workers_count_each_trial_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker of a parallel run reads the shared study: a trial seen by several counts
    once, the state counts come from the fullest reading, and events without a trial number
    (KerasTuner's) are all kept."""
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    shared = [{"t": 5.0, "val": 0.8, "trial": 0, "test": 0.79}, {"t": 9.0, "val": 0.7, "trial": 1}]
    w0 = {"worker": 0, "events": shared[:1], "counts": {"complete": 1}, "seed": 3}
    w1 = {"worker": 1, "events": shared, "counts": {"complete": 2, "pruned": 1}, "seed": 3}
    merged = search.merge_workers([w0, w1])
    assert merged["events"] == shared and merged["counts"] == {"complete": 2, "pruned": 1}
    assert merged["workers"] == 2 and merged["seed"] == 3 and "worker" not in merged
    kt = [{"worker": 0, "events": [{"t": 1.0, "val": 0.5}] * 2, "counts": {}}]
    assert len(search.merge_workers(kt)["events"]) == 2
    # KerasTuner's workers share no study: each counts its own trials, and they add up
    own = {"trials": 3, "complete": 2}
    kt = [
        {"worker": w, "events": [{"t": 1.0 + w, "val": 0.5}], "counts": own, "counts_own": True}
        for w in (0, 1)
    ]
    assert search.merge_workers(kt)["counts"] == {"trials": 6, "complete": 4}


def test_search_variants_get_their_own_paired_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """hpsearch's table compares it with the other tools only; a variant (transfer) has its own
    table, including its row against plain hpsearch, and a time ratio (0.5: twice as fast)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import search

    def runs(method: str, val: float, hit: float) -> list[dict]:  # type: ignore[type-arg]
        return [
            {"method": method, "seed": s, "events": [{"t": hit, "val": val + s / 1000}]}
            for s in range(6)
        ]

    data = runs("hpsearch", 0.87, 40) + runs("optuna", 0.86, 50)
    data += runs("hpsearch_transfer", 0.89, 20)
    summary = search.summarize(data, budget_s=60, target=0.85)
    ours = search.paired_tests(summary, 60)
    assert list(ours) == ["optuna"]
    transfer = search.paired_tests(summary, 60, "hpsearch_transfer")
    assert list(transfer) == ["hpsearch", "optuna"]
    assert transfer["optuna"]["time_ratio"] == pytest.approx(0.4)
    assert (
        transfer["optuna"]["val_gain"] == pytest.approx(0.03)
        and transfer["optuna"]["val_p"] < 0.05
    )
    table = search.paired_table(transfer, "hpsearch_transfer")
    assert "| hpsearch_transfer − optuna | 6 | +0.0300 |" in table and "| 0.40 |" in table
    verdict, gap = search._verdict(summary)
    assert gap == pytest.approx(0.01)  # against optuna, not against its own variant


def _search_quick(tmp_path: Path, *args: str) -> tuple[dict[str, str], str]:
    """Run ``search.py --quick`` shortened to 8 s; its RESULT figures, in order, and stderr."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "search.py"), "--quick", "--budget-s", "8", *args],
        capture_output=True, text=True, timeout=900, cwd=BENCH.parent,
        env={**os.environ, "HPSEARCH_BENCH_RESULTS": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    figures = dict(line.removeprefix("RESULT ").split("=", 1) for line in lines)
    assert len(figures) == len(lines), lines  # each figure printed once
    return figures, proc.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_search_quick_runs_and_prints_its_figures(tmp_path: Path) -> None:
    """`search.py --quick` (shortened: 2 methods, 8 s each) runs end to end and ends with the
    comparison's RESULT lines; results go to a temporary folder, not benchmarks/results."""
    results, _ = _search_quick(tmp_path, "--methods", "hpsearch,optuna")
    assert list(results) == [
        "search_hpsearch_minus_best_other_val", "search_gain_vs_optuna", "search_p_vs_optuna",
    ]  # fmt: skip
    md = (tmp_path / "search_quick.md").read_text()
    assert md.rstrip().endswith(f"`RESULT search_p_vs_optuna={results['search_p_vs_optuna']}`")
    assert (tmp_path / "search_quick.json").exists()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.usefixtures("fashion_mnist_available")
def test_search_parallel_workers_and_transfer_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    """`--workers 2` with `hpsearch_transfer`: two processes per method share one PostgreSQL
    study, the earlier study is run first in the same database, the transfer's RESULT lines
    are printed, and the run leaves no study of its own behind. KerasTuner's two workers ask
    one chief for their trials: one numbering, one project folder."""
    import json

    import optuna

    work = tmp_path / "work"
    results, stderr = _search_quick(
        tmp_path, "--workers", "2", "--storage", postgres_url, "--earlier-budget-s", "25",
        "--methods", "hpsearch,kerastuner,optuna,hpsearch_transfer", "--work-dir", str(work),
    )  # fmt: skip
    kt_results = [
        json.loads((work / "kerastuner_0" / f"result_{w}.json").read_text()) for w in (0, 1)
    ]
    begun = sum(r["counts"]["trials"] for r in kt_results)
    assert all(r["counts"]["trials"] > 0 for r in kt_results), kt_results  # both trained
    trial_dirs = sorted(p.name for p in (work / "kerastuner_0" / "kt").glob("trial_*"))
    # (a trial the chief handed out as the budget's signal came may not have begun)
    assert begun <= len(trial_dirs) <= begun + 2, (trial_dirs, kt_results)
    assert trial_dirs == [f"trial_{i:04d}" for i in range(len(trial_dirs))]
    assert list(results)[-2:] == [
        "search_2workers_transfer_gain_vs_optuna", "search_2workers_transfer_p_vs_optuna",
    ]  # fmt: skip
    assert "[search] earlier study:" in stderr
    md = (tmp_path / "search_quick_2workers.md").read_text()
    assert "2 parallel workers" in md and "**2 processes per method**" in md
    assert "KerasTuner runs in its own parallel mode" in md
    # (in 8 s a method may finish no trial, so the pair itself may be missing)
    assert 'from_study = "bench_earlier"' in md and "| hpsearch_transfer − optuna |" in md
    left = [s.study_name for s in optuna.get_all_study_summaries(postgres_url)]
    assert not [name for name in left if name.startswith("bench_")]


def test_search_from_log_compares_the_seeds_every_method_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that crashed before its summary still has its progress lines: ``--from-log``
    compares the seeds every method finished, best val only (no time, no test accuracy)."""
    log = tmp_path / "crashed.log"
    lines = [
        f"[search] seed {s} {m:10s}: 2 complete trials, best val {v + s / 1000:.4f} (70 s)"
        for s in range(7)
        for m, v in (("hpsearch", 0.87), ("optuna", 0.85))
    ]
    lines += ["[search] seed 7 hpsearch  : 1 complete trials, best val 0.9900 (70 s)"]
    log.write_text("\n".join([*lines, "Traceback (most recent call last):", "SystemError"]))
    monkeypatch.setenv("HPSEARCH_BENCH_RESULTS", str(tmp_path))
    proc = _run(str(BENCH / "search.py"), "--from-log", str(log), "--name", "from_log")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "from_log.md").read_text()
    assert "seeds [0, 1, 2, 3, 4, 5, 6]" in md  # seed 7: optuna never finished it
    assert "| hpsearch − optuna | 7 | +0.0200 | 0.0156 |" in md
    assert "time to target and test accuracy are not reported" in md
