"""Storage scaling: ask+tell latency vs existing trials and concurrent workers, per backend.

No training: each operation is what a worker does around one trial with a synthetic objective,
``study.ask()`` → hpsearch's ``sample_config`` (the 12 parameters of
``studies/fashion_mnist_quick.toml``) → ``study.tell(value)``, through hpsearch's
``get_storage`` (the RDBStorage workers use). The sampler is Optuna's ``RandomSampler``, so the
numbers are storage cost and not sampler CPU time (TPE's own cost grows with the trial count).

Backends: an SQLite file in a temporary folder; PostgreSQL and MariaDB on 127.0.0.1, each in a
fresh database that is created for the run and dropped afterwards. A backend that cannot be
reached is skipped with the reason. Worker processes are spawned and start together (barrier).

    .venv/bin/python benchmarks/storage.py --quick    # ≈ 1-2 min
    .venv/bin/python benchmarks/storage.py            # full: ≈ 10 min

The last line is ``RESULT storage_sqlite_p50_ms=<value>`` (1 worker, largest trial count).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import _common

POSTGRES_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
STUDY_SPEC = _common.REPO_ROOT / "studies" / "fashion_mnist_quick.toml"


def _search_space() -> Any:
    from hpsearch.spec import load_spec

    return load_spec(STUDY_SPEC).search


def _worker(url: str, study_name: str, n_ops: int, seed: int, barrier: Any, out: Any) -> None:
    """One worker process: ``n_ops`` ask → sample_config → tell; sends latencies (s)."""
    import optuna

    from hpsearch.space import sample_config
    from hpsearch.storage import get_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    space = _search_space()
    study = optuna.load_study(
        study_name=study_name,
        storage=get_storage(url),
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    rng = random.Random(seed)
    latencies = []
    barrier.wait()
    for _ in range(n_ops):
        t0 = time.perf_counter()
        trial = study.ask()
        sample_config(trial, space)
        study.tell(trial, rng.random())
        latencies.append(time.perf_counter() - t0)
    out.put(latencies)


def _prefill(study: Any, n: int, seed: int) -> None:
    """Add ``n`` finished trials with hpsearch parameters and 6 epochs of intermediate values."""
    import optuna

    from hpsearch.space import sample_config

    space = _search_space()
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    templates = []
    for _ in range(20):
        t = scratch.ask()
        sample_config(t, space)
        templates.append((t.params, t.distributions))
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        params, dists = templates[i % len(templates)]
        curve = sorted(rng.uniform(0.7, 0.9) for _ in range(6))
        pruned = rng.random() < 0.5
        curve = curve[: rng.randint(1, 3)] if pruned else curve
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=None if pruned else curve[-1],
                state=optuna.trial.TrialState.PRUNED
                if pruned
                else optuna.trial.TrialState.COMPLETE,
                intermediate_values=dict(enumerate(curve, start=1)),
                user_attrs={"hpsearch:epochs": len(curve), "hpsearch:host": "bench"},
            )
        )
    study.add_trials(trials)


class _Backend:
    """A database for one backend: URL of a fresh database, and how to drop it."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.db = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.url = ""

    def create(self) -> None:
        import sqlalchemy as sa

        if self.name == "sqlite":
            self.url = f"sqlite:///{self.tmp / 'bench.db'}"
            return
        admin = POSTGRES_ADMIN if self.name == "postgresql" else MARIADB_ADMIN
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {self.db}"))
        engine.dispose()
        self.url = (
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.db}"
            if self.name == "postgresql"
            else f"mysql+pymysql://root@127.0.0.1:3306/{self.db}"
        )

    def drop(self) -> None:
        import sqlalchemy as sa

        if self.name == "sqlite" or not self.url:
            return
        admin = POSTGRES_ADMIN if self.name == "postgresql" else MARIADB_ADMIN
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if self.name == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.db}"))
        engine.dispose()


def _measure(url: str, study_name: str, workers: int, n_ops: int) -> list[float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(url, study_name, n_ops, 1000 + i, barrier, out),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    latencies: list[float] = []
    for _ in procs:
        latencies += out.get(timeout=900)
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"a storage worker exited with code {p.exitcode}")
    return latencies


