"""Parallel TPE with constant liar: do workers start near-duplicates of running trials?

TPE's ``constant_liar=True`` treats running trials as if they had a bad result, so parallel
workers do not all sample the same promising point; it only works if a worker can read the
other workers' running trials *with their parameters*. This benchmark runs the same parallel
search with plain Optuna and with hpsearch's worker storage and counts, for every trial, whether
another worker's trial with the same or a nearly the same configuration was running when it
started.

Setup: 8 worker processes on one PostgreSQL study (fresh database, dropped after), TPE with
``constant_liar=True`` (a different seed per worker, 8 startup trials), 4 parameters named and
ranged as in hpsearch's space (filters, optimizer, batch size: categorical; learning rate: log
float), so that workers crowding around the same optimum is possible, a cheap objective (a
smooth function of the parameters with noise, one clear optimum) that sleeps ``--sleep``
seconds to stand for training. Modes run interleaved, ``--repeats`` times.

- ``plain``: ``optuna.load_study(storage=URL)`` (Optuna's cached RDBStorage).
- ``hpsearch``: ``hpsearch.storage.cached(get_storage(URL))`` with the trial's parameters
  written in one transaction (``trial_writes``), as hpsearch's workers do.

A trial is a *duplicate* if all its parameters equal those of a trial of another worker that was
running when it started; *near-duplicate* if every categorical parameter is equal and every
numeric one is within 5 % of its range (log range for log-scaled ones).

    .venv/bin/python benchmarks/constant_liar.py --quick   # ≈ 1 min
    .venv/bin/python benchmarks/constant_liar.py           # ≈ 6 min

The last lines are ``RESULT constant_liar_near_dup_plain=<fraction>`` and
``RESULT constant_liar_near_dup_hpsearch=<fraction>``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))  # after $PYTHONPATH

import _common  # noqa: E402

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
NEAR = 0.05


def _objective(sleep_s: float, seed: int) -> Any:
    import contextlib

    import optuna

    try:
        from hpsearch.storage import trial_writes
    except ImportError:  # hpsearch before the storage package (--name storage_before)

        def trial_writes(trial: optuna.Trial) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

    rng = random.Random(seed)

    def objective(trial: optuna.Trial) -> float:
        with trial_writes(trial):  # hpsearch: one transaction; plain Optuna: no change
            filters = trial.suggest_categorical("conv.filters_base", [16, 32, 48, 64])
            name = trial.suggest_categorical("optimizer.name", ["sgd", "adam", "rmsprop"])
            batch = trial.suggest_categorical("training.batch_size", [32, 64, 128])
            lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
            trial.set_user_attr("worker", os.getpid())
        time.sleep(sleep_s)
        # One clear optimum (48 filters, adam, batch 64, lr 3e-3) for TPE to crowd around.
        score = -((math.log10(lr) + 2.5) ** 2) - abs(filters - 48) / 64 - abs(batch - 64) / 128
        return score + (0.2 if name == "adam" else 0.0) + rng.gauss(0, 0.01)

    return objective


def _unit(value: Any, dist: Any) -> float | None:
    """A numeric parameter on [0, 1] of its range (log range when log-scaled); None otherwise."""
    low, high = getattr(dist, "low", None), getattr(dist, "high", None)
    if low is None or high is None or high == low:
        return None
    if getattr(dist, "log", False):
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (float(value) - low) / (high - low)


def _worker(mode: str, url: str, index: int, n_trials: int, sleep_s: float, barrier: Any) -> None:
    import warnings

    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = optuna.samplers.TPESampler(
        constant_liar=True, seed=1000 + index, n_startup_trials=8, multivariate=True
    )
    if mode == "plain":
        from sqlalchemy.engine import make_url

        driver = make_url(url).set(drivername="postgresql+psycopg2")  # hpsearch's driver
        storage: Any = driver.render_as_string(hide_password=False)
    else:
        from hpsearch.storage import cached, get_storage

        storage = cached(get_storage(url))
    study = optuna.load_study(study_name="liar", storage=storage, sampler=sampler)
    objective = _objective(sleep_s, index)
    barrier.wait()
    study.optimize(objective, n_trials=n_trials)


def _near(a: Any, b: Any) -> tuple[bool, bool]:
    """(identical, near-identical) for two trials' parameters."""
    if a.params == b.params:
        return True, True
    if set(a.params) != set(b.params):
        return False, False
    for name, dist in a.distributions.items():
        x, y = _unit(a.params[name], dist), _unit(b.params[name], dist)
        if x is None:
            if a.params[name] != b.params[name]:
                return False, False
        elif abs(x - y) > NEAR:
            return False, False
    return False, True


