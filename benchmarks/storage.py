"""Storage under many workers: hpsearch's worker path side by side with plain Optuna defaults.

Both do the same trial with a synthetic objective (no training): 12 parameters of
``studies/fashion_mnist_quick.toml`` sampled by Optuna's ``RandomSampler`` (so the numbers are
storage cost, not sampler CPU), 7 user attributes at the start and 2 at the end (what a real
trial records), 3 epoch reports each followed by a pruning check, then the result.

- ``plain``: ``optuna.load_study(storage=URL)`` (Optuna's default RDBStorage: a pool of up to
  15 connections, one commit per parameter and attribute, no heartbeats);
  ``study.optimize(objective, n_trials=1)`` per trial.
- ``hpsearch``: the worker loop of ``hpsearch.worker`` (stale-trial check and budget count
  before each trial, then ``study.optimize(n_trials=1)``) on ``hpsearch.storage.get_storage``:
  heartbeats, one connection per process, retries, parameters and attributes written in one
  commit.

Cells: backend (SQLite file, PostgreSQL, MariaDB on 127.0.0.1; fresh database each, dropped
after) × existing trials (1k, 5k, 20k on PostgreSQL; 1k on the others by default) × worker
processes (1, 8, 32). Workers are forked, load the study, run one
warm-up trial (each loads all existing trials into Optuna's cache, timed as "load s"), wait at
a barrier, then run their share of the cell's trials. Trials/s = trials / wall time from the
barrier to the last worker's end. After each cell the trials it added are deleted again, so
every cell of a size runs on the same study. ``--repeats N`` runs the cells of a size N times,
interleaved (every worker count and mode once, then again), and reports the median and the
range.

A last part starts 200 workers against the PostgreSQL server, which allows 100 connections
(``max_connections``), and counts the operations that failed with a connection error: plain
Optuna holds a connection per worker; hpsearch runs with ``HPSEARCH_DB_POOL=0`` (connect per
operation, none held between) and retries a refused connection.

    .venv/bin/python benchmarks/storage.py --quick    # ≈ 2 min
    .venv/bin/python benchmarks/storage.py --sizes 1000,5000 --trials 320   # ≈ 45 min
    .venv/bin/python benchmarks/storage.py            # full: adds 20,000 trials (prefill ≈ 14 min)
    .venv/bin/python benchmarks/storage.py --backends postgresql --sizes 20000 --workers 8,32 \
        --trials 320 --repeats 1 --limit-workers 0 --name storage_20k   # 20,000 trials only
    .venv/bin/python benchmarks/storage.py --backends postgresql --sizes 1000 --trials 320 \
        --modes plain,hpsearch,grpc,separate --limit-workers 0 --name storage_levers  # ≈ 20 min

The last command adds two modes next to plain and hpsearch: ``grpc``, plain Optuna's workers
through one Optuna gRPC storage proxy process (``run_grpc_proxy_server``), and ``separate``,
hpsearch's worker path with a study of its own per worker, which shares nothing but the
server and the cores: its change from 8 to 32 workers is the floor for a shared study.

The last line is ``RESULT storage_pg_ratio_32=<hpsearch trials/s ÷ plain trials/s>`` for
PostgreSQL with 32 workers at the largest study size.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

import _common

POSTGRES_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
STUDY_SPEC = _common.REPO_ROOT / "studies" / "fashion_mnist_quick.toml"
EPOCHS = 3
MODES = ("plain", "hpsearch")
ALL_MODES = (*MODES, "grpc", "separate")
"""``--modes`` adds ``grpc``: plain Optuna through Optuna's gRPC storage proxy, and
``separate``: hpsearch's worker path with a study of its own per worker (nothing shared but
the server and the cores: how much of a fall from 8 to 32 workers is this machine's)."""
_next_stale_check = 0.0


def _search_space() -> Any:
    from hpsearch.spec import load_spec

    return load_spec(STUDY_SPEC).search