def run_backend(
    name: str, trial_counts: list[int], worker_counts: list[int], n_ops: int
) -> dict[str, Any]:
    """All cells of one backend; ``{"rows": [...]}`` or ``{"skipped": reason}``."""
    import optuna

    from hpsearch.storage import get_storage

    with tempfile.TemporaryDirectory(prefix="hpsearch-storage-") as tmp:
        backend = _Backend(name, Path(tmp))
        try:
            backend.create()
            storage = get_storage(backend.url, heartbeat=False)
        except Exception as e:  # noqa: BLE001 - any connection problem means "skip"
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"[storage] {name}: skipped ({reason})", file=sys.stderr)
            backend.drop()
            return {"skipped": reason}
        rows = []
        try:
            study = optuna.create_study(study_name="bench", storage=storage)
            have = 0
            for n in trial_counts:
                t0 = time.perf_counter()
                _prefill(study, max(0, n - have), seed=n)
                fill_s = time.perf_counter() - t0
                for workers in worker_counts:
                    existing = len(study.get_trials(deepcopy=False))
                    lat = _measure(backend.url, "bench", workers, n_ops)
                    row = {
                        "backend": name,
                        "existing_trials": existing,
                        "workers": workers,
                        "ops": len(lat),
                        "p50_ms": 1000 * _common.percentile(lat, 50),
                        "p99_ms": 1000 * _common.percentile(lat, 99),
                        "mean_ms": 1000 * sum(lat) / len(lat),
                        "throughput_ops_s": len(lat) / max(1e-9, sum(lat) / workers),
                        "prefill_s": fill_s,
                    }
                    rows.append(row)
                    print(
                        f"[storage] {name:10s} trials={existing:6d} workers={workers} "
                        f"p50={row['p50_ms']:.1f} ms p99={row['p99_ms']:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
                have = len(study.get_trials(deepcopy=False))
        finally:
            storage.engine.dispose()
            backend.drop()
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ≈ 1-2 minutes")
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql,mariadb",
        help="comma-separated subset of sqlite,postgresql,mariadb",
    )
    parser.add_argument("--trials", help="existing trial counts, e.g. 0,1000,5000")
    parser.add_argument("--workers", help="concurrent worker processes, e.g. 1,2,4,8")
    parser.add_argument("--ops", type=int, help="ask+tell operations per worker")
    args = parser.parse_args(argv)
    trial_counts = [
        int(x) for x in (args.trials or ("0,300" if args.quick else "0,1000,5000")).split(",")
    ]
    worker_counts = [
        int(x) for x in (args.workers or ("1,4" if args.quick else "1,2,4,8")).split(",")
    ]
    n_ops = args.ops or (20 if args.quick else 60)

    warnings.filterwarnings("ignore", category=Warning, module="optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    results = {
        name: run_backend(name, trial_counts, worker_counts, n_ops)
        for name in args.backends.split(",")
    }
    meta = _common.meta(
        time.perf_counter() - started,
        mode="quick" if args.quick else "full",
        n_ops_per_worker=n_ops,
        sampler="RandomSampler",
    )
    rows = [r for res in results.values() for r in res.get("rows", [])]
    md = _common.header("storage: ask+tell latency vs trials and workers", meta)
    md += (
        f"\nOne operation = `study.ask()` + hpsearch `sample_config` (12 parameters) + "
        f"`study.tell()`, through `hpsearch.storage.get_storage`; RandomSampler (storage cost "
        f"only); {n_ops} operations per worker process, all workers started together. "
        "Latency is per operation; throughput is operations per second of all workers "
        "together. CPU-bound on this machine beyond 2 workers (2 cores). The p99 includes "
        "each worker's first operation after `load_study`, which reads all existing trials "
        "into Optuna's cache (seconds at 5,000 trials); later operations read only new "
        "trials, so p50 stays flat.\n\n"
    )
    md += _common.table(
        ["backend", "existing trials", "workers", "p50 ms", "p99 ms", "ops/s (all workers)"],
        [
            (
                r["backend"],
                r["existing_trials"],
                r["workers"],
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['throughput_ops_s']:.1f}",
            )
            for r in rows
        ],
    )
    for name, res in results.items():
        if "skipped" in res:
            md += f"\n{name}: skipped ({res['skipped']}).\n"
    _common.write_results(
        "storage_quick" if args.quick else "storage", md, {"meta": meta, "results": results}
    )
    key = [
        r for r in rows if r["backend"] == "sqlite" and r["workers"] == min(worker_counts)
    ] or rows
    if not key:
        _common.result_line("storage_p50_ms", "nan")
        return 1
    _common.result_line(f"storage_{key[-1]['backend']}_p50_ms", f"{key[-1]['p50_ms']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
