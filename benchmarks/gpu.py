"""GPU throughput: epoch time of the workshop CNN per backend, and trials/hour per workers/GPU.

1. Epoch time of ``hpsearch.model.WORKSHOP_CNN`` (Conv32-Conv64-MaxPool-Dropout-Dense128-Dropout)
   on the full Fashion-MNIST training split, batch 32/128/256, on the TensorFlow and the JAX
   backend (each in its own process; a backend that sees no GPU is reported as skipped).
   One warm-up epoch, then the median of the timed epochs.
2. Trials per hour of the small-CNN study ``studies/fashion_mnist_quick.toml`` with 1, 2 and 4
   ``hpsearch worker`` processes sharing the one GPU (``hpsearch.local.run_local``, memory
   growth on), each worker starting no new trial after the time limit.

Without an NVIDIA GPU (``nvidia-smi -L`` lists none) it prints why, writes nothing, prints
``RESULT gpu=skipped`` and exits 0.

    .venv/bin/python benchmarks/gpu.py --quick    # ≈ 4 min on a GPU
    .venv/bin/python benchmarks/gpu.py            # full: ≈ 18 min on a GPU (7.5 min on an
                                                  # H100 with --limit-s 120)

The last line is ``RESULT gpu_trials_per_hour_best=<value>`` or ``RESULT gpu=skipped``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import tomllib

STUDY_FILE = _common.REPO_ROOT / "studies" / "fashion_mnist_quick.toml"


def epoch_child(batch_sizes: list[int], timed_epochs: int) -> dict[str, Any]:
    """Runs under one KERAS_BACKEND: median epoch seconds of the workshop CNN per batch size."""
    import keras

    from hpsearch.data import load_splits
    from hpsearch.model import WORKSHOP_CNN, build_model, compile_model
    from hpsearch.spec import DataSpec

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform == "gpu"]
    else:
        import tensorflow as tf

        devices = tf.config.list_physical_devices("GPU")
    if not devices:
        return {"backend": backend, "skipped": f"{backend} sees no GPU"}
    splits = load_splits(DataSpec(dataset="fashion_mnist", val_fraction=0.1, split_seed=0))
    rows = []
    for batch_size in batch_sizes:
        times: list[float] = []

        class Timer(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter() - self.t0)

        keras.utils.set_random_seed(0)
        model = build_model(WORKSHOP_CNN.model, splits.input_shape, splits.n_classes, 0)
        compile_model(model, WORKSHOP_CNN.train)
        model.fit(
            splits.x_train,
            splits.y_train,
            batch_size=batch_size,
            epochs=1 + timed_epochs,
            validation_data=(splits.x_val, splits.y_val),
            callbacks=[Timer()],
            verbose=0,
        )
        rows.append(
            {
                "batch_size": batch_size,
                "epoch_s": statistics.median(times[1:]),
                "first_epoch_s": times[0],
                "n_train": len(splits.x_train),
            }
        )
    return {"backend": backend, "device": str(devices[0]), "rows": rows}


def epoch_times(backend: str, batch_sizes: list[int], timed_epochs: int) -> dict[str, Any]:
    if importlib.util.find_spec(backend) is None:
        return {"backend": backend, "skipped": "not installed here (not measured)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        cmd = [sys.executable, __file__, "--epoch-child", str(out)]
        cmd += ["--batch-sizes", ",".join(map(str, batch_sizes))]
        cmd += ["--timed-epochs", str(timed_epochs)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0 or not out.exists():
            return {"backend": backend, "skipped": f"failed: {proc.stderr.strip()[-300:]}"}
        return dict(json.loads(out.read_text()))


def trials_per_hour(workers: int, limit_s: float, tmp: Path) -> dict[str, Any]:
    """Run ``workers`` local workers on one GPU for ``limit_s``; finished trials per hour."""
    import tomli_w
    from rich.console import Console

    from hpsearch.local import run_local
    from hpsearch.spec import spec_from_dict
    from hpsearch.study import budget_state, launch_study, load_study

    raw = tomllib.loads(STUDY_FILE.read_text(encoding="utf-8"))
    raw["name"] = f"gpu_workers_{workers}"
    raw["budget"].update(n_trials=100000, timeout_s=limit_s)
    url = f"sqlite:///{tmp / 'gpu.db'}"
    launch_study(spec_from_dict(raw), tomli_w.dumps(raw), url)
    t0 = time.perf_counter()
    result = run_local(raw["name"], url, workers, console=Console(stderr=True))
    wall = time.perf_counter() - t0
    study, spec = load_study(raw["name"], url, heartbeat=False)
    state = budget_state(study, spec)
    return {
        "workers": workers,
        "finished_trials": state.finished,
        "failed_trials": state.failed,
        "wall_s": wall,
        "trials_per_hour": state.finished / wall * 3600,
        "exit_codes": result.exit_codes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ≈ 4 min on a GPU")
    parser.add_argument("--epoch-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", help="e.g. 32,128,256")
    parser.add_argument("--timed-epochs", type=int, help="timed epochs after one warm-up")
    parser.add_argument("--workers", help="workers per GPU, e.g. 1,2,4")
    parser.add_argument("--limit-s", type=float, help="seconds per worker-count run")
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the results' header (repeatable)"
    )
    args = parser.parse_args(argv)
    batch_sizes = [
        int(b) for b in (args.batch_sizes or ("128" if args.quick else "32,128,256")).split(",")
    ]
    timed_epochs = args.timed_epochs or (1 if args.quick else 3)
    if args.epoch_child:
        args.epoch_child.write_text(json.dumps(epoch_child(batch_sizes, timed_epochs)))
        return 0

    gpus = _common.gpus()
    if not gpus:
        print(
            "gpu: skipped: no NVIDIA GPU on this machine (`nvidia-smi -L` lists none); "
            "run it on a GPU node. Nothing was measured or written.",
            file=sys.stderr,
        )
        _common.result_line("gpu", "skipped")
        return 0
    workers = [int(w) for w in (args.workers or ("1,2" if args.quick else "1,2,4")).split(",")]
    limit_s = args.limit_s or (60.0 if args.quick else 300.0)
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # workers share the GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    reduced = []
    if not args.quick:
        full = {
            "batch sizes": "32,128,256",
            "timed epochs": 3,
            "workers": "1,2,4",
            "limit per worker count": "300 s",
        }
        used = {
            "batch sizes": ",".join(map(str, batch_sizes)),
            "timed epochs": timed_epochs,
            "workers": ",".join(map(str, workers)),
            "limit per worker count": f"{limit_s:g} s",
        }
        reduced = [f"{k} {used[k]} instead of {v}" for k, v in full.items() if used[k] != v]

    started = time.perf_counter()
    epochs = [epoch_times(b, batch_sizes, timed_epochs) for b in ("tensorflow", "jax")]
    with tempfile.TemporaryDirectory(prefix="hpsearch-gpu-") as tmp:
        os.environ["HPSEARCH_RUNS_DIR"] = tmp
        throughput = [trials_per_hour(w, limit_s, Path(tmp)) for w in workers]

    meta = _common.meta(
        time.perf_counter() - started,
        mode="quick" if args.quick else "full",
        gpu=gpus[0],
        batch_sizes=batch_sizes,
        timed_epochs=timed_epochs,
        limit_s=limit_s,
        reduced=reduced,
        notes=args.note,
    )
    title = f"gpu: throughput on {gpus[0]} (GPU results"
    title += f"; reduced full mode: {', '.join(reduced)})" if reduced else ")"
    md = _common.header(title, meta)
    md += (
        "\nEpoch time of the workshop CNN (1,199,882 parameters) on 54,000 Fashion-MNIST "
        f"training images + 6,000 validation images, median of {timed_epochs} timed epoch(s) "
        "after a warm-up epoch:\n\n"
    )
    rows = []
    for e in epochs:
        if "skipped" in e:
            rows.append((e["backend"], "–", f"skipped: {e['skipped']}", "–"))
            continue
        for r in e["rows"]:
            rows.append(
                (e["backend"], r["batch_size"], f"{r['epoch_s']:.2f}", f"{r['first_epoch_s']:.2f}")
            )
    md += _common.table(["backend", "batch", "epoch s", "first epoch s (compile)"], rows)
    md += (
        f"\nTrials per hour of `studies/fashion_mnist_quick.toml` (small CNNs, 12,000 images, "
        f"≤ 6 epochs, Hyperband pruning) with N workers on the one GPU; workers start no new "
        f"trial after {limit_s:.0f} s, trials finished = complete + pruned; Keras backend "
        f"{os.environ.get('KERAS_BACKEND') or 'tensorflow (the default)'}:\n\n"
    )
    md += _common.table(
        ["workers per GPU", "finished trials", "failed", "wall s", "trials per hour"],
        [
            (
                t["workers"],
                t["finished_trials"],
                t["failed_trials"],
                f"{t['wall_s']:.0f}",
                f"{t['trials_per_hour']:.0f}",
            )
            for t in throughput
        ],
    )
    _common.write_results(
        "gpu_quick" if args.quick else "gpu",
        md,
        {"meta": meta, "epoch_times": epochs, "trials_per_hour": throughput},
    )
    best = max(throughput, key=lambda t: t["trials_per_hour"])
    _common.result_line("gpu_trials_per_hour_best", f"{best['trials_per_hour']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