def _run(mode: str, workers: int, n_trials: int, sleep_s: float) -> dict[str, Any]:
    import optuna
    import sqlalchemy

    name = f"hpsearch_liar_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        from hpsearch.storage import get_storage

        storage = get_storage(url, heartbeat=False)
        optuna.create_study(study_name="liar", storage=storage, direction="maximize")
        storage.engine.dispose()
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(workers)
        procs = [
            ctx.Process(target=_worker, args=(mode, url, i, n_trials, sleep_s, barrier))
            for i in range(workers)
        ]
        start = time.monotonic()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.monotonic() - start
        if any(p.exitcode != 0 for p in procs):
            raise SystemExit(f"{mode}: a worker failed (exit codes {[p.exitcode for p in procs]})")
        study = optuna.load_study(study_name="liar", storage=get_storage(url, heartbeat=False))
        trials = [t for t in study.get_trials() if t.datetime_complete is not None]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
    dup = near = 0
    for t in trials:
        running = [
            o
            for o in trials
            if o.user_attrs["worker"] != t.user_attrs["worker"]
            and o.datetime_start <= t.datetime_start < o.datetime_complete
        ]
        flags = [_near(t, o) for o in running]
        dup += any(f[0] for f in flags)
        near += any(f[1] for f in flags)
    best = max(t.value for t in trials if t.value is not None)
    return {
        "mode": mode,
        "trials": len(trials),
        "duplicates": dup,
        "near_duplicates": near,
        "near_fraction": near / len(trials),
        "best": best,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 workers, fewer trials, 1 repeat")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials-per-worker", type=int, default=12)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds per trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", help="results file name (default: constant_liar[_quick])")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.trials_per_worker, args.repeats, args.sleep = 4, 6, 1, 0.5
    started = time.monotonic()
    runs = []
    for repeat in range(args.repeats):
        for mode in ("plain", "hpsearch"):
            run = _run(mode, args.workers, args.trials_per_worker, args.sleep)
            run["repeat"] = repeat
            runs.append(run)
            print(
                f"{mode:9s} repeat {repeat}: {run['trials']} trials, "
                f"{run['duplicates']} duplicates, {run['near_duplicates']} near-duplicates "
                f"of a running trial, best {run['best']:.3f}",
                flush=True,
            )
    summary = {}
    rows = []
    for mode in ("plain", "hpsearch"):
        mine = [r for r in runs if r["mode"] == mode]
        trials = sum(r["trials"] for r in mine)
        near = sum(r["near_duplicates"] for r in mine)
        dup = sum(r["duplicates"] for r in mine)
        summary[mode] = near / trials
        rows.append(
            [
                mode,
                trials,
                f"{dup} ({dup / trials:.1%})",
                f"{near} ({near / trials:.1%})",
                f"{statistics.median(r['best'] for r in mine):.3f}",
            ]
        )
    name = args.name or ("constant_liar_quick" if args.quick else "constant_liar")
    meta = _common.meta(
        time.monotonic() - started,
        workers=args.workers,
        trials_per_worker=args.trials_per_worker,
        sleep_s=args.sleep,
        repeats=args.repeats,
    )
    markdown = (
        _common.header(
            f"Parallel TPE with constant liar ({args.workers} workers, PostgreSQL)", meta
        )
        + "\n"
        + _common.table(
            [
                "storage",
                "trials",
                "duplicate of a running trial",
                "near-duplicate of a running trial",
                "best value (median of repeats)",
            ],
            rows,
        )
    )
    path = _common.write_results(name, markdown, {"meta": meta, "runs": runs})
    print(markdown)
    print(f"wrote {path}")
    _common.result_line("constant_liar_near_dup_plain", f"{summary['plain']:.3f}")
    _common.result_line("constant_liar_near_dup_hpsearch", f"{summary['hpsearch']:.3f}")


if __name__ == "__main__":
    main()
