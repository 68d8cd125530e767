"""Leaderboard latency on a 20,000-trial study (issue 5: "answers in under 1 s").

Generates a study with N trials directly in optuna's RDB tables (one bulk ``executemany`` per
table, after ``optuna.create_study`` made the schema), with what hpsearch workers write: value,
parameters, per-epoch validation accuracy and the ``hpsearch:*`` user attributes; a realistic
mix of complete, pruned, failed (by cause) and running trials spread over Slurm array jobs.
Then it starts the real ``hpsearch dashboard`` server in a thread and times full HTTP GETs of
``/api/leaderboard`` (ranking + JSON of every row), the page and the plot.

    .venv/bin/python benchmarks/dashboard.py --quick        # 20,000 trials, 7 timed requests
    .venv/bin/python benchmarks/dashboard.py --repeats 25   # more requests

The last line is ``RESULT leaderboard_p50_ms=<value>``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
import urllib.request
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy as sa

from hpsearch.dashboard import make_dashboard_server
from hpsearch.storage import get_storage

CAUSES = ("preempted", "oom", "nan", "timeout", "exception")
DISTS = {
    "conv.n_blocks": optuna.distributions.IntDistribution(1, 4),
    "conv.filters_base": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "conv.dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    "conv.batch_norm": optuna.distributions.CategoricalDistribution([False, True]),
    "dense.units": optuna.distributions.CategoricalDistribution([64, 128, 256]),
    "optimizer.name": optuna.distributions.CategoricalDistribution(["adam", "sgd", "adamw"]),
    "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "training.batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128]),
}


def generate(url: str, n_trials: int, max_epochs: int, seed: int = 0) -> float:
    """Create study ``bench`` with ``n_trials`` trials at ``url``; returns seconds taken."""
    started = time.perf_counter()
    rng = random.Random(seed)
    storage = get_storage(url, heartbeat=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name="bench", storage=storage, direction="maximize")
    study.set_user_attr("hpsearch:dataset", "fashion_mnist")
    study.set_user_attr("hpsearch:spec_toml", 'name = "bench"\n')
    dist_json = {k: optuna.distributions.distribution_to_json(d) for k, d in DISTS.items()}
    trials, values, params, attrs, steps = [], [], [], [], []
    t0 = datetime(2025, 1, 1)
    with storage.engine.connect() as conn:
        base = conn.execute(sa.text("SELECT COALESCE(MAX(trial_id), 0) FROM trials")).scalar()
    for number in range(n_trials):
        tid = int(base) + number + 1
        r = rng.random()
        state = (
            "COMPLETE" if r < 0.6 else "PRUNED" if r < 0.9 else "FAIL" if r < 0.97 else "RUNNING"
        )
        start = t0 + timedelta(seconds=number * 9)
        epochs = max_epochs if state == "COMPLETE" else rng.randint(1, max_epochs - 1)
        end = None if state == "RUNNING" else start + timedelta(seconds=60 * epochs)
        trials.append(
            {"i": tid, "n": number, "s": study._study_id, "st": state, "a": start, "b": end}
        )
        ext = {
            k: (d.choices[rng.randrange(len(d.choices))] if hasattr(d, "choices") else None)
            for k, d in DISTS.items()
        }
        ext["conv.n_blocks"] = rng.randint(1, 4)
        ext["conv.dropout"] = rng.uniform(0.0, 0.5)
        ext["optimizer.lr"] = 10 ** rng.uniform(-4, -1)
        for k, v in ext.items():
            params.append({"t": tid, "k": k, "v": DISTS[k].to_internal_repr(v), "d": dist_json[k]})
        quality = rng.betavariate(8, 1.5) * 0.95
        acc = 0.0
        for step in range(1, epochs + 1):
            acc = quality * (1 - 0.5**step) + rng.gauss(0, 0.003)
            steps.append({"t": tid, "k": step, "v": acc})
        user = {
            "hpsearch:config": f"conv {ext['conv.filters_base']}x{ext['conv.n_blocks']} | dense "
            f"{ext['dense.units']} | {ext['optimizer.name']} lr={ext['optimizer.lr']:.3g} "
            f"bs={ext['training.batch_size']}",
            "hpsearch:seed": number,
            "hpsearch:n_params": rng.randint(20_000, 2_000_000),
            "hpsearch:epochs": epochs,
            "hpsearch:wall_time_s": 60.0 * epochs,
            "hpsearch:slurm_job_id": str(4000 + number // 500),
            "hpsearch:slurm_array_task_id": number % 500,
            "hpsearch:gpu": "0",
            "hpsearch:host": f"gpu{number % 16:02d}",
        }
        if state == "COMPLETE":
            values.append({"t": tid, "v": acc})
            user["hpsearch:test_accuracy"] = acc - 0.004 + rng.gauss(0, 0.003)
        if state == "FAIL":
            user["hpsearch:fail_reason"] = CAUSES[rng.randrange(len(CAUSES))]
        if state == "RUNNING":
            del user["hpsearch:epochs"], user["hpsearch:wall_time_s"]
        attrs += [{"t": tid, "k": k, "v": json.dumps(v)} for k, v in user.items()]
    with storage.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, "
                "datetime_complete) VALUES (:i, :n, :s, :st, :a, :b)"
            ),
            trials,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) "
                "VALUES (:t, 0, :v, 'FINITE')"
            ),
            values,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) "
                "VALUES (:t, :k, :v, :d)"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
                "intermediate_value_type) VALUES (:t, :k, :v, 'FINITE')"
            ),
            steps,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:t, :k, :v)"
            ),
            attrs,
        )
    storage.engine.dispose()
    return time.perf_counter() - started


def _get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
    return (time.perf_counter() - started) * 1000.0, len(body)


def main() -> None:
    """Generate the study, time the endpoints, print a markdown table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="7 timed requests (under 5 min)")
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of a complete trial")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--storage", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    repeats = 7 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{Path(tmp) / 'bench.db'}"
        gen_s = generate(url, args.trials, args.epochs)
        print(f"generated {args.trials} trials in {gen_s:.1f} s at {url}")
        # No response cache: every request below ranks and serializes all trials again. The
        # server's LeaderboardRowCache (finished trials are read once) stays on, as in a live
        # dashboard.
        server, _ = make_dashboard_server(
            url, host="127.0.0.1", port=0, write_notes=False, response_cache_s=0.0
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        root = f"http://127.0.0.1:{server.server_port}"
        try:
            cold_ms, cold_size = _get(root + "/api/leaderboard")  # first request: reads all
            rows = [("GET /api/leaderboard, first request (cold cache)", cold_ms, cold_ms,
                     cold_ms, cold_size)]  # fmt: skip
            for name, path in (
                ("GET /api/leaderboard (all rows + baselines, JSON)", "/api/leaderboard"),
                ("GET /api/leaderboard?state=complete", "/api/leaderboard?state=complete"),
                (
                    "GET /api/leaderboard?params=1 (with Optuna params)",
                    "/api/leaderboard?params=1",
                ),
                ("GET /leaderboard/plot.svg", "/leaderboard/plot.svg?x=trial"),
                ("GET /leaderboard (page)", "/leaderboard"),
            ):
                times, size = [], 0
                for _ in range(repeats):
                    ms, size = _get(root + path)
                    times.append(ms)
                times.sort()
                rows.append(
                    (name, statistics.median(times), times[int(0.9 * (len(times) - 1))],
                     times[-1], size)
                )  # fmt: skip
            with urllib.request.urlopen(root + "/api/leaderboard", timeout=60) as resp:
                board = json.load(resp)
            kinds = [r["kind"] for r in board["rows"]]
            assert kinds.count("trial") == args.trials, kinds.count("trial")
        finally:
            server.shutdown()
            server.server_close()
    print(f"\n{args.trials} trials, {repeats} requests each, {kinds.count('baseline')} baselines")
    print("| request | p50 ms | p90 ms | max ms | bytes |")
    print("|---|---|---|---|---|")
    for name, p50, p90, worst, size in rows:
        print(f"| {name} | {p50:.0f} | {p90:.0f} | {worst:.0f} | {size:,} |")
    print(f"RESULT leaderboard_p50_ms={rows[1][1]:.0f}")


if __name__ == "__main__":
    main()