def _objective(space: Any, rng: random.Random) -> Any:
    """The synthetic trial: what a real hpsearch trial writes, without the training."""
    import optuna

    from hpsearch.space import sample_config
    from hpsearch.storage import trial_writes

    def objective(trial: optuna.Trial) -> float:
        with trial_writes(trial):  # as hpsearch's objective: one transaction (plain: no-op)
            config = sample_config(trial, space)
            trial.set_user_attr("hpsearch:config", config.summary())
            for key, value in (
                ("seed", trial.number),
                ("host", "bench"),
                ("pid", str(os.getpid())),
                ("keras_backend", "tensorflow"),
                ("n_params", 123456),
                ("gpu", "0"),
            ):
                trial.set_user_attr(f"hpsearch:{key}", value)
        value = 0.0
        for epoch in range(1, EPOCHS + 1):
            value = rng.uniform(0.7, 0.9)
            trial.report(value, epoch)
            trial.should_prune()  # the pruner's read of the study, as every epoch does
        with trial_writes(trial):
            trial.set_user_attr("hpsearch:epochs", EPOCHS)
            trial.set_user_attr("hpsearch:wall_time_s", 1.0)
        return value

    return objective


def _open_study(mode: str, url: str, seed: int) -> Any:
    import optuna

    sampler = optuna.samplers.RandomSampler(seed=seed)
    from hpsearch.storage import cached, get_storage, parse_url

    if mode == "plain":  # the same driver as hpsearch's (psycopg2 / pymysql)
        plain_url = parse_url(url).render_as_string(hide_password=False)
        return optuna.load_study(study_name="bench", storage=plain_url, sampler=sampler)
    if mode == "separate":  # removed after the cell by _trim
        return optuna.create_study(
            study_name=f"bench_separate_{os.getpid()}",
            storage=cached(get_storage(url)),
            sampler=sampler,
            load_if_exists=True,
        )
    if mode == "grpc":  # the proxy this cell started (_serve_grpc_proxy)
        proxy = optuna.storages.GrpcStorageProxy(
            host="127.0.0.1", port=int(os.environ["BENCH_GRPC_PORT"])
        )
        proxy.wait_server_ready(timeout=60)
        return optuna.load_study(study_name="bench", storage=proxy, sampler=sampler)

    # as hpsearch.study.load_study opens it for a worker
    return optuna.load_study(study_name="bench", storage=cached(get_storage(url)), sampler=sampler)


def _one_trial(mode: str, study: Any, objective: Any) -> None:
    import optuna

    if mode in ("hpsearch", "separate"):  # what hpsearch.worker.run_worker does per trial
        global _next_stale_check
        if time.monotonic() >= _next_stale_check:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
            _next_stale_check = time.monotonic() + 60
        study.get_trials(deepcopy=False)  # the budget count
    study.optimize(objective, n_trials=1)


def _count_sql() -> list[int]:
    """Count this process's SQL statements plus commits (SQLAlchemy engine events) from now on;
    the count is the list's one item."""
    import sqlalchemy

    count = [0]

    def one_more(*_: Any) -> None:
        count[0] += 1

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", one_more)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", one_more)
    return count


def _worker(
    mode: str, url: str, n_trials: int, seed: int, barrier: Any, out: Any, env: dict[str, str]
) -> None:
    """One worker process: warm up, wait for all, run ``n_trials``; report what happened."""
    os.environ.update(env)
    import optuna

    sql = _count_sql()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    result: dict[str, Any] = {"latencies": [], "errors": [], "load_s": None, "end": None}
    try:
        t0 = time.perf_counter()
        study = _open_study(mode, url, seed)
        objective = _objective(_search_space(), random.Random(seed))
        _one_trial(mode, study, objective)
        result["load_s"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - counted, not raised: the cell goes on
        result["errors"].append(_error_text(e))
    barrier.wait()
    cpu0 = time.process_time()
    sql_before = sql[0]
    if not result["errors"]:
        for _ in range(n_trials):
            t0 = time.perf_counter()
            try:
                _one_trial(mode, study, objective)
            except Exception as e:  # noqa: BLE001
                result["errors"].append(_error_text(e))
                break
            result["latencies"].append(time.perf_counter() - t0)
    result["end"] = time.time()
    result["cpu_s"] = time.process_time() - cpu0  # this process, all its threads
    result["sql"] = sql[0] - sql_before
    out.put(result)


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    if os.environ.get("BENCH_DEBUG"):
        traceback.print_exc()
    return text


def _stat_fields(proc: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...)."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc."""
    fields = _stat_fields(Path(f"/proc/{pid}"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu_s(backend: str) -> float:
    """CPU seconds the local database server has used so far (0 for SQLite, no server).

    PostgreSQL: every ``postgres`` process plus what the postmaster's exited children (the
    backends of closed connections) used. MariaDB: the ``mariadbd`` process, all threads.
    """
    names = {"postgresql": ("postgres",), "mariadb": ("mariadbd", "mysqld")}.get(backend, ())
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in names:
                continue
            fields = _stat_fields(proc)
        except OSError:
            continue  # exited meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if fields[1] == "1":  # the postmaster: its reaped children too
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


class _WorkersDied(RuntimeError):
    """A worker process was killed (the kernel's out-of-memory killer, usually)."""


def _until(ready: Any, procs: list[Any], timeout_s: float = 1800) -> None:
    """Wait until ``ready()``; raise _WorkersDied as soon as a worker was killed."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise _WorkersDied(
                f"{len(dead)} worker(s) killed (exit code {dead[0]}; -9 = out of memory: "
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB "
                "on this machine)"
            )
        if time.monotonic() > deadline:
            raise _WorkersDied(f"no progress for {timeout_s:g} s")
        time.sleep(0.2)


def _serve_grpc_proxy(url: str, port: int) -> None:
    """The proxy process: Optuna's gRPC server on Optuna's default storage for ``url``."""
    import optuna

    from hpsearch.storage import parse_url

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    plain_url = parse_url(url).render_as_string(hide_password=False)
    storage = optuna.storages.get_storage(plain_url)  # cached RDBStorage, as Optuna's docs say
    optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=port)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_cell(
    mode: str,
    url: str,
    workers: int,
    trials: int,
    env: dict[str, str] | None = None,
    backend: str = "",
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    out = ctx.Queue()
    proxy = None
    if mode == "grpc":  # one proxy for all workers, as one per node would serve its workers
        port = _free_port()
        env = {**(env or {}), "BENCH_GRPC_PORT": str(port)}
        proxy = ctx.Process(target=_serve_grpc_proxy, args=(url, port), daemon=True)
        proxy.start()
    try:
        return _run_workers(ctx, barrier, out, proxy, mode, url, workers, trials, env, backend)
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.join(timeout=10)


def _run_workers(
    ctx: Any,
    barrier: Any,
    out: Any,
    proxy: Any,
    mode: str,
    url: str,
    workers: int,
    trials: int,
    env: dict[str, str] | None,
    backend: str,
) -> dict[str, Any]:
    share = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(mode, url, share[i], 1000 + i, barrier, out, env or {}),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        _until(lambda: barrier.n_waiting >= workers, procs)
        barrier.wait(timeout=60)
        start = time.time()
        server_cpu0 = _server_cpu_s(backend)
        proxy_cpu0 = _process_cpu_s(proxy.pid) if proxy else 0.0
        results = []
        while len(results) < workers:
            _until(lambda: not out.empty(), procs)
            results.append(out.get())
        server_cpu = _server_cpu_s(backend) - server_cpu0
        proxy_cpu = _process_cpu_s(proxy.pid) - proxy_cpu0 if proxy else 0.0
    except _WorkersDied as e:
        for p in procs:
            p.kill()
        print(f"[storage] {mode} {workers} workers: {e}", file=sys.stderr, flush=True)
        return {"mode": mode, "workers": workers, "died": str(e)}
    for p in procs:
        p.join(timeout=60)
    latencies = [lat for r in results for lat in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    loads = [r["load_s"] for r in results if r["load_s"] is not None]
    wall = max(r["end"] for r in results) - start
    n_done = len(latencies)
    return {
        "mode": mode,
        "workers": workers,
        "trials": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "p50_ms": 1000 * _common.percentile(latencies, 50),
        "p99_ms": 1000 * _common.percentile(latencies, 99),
        "trials_per_s": len(latencies) / max(wall, 1e-9),
        "load_s_median": _common.percentile(loads, 50),
        "client_cpu_ms": 1000 * sum(r.get("cpu_s", 0.0) for r in results) / max(n_done, 1),
        "server_cpu_ms": 1000 * server_cpu / max(n_done, 1),
        "proxy_cpu_ms": 1000 * proxy_cpu / max(n_done, 1),
        # statements and commits, all threads (heartbeats too); gRPC: in the proxy, not counted
        "sql_per_trial": None
        if mode == "grpc"
        else sum(r.get("sql", 0) for r in results) / max(n_done, 1),
    }


def _prefill(url: str, n: int, seed: int) -> None:
    """Add ``n`` finished trials with hpsearch parameters, attributes and epoch values."""
    import optuna

    from hpsearch.space import sample_config
    from hpsearch.storage import get_storage

    space = _search_space()
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    templates = []
    for _ in range(20):
        t = scratch.ask()
        sample_config(t, space)
        templates.append((t.params, t.distributions))
    rng = random.Random(seed)
    storage = get_storage(url, heartbeat=False)
    study = optuna.load_study(study_name="bench", storage=storage)
    batch = []
    for i in range(n):
        params, dists = templates[i % len(templates)]
        curve = sorted(rng.uniform(0.7, 0.9) for _ in range(6))
        pruned = rng.random() < 0.5
        curve = curve[: rng.randint(1, 3)] if pruned else curve
        batch.append(
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
        if len(batch) == 500:
            study.add_trials(batch)
            batch = []
    study.add_trials(batch)
    storage.engine.dispose()


class _Database:
    """A fresh database on one backend: its URL, and how to drop it."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.name = f"hpsearch_bench_{uuid.uuid4().hex[:8]}"
        self.url = (
            f"sqlite:///{tmp / (self.name + '.db')}"
            if backend == "sqlite"
            else f"postgresql://postgres@127.0.0.1:5432/{self.name}"
            if backend == "postgresql"
            else f"mysql://root@127.0.0.1:3306/{self.name}"
        )

    def _admin(self, sql: str) -> None:
        import sqlalchemy as sa

        admin = POSTGRES_ADMIN if self.backend == "postgresql" else MARIADB_ADMIN
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
        engine.dispose()

    def __enter__(self) -> _Database:
        import optuna

        from hpsearch.storage import get_storage

        if self.backend != "sqlite":
            self._admin(f"CREATE DATABASE {self.name}")
        storage = get_storage(self.url, heartbeat=False)
        optuna.create_study(study_name="bench", storage=storage)
        storage.engine.dispose()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.backend == "postgresql":
            self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        elif self.backend == "mariadb":
            self._admin(f"DROP DATABASE IF EXISTS {self.name}")


def _trim(url: str, keep: int) -> None:
    """Delete the trials numbered ``keep`` and above (what the last cell added) with their rows,
    and the studies of mode ``separate``."""
    import optuna
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    from hpsearch.storage import get_storage

    storage = get_storage(url, heartbeat=False)
    for name in optuna.get_all_study_names(storage):
        if name != "bench":
            optuna.delete_study(study_name=name, storage=storage)
    trials = models.TrialModel.__table__
    added = sa.select(trials.c.trial_id).where(trials.c.number >= keep).scalar_subquery()
    with storage.engine.begin() as conn:
        for model in (
            models.TrialParamModel,
            models.TrialValueModel,
            models.TrialUserAttributeModel,
            models.TrialSystemAttributeModel,
            models.TrialIntermediateValueModel,
            models.TrialHeartbeatModel,
        ):
            table = model.__table__
            conn.execute(table.delete().where(table.c.trial_id.in_(added)))
        conn.execute(trials.delete().where(trials.c.number >= keep))
    if storage.engine.dialect.name == "postgresql":  # else the dead rows slow every later cell
        with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    storage.engine.dispose()


def _median_of_repeats(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: the median of its repeats for every number, plus the trials/s range."""
    by_cell: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in runs:
        by_cell.setdefault((r["backend"], r["size"], r["workers"], r["mode"]), []).append(r)
    rows = []
    for repeats in by_cell.values():
        died = [r for r in repeats if "died" in r]
        if died:
            rows.append(died[0])
            continue
        row = dict(repeats[0])
        for key, value in row.items():
            if key in ("trials", "errors"):  # every repeat's count
                row[key] = sum(r[key] for r in repeats)
            elif isinstance(value, int | float) and key not in ("workers", "size", "repeat"):
                row[key] = _common.percentile([r[key] for r in repeats], 50)
        rates = [r["trials_per_s"] for r in repeats]
        row.update(repeats=len(repeats), trials_per_s_min=min(rates), trials_per_s_max=max(rates))
        rows.append(row)
    return rows


def _existing(url: str) -> int:
    import optuna

    from hpsearch.storage import get_storage

    storage = get_storage(url, heartbeat=False)
    n = len(optuna.load_study(study_name="bench", storage=storage).get_trials(deepcopy=False))
    storage.engine.dispose()
    return n


def run_backend(
    backend: str,
    sizes: list[int],
    worker_counts: list[int],
    trials: int,
    repeats: int = 1,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    """All cells of one backend, each ``repeats`` times: ``{"rows": [medians], "runs": [every
    cell]}``, or ``{"skipped": reason}``."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-storage-") as tmp:
        try:
            db = _Database(backend, Path(tmp)).__enter__()
        except Exception as e:  # noqa: BLE001 - any connection problem means "skip"
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"[storage] {backend}: skipped ({reason})", file=sys.stderr)
            return {"skipped": reason}
        try:
            for size in sizes:
                t0 = time.perf_counter()
                _prefill(db.url, max(0, size - _existing(db.url)), seed=size)
                fill_s = time.perf_counter() - t0
                existing = _existing(db.url)
                for repeat, workers, mode in (
                    (r, w, m) for r in range(repeats) for w in worker_counts for m in modes
                ):
                    row = _run_cell(mode, db.url, workers, max(trials, workers), backend=backend)
                    _trim(db.url, existing)
                    row.update(
                        backend=backend,
                        size=size,
                        existing_trials=existing,
                        prefill_s=fill_s,
                        repeat=repeat,
                    )
                    runs.append(row)
                    if "died" not in row:
                        print(
                            f"[storage] {backend:10s} trials={existing:6d} workers={workers:3d} "
                            f"repeat={repeat + 1}/{repeats} "
                            f"{mode:8s} {row['trials_per_s']:6.1f} trials/s "
                            f"p50={row['p50_ms']:.0f} ms p99={row['p99_ms']:.0f} ms "
                            f"load={row['load_s_median']:.1f} s errors={row['errors']} "
                            f"cpu/trial client={row['client_cpu_ms']:.0f} ms "
                            f"server={row['server_cpu_ms']:.0f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            db.__exit__()
    return {"rows": _median_of_repeats(runs), "runs": runs}


def run_connection_limit(workers: int, trials_each: int) -> dict[str, Any]:
    """``workers`` processes against PostgreSQL (max_connections 100), plain vs hpsearch."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_ADMIN, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            limit = int(conn.execute(sa.text("SHOW max_connections")).scalar() or 0)
        engine.dispose()
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"PostgreSQL not reachable: {str(e).splitlines()[0][:160]}"}
    rows = []
    for mode in MODES:
        with _Database("postgresql", Path(tempfile.gettempdir())) as db:
            env = {"HPSEARCH_DB_POOL": "0"} if mode == "hpsearch" else {}
            row = _run_cell(mode, db.url, workers, workers * trials_each, env, "postgresql")
            row["max_connections"] = limit
            rows.append(row)
            if "died" in row:
                continue
            print(
                f"[storage] {workers} workers vs max_connections={limit}: {mode:8s} "
                f"{row['trials']} trials, {row['errors']} errors "
                f"{row['error_examples'][:1]} {row['trials_per_s']:.1f} trials/s",
                file=sys.stderr,
                flush=True,
            )
    return {"rows": rows, "max_connections": limit}


def _num(row: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
    return "killed" if "died" in row else fmt.format(row[key])


def _rate(row: dict[str, Any]) -> str:
    """Trials/s: the median, and the range when the cell ran more than once."""
    if "died" in row:
        return "killed"
    if row.get("repeats", 1) < 2:
        return f"{row['trials_per_s']:.1f}"
    return (
        f"{row['trials_per_s']:.1f} ({row['trials_per_s_min']:.1f}–{row['trials_per_s_max']:.1f})"
    )


def _scaling_table(cells: dict[tuple[str, int, int], dict[str, dict[str, Any]]]) -> str:
    """Trials/s from the fewest to the most workers (above 1) per backend and size, per mode."""
    counts = sorted({w for _, _, w in cells if w > 1})
    if len(counts) < 2:
        return ""
    low, high = counts[0], counts[-1]
    rows = []
    modes = [m for m in ALL_MODES if any(m in by_mode for by_mode in cells.values())]
    for backend, size in dict.fromkeys((b, s) for b, s, _ in cells):
        line: list[Any] = [backend, f"{size:,}"]
        for mode in modes:
            a = cells.get((backend, size, low), {}).get(mode)
            b = cells.get((backend, size, high), {}).get(mode)
            if not a or not b or "died" in a or "died" in b:
                line += ["–", "–"]
                continue
            change = 100 * (b["trials_per_s"] / a["trials_per_s"] - 1)
            line += [f"{_rate(a)} → {_rate(b)}", f"{change:+.0f} %"]
        rows.append(line)
    md = (
        f"\n### From {low} to {high} workers\n\nMedian trials/s (range over the repeats) at "
        f"{low} and at {high} workers, and the change of the median"
    )
    if "separate" in modes:
        md += (
            ". *hpsearch, a study per worker*: the same worker path, but every worker has a "
            "study of its own in the same database (empty at the start), so nothing is "
            "shared but the server and the cores: its change is what this machine does to "
            "any worker that talks to the database, the floor for a shared study"
        )
    md += ".\n\n"
    headers = ["backend", "existing trials"]
    for mode in modes:
        headers += [f"{_MODE_NAMES[mode]} {low} → {high}", f"{_MODE_NAMES[mode]} change"]
    return md + _common.table(headers, rows)


_MODE_NAMES = {
    "plain": "plain",
    "hpsearch": "hpsearch",
    "grpc": "gRPC proxy",
    "separate": "hpsearch, a study per worker",
}


def _grpc_table(cells: dict[tuple[str, int, int], dict[str, dict[str, Any]]]) -> str:
    """Plain Optuna through Optuna's gRPC proxy, next to plain Optuna and hpsearch."""
    rows = []
    for (backend, size, workers), by_mode in cells.items():
        proxied, plain, ours = by_mode.get("grpc"), by_mode.get("plain"), by_mode.get("hpsearch")
        if not proxied or not plain or not ours:
            continue
        died = any("died" in r for r in (proxied, plain, ours))
        rows.append(
            (
                backend,
                f"{size:,}",
                workers,
                _rate(proxied),
                "–" if died else f"{proxied['trials_per_s'] / plain['trials_per_s']:.2f}",
                "–" if died else f"{ours['trials_per_s'] / proxied['trials_per_s']:.2f}",
                _num(proxied, "p50_ms") + " / " + _num(proxied, "p99_ms"),
                "–"
                if "died" in proxied
                else f"{proxied['client_cpu_ms']:.0f} + {proxied['proxy_cpu_ms']:.0f} + "
                f"{proxied['server_cpu_ms']:.0f}",
                _num(proxied, "load_s_median", "{:.1f}"),
                _num(proxied, "errors", "{}"),
            )
        )
    if not rows:
        return ""
    md = (
        "\n### Optuna's gRPC storage proxy\n\n*gRPC proxy* = plain Optuna's workers "
        "(`study.optimize`, no heartbeats) connected to one `run_grpc_proxy_server` process "
        "(Optuna's cached RDBStorage on the same database), as one proxy per node would "
        "serve that node's workers; started per cell, its CPU counted separately.\n\n"
    )
    return md + _common.table(
        [
            "backend",
            "existing trials",
            "workers",
            "gRPC proxy trials/s",
            "÷ plain",
            "hpsearch ÷ gRPC proxy",
            "p50/p99 ms",
            "CPU ms/trial workers + proxy + database",
            "load s",
            "errors",
        ],
        rows,
    )


def _sql(row: dict[str, Any]) -> str:
    """SQL statements plus commits per trial (all of a worker's threads), if counted."""
    value = row.get("sql_per_trial")
    return "–" if value is None or "died" in row else f"{value:.0f}"


def _cpu(row: dict[str, Any]) -> str:
    if "client_cpu_ms" not in row:
        return "–"
    server = f"{row['server_cpu_ms']:.0f}" if row["backend"] != "sqlite" else "(in client)"
    return f"{row['client_cpu_ms']:.0f} + {server}"


def _markdown(
    meta: dict[str, Any],
    results: dict[str, Any],
    limit: dict[str, Any],
    title: str = "storage: many workers on one study database",
) -> str:
    md = _common.header(title, meta)
    md += (
        f"\nOne trial = 12 sampled parameters, 9 user attributes, {EPOCHS} reports with a "
        "pruning check each, then the result; RandomSampler; no training. *plain* = Optuna "
        "defaults (`storage=URL`, `study.optimize`); *hpsearch* = hpsearch's worker loop on "
        "`hpsearch.storage.get_storage` (heartbeats, one connection per process, retries, one "
        "commit for a trial's parameters and attributes). Same trials, same run, forked "
        "worker processes. *load s*: a worker's start (load the study, read every existing "
        "trial into Optuna's cache, one warm-up trial), median over workers. Latency and "
        "trials/s after all workers are warm. 2 cores: beyond 2 workers the machine is "
        "CPU-bound, so trials/s measures the CPU cost per trial of client and server "
        "together. *CPU ms/trial*: the worker processes' CPU time (all threads) and the "
        "database server's (its processes in /proc), per trial; on a cluster the workers "
        "run on their own nodes and only the server's share is shared. *SQL statements + "
        "commits per trial*: what the workers sent through SQLAlchemy, heartbeats included "
        "(psycopg2 also sends a BEGIN per transaction). Every cell starts "
        "from the same study (the trials a cell adds are deleted after it)"
    )
    repeats = meta.get("repeats", 1)
    if repeats > 1:
        md += (
            f"; each cell ran {repeats} times, interleaved, and the tables show the median "
            "(trials/s: with the range)"
        )
    md += ".\n\n"
    rows = [r for res in results.values() for r in res.get("rows", [])]
    cells: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["backend"], r["size"], r["workers"]), {})[r["mode"]] = r
    table_rows = []
    notes: list[str] = []
    for (backend, size, workers), by_mode in cells.items():
        plain, ours = by_mode.get("plain"), by_mode.get("hpsearch")
        if not plain or not ours:
            continue
        died = [f"{m} ({r['died']})" for m, r in by_mode.items() if "died" in r]
        if died:
            notes.append(f"{backend}, {size:,} trials, {workers} workers: " + "; ".join(died))
        table_rows.append(
            (
                backend,
                f"{size:,}",
                workers,
                _rate(plain),
                _rate(ours),
                "–" if died else f"**{ours['trials_per_s'] / plain['trials_per_s']:.2f}**",
                _num(plain, "p50_ms") + " / " + _num(plain, "p99_ms"),
                _num(ours, "p50_ms") + " / " + _num(ours, "p99_ms"),
                _cpu(plain),
                _cpu(ours),
                _num(plain, "load_s_median", "{:.1f}")
                + " / "
                + _num(ours, "load_s_median", "{:.1f}"),
                _num(plain, "errors", "{}") + " / " + _num(ours, "errors", "{}"),
                _sql(plain) + " / " + _sql(ours),
            )
        )
    md += _common.table(
        [
            "backend",
            "existing trials",
            "workers",
            "plain trials/s",
            "hpsearch trials/s",
            "ratio",
            "plain p50/p99 ms",
            "hpsearch p50/p99 ms",
            "plain CPU ms/trial client + server",
            "hpsearch CPU ms/trial client + server",
            "load s plain/hpsearch",
            "errors plain/hpsearch",
            "SQL statements + commits per trial plain/hpsearch",
        ],
        table_rows,
    )
    md += _scaling_table(cells)
    md += _grpc_table(cells)
    for note in notes:
        md += f"\nKilled: {note}.\n"
    for name, res in results.items():
        if "skipped" in res:
            md += f"\n{name}: skipped ({res['skipped']}).\n"
    if "rows" in limit:
        md += (
            f"\n### {limit['rows'][0]['workers']} workers, PostgreSQL with max_connections = "
            f"{limit['max_connections']}\n\n"
        )
        md += _common.table(
            ["mode", "trials done", "failed operations", "first error", "trials/s"],
            [
                (
                    r["mode"] + (" (HPSEARCH_DB_POOL=0)" if r["mode"] == "hpsearch" else ""),
                    r["trials"],
                    r["errors"],
                    (r["error_examples"] or ["–"])[0][:90],
                    f"{r['trials_per_s']:.1f}",
                )
                for r in limit["rows"]
            ],
        )
    elif limit:
        md += f"\nConnection-limit part: skipped ({limit.get('skipped')}).\n"
    return md


_TITLES = {
    "storage": "storage: many workers on one study database",
    "storage_levers": "storage levers: Optuna's gRPC proxy, a study per worker",
    "storage_20k": "storage: a 20,000-trial study",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ≈ 2 minutes")
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql,mariadb",
        help="comma-separated subset of sqlite,postgresql,mariadb",
    )
    parser.add_argument("--sizes", help="existing trial counts on PostgreSQL, e.g. 1000,5000")
    parser.add_argument(
        "--other-sizes",
        help="existing trial counts on SQLite and MariaDB (default 1000: the full grid of "
        "sizes on every backend takes over an hour on 2 cores)",
    )
    parser.add_argument("--workers", help="concurrent worker processes, e.g. 1,8,32")
    parser.add_argument("--trials", type=int, help="trials per cell (all workers together)")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated subset of plain,hpsearch,grpc,separate (grpc: plain Optuna "
        "through Optuna's gRPC storage proxy; separate: hpsearch's worker path, a study per "
        "worker, the floor; both are shown next to plain and hpsearch)",
    )
    parser.add_argument(
        "--name",
        default="storage",
        help="results file name in benchmarks/results/ (default storage; storage_levers for "
        "the run with --modes plain,hpsearch,grpc,separate)",
    )
    parser.add_argument(
        "--repeats", type=int, help="runs of every cell, interleaved (default: 3; --quick: 1)"
    )
    parser.add_argument(
        "--limit-workers", type=int, help="workers for the connection-limit part (0: skip)"
    )
    args = parser.parse_args(argv)
    other_sizes = [
        int(x) for x in (args.other_sizes or ("300" if args.quick else "1000")).split(",")
    ]
    sizes = [
        int(x) for x in (args.sizes or ("300" if args.quick else "1000,5000,20000")).split(",")
    ]
    worker_counts = [
        int(x) for x in (args.workers or ("1,8" if args.quick else "1,8,32")).split(",")
    ]
    trials = args.trials or (40 if args.quick else 160)
    repeats = args.repeats or (1 if args.quick else 3)
    modes = tuple(args.modes.split(","))
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {','.join(ALL_MODES)}")
    limit_workers = (
        args.limit_workers if args.limit_workers is not None else (0 if args.quick else 200)
    )

    warnings.filterwarnings("ignore")
    import optuna

    import hpsearch.space  # noqa: F401 - imported once, before the workers fork

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    results = {
        b: run_backend(
            b, sizes if b == "postgresql" else other_sizes, worker_counts, trials, repeats, modes
        )
        for b in args.backends.split(",")
    }
    limit = run_connection_limit(limit_workers, 2) if limit_workers else {}
    meta = _common.meta(
        time.perf_counter() - started,
        mode="quick" if args.quick else "full",
        trials_per_cell=trials,
        repeats=repeats,
        modes=list(modes),
        sampler="RandomSampler",
    )
    _common.write_results(
        f"{args.name}_quick" if args.quick else args.name,
        _markdown(meta, results, limit, _TITLES.get(args.name, f"storage: {args.name}")),
        {"meta": meta, "results": results, "connection_limit": limit},
    )
    rows = results.get("postgresql", {}).get("rows", [])
    top = [r for r in rows if r["workers"] == max(worker_counts)]
    top = [r for r in top if r["size"] == max(sizes) and "died" not in r]
    by_mode = {r["mode"]: r for r in top}
    if len(by_mode) < 2:
        _common.result_line("storage_pg_ratio", "nan")
        return 1
    ratio = by_mode["hpsearch"]["trials_per_s"] / max(by_mode["plain"]["trials_per_s"], 1e-9)
    _common.result_line(f"storage_pg_ratio_{max(worker_counts)}", f"{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
