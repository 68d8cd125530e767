"""Search quality at equal wall-clock budget: hpsearch vs KerasTuner, plain Optuna and random.

Every method gets the same Fashion-MNIST split (``hpsearch.data.load_splits`` of one
``DataSpec``), the same search space (that of ``studies/fashion_mnist_quick.toml``, translated by
hand into KerasTuner's ``hp`` and into a plain Optuna objective; the translation is checked
against hpsearch's own sampling before every run), the same model code
(``hpsearch.model.build_model``), the same epoch cap, the same CPU thread count and the same
wall-clock budget. Methods run one at a time, each in a fresh process, in an order that rotates
with the seed; the clock starts after imports and data loading, and at the budget the process
stops itself (SIGTERM: hpsearch re-queues its trial in flight, the others just stop).

- ``hpsearch``: ``run_worker`` with the study file's defaults (warm start, multivariate TPE with
  constant liar, Hyperband pruner, checkpoints, test evaluation of every completed trial).
- ``kerastuner``: ``keras_tuner.Hyperband`` (``max_epochs`` = the cap, factor 3).
- ``optuna``: a hand-written Optuna script: ``TPESampler(seed)``, ``HyperbandPruner`` and
  ``optuna_integration.KerasPruningCallback``.
- ``random``: the same script with ``RandomSampler`` and no pruning.

Variants of hpsearch, each compared with every method in a table of its own (``--methods``):

- ``hpsearch_transfer``: the study file plus ``[[warm_start]] from_study`` naming an earlier
  study in the same database, which the script runs once before the seeds (hpsearch on another
  split of the data, another seed, 10 × the budget by default; its time is in no budget).
- ``hpsearch_data``: the study file plus ``[pruner] data_fractions``.
- ``hpsearch_testtop``: the study file plus ``[objective] test_top = 1`` (only a trial that is
  the best so far when it completes pays for a pass over the test set).

``--workers N`` runs N worker processes per method and seed on one shared study in a
PostgreSQL database (``--storage``), started together once all have loaded the data, each with
threads / N CPU threads. KerasTuner runs in its own parallel mode: N workers and a chief
process serving its oracle over gRPC (the chief trains nothing).

A method's result over time is the best final-epoch validation accuracy among the trials that
trained to the end of their schedule (Optuna: COMPLETE; KerasTuner: every finished trial), and
its test accuracy is that of the trial selected on validation (for the baselines the model's
weights are kept in memory and tested after the budget, so only hpsearch pays for test
evaluation inside its budget).

    .venv/bin/python benchmarks/search.py --quick          # 1 seed × 4 methods × 45 s ≈ 4 min
    .venv/bin/python benchmarks/search.py                  # CPU: 10 seeds × 4 × 120 s ≈ 90 min
    .venv/bin/python benchmarks/search.py --setting gpu    # GPU: full data, 3 × 4 × 30 min
    .venv/bin/python benchmarks/search.py --workers 4      # 4 workers per method, PostgreSQL

It ends with ``RESULT search_hpsearch_minus_best_other_val=<difference of mean best val>``,
``RESULT search_gain_vs_optuna=<mean paired best-val difference>`` and
``RESULT search_p_vs_optuna=<its Wilcoxon p>`` (see :func:`paired_tests`), and so does its
results file; with ``--workers N`` the names start ``search_<N>workers_``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
import tomllib

STUDY_FILE = _common.REPO_ROOT / "studies" / "fashion_mnist_quick.toml"
METHODS = ("hpsearch", "kerastuner", "optuna", "random")
EXTRA_METHODS = ("hpsearch_data", "hpsearch_transfer", "hpsearch_testtop")  # --methods: levers
ALL_METHODS = METHODS + EXTRA_METHODS
VARIANTS = ("hpsearch", *EXTRA_METHODS)
"""hpsearch and its variants: each is compared, paired by seed, with every other method."""
PARALLEL_METHODS = ("hpsearch", "kerastuner", "optuna", "random", "hpsearch_transfer")
"""Methods of the ``--workers N`` setting."""
KT_CHIEF = "kerastuner_chief"
"""The ``--child`` that serves KerasTuner's oracle to the workers of a ``--workers`` run."""
DATA_FRACTIONS = [0.125, 0.25, 0.5]
"""``hpsearch_data``: the study file plus ``[pruner] data_fractions`` (training-set fidelity)."""
TEST_TOP = 1
"""``hpsearch_testtop``: the study file plus ``[objective] test_top``."""
EARLIER: dict[str, Any] = {"name": "bench_earlier", "seed": 1000, "split_seed": 1}
"""``hpsearch_transfer``'s earlier study: another split of the same data, another seed."""
TRANSFER_TOP = 5
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"train_subset": 2000, "max_epochs": 3, "budget_s": 45, "seeds": 1, "target": 0.80},
    # The quick data with 10 seeds: small enough for 4 workers sharing 2 cores to finish trials.
    "small": {"train_subset": 2000, "max_epochs": 3, "budget_s": 60, "seeds": 10, "target": 0.80},
    "cpu": {"train_subset": 6000, "max_epochs": 6, "budget_s": 120, "seeds": 10, "target": 0.86},
    "gpu": {"train_subset": None, "max_epochs": 20, "budget_s": 1800, "seeds": 3, "target": 0.92},
}


RESEND_S = 3.0
"""Seconds between repeats of the budget's SIGTERM while a run has not stopped."""


class BudgetExhausted(BaseException):  # noqa: N818 - control flow, like KeyboardInterrupt
    """Raised in the main thread when the wall-clock budget is over."""


# --------------------------------------------------------------------------------------------
# The search space, by hand (what a user writes for Optuna and for KerasTuner)
# --------------------------------------------------------------------------------------------


def optuna_space(trial: Any) -> Any:
    """``fashion_mnist_quick``'s search space written by hand with ``trial.suggest_*``."""
    from hpsearch.model import ModelConfig, TrainConfig, TrialConfig

    n_blocks = trial.suggest_int("conv.n_blocks", 1, 2)
    base = trial.suggest_categorical("conv.filters_base", [16, 32])
    batch_norm = trial.suggest_categorical("conv.batch_norm", [False, True])
    conv_dropout = trial.suggest_float("conv.dropout", 0.0, 0.4)
    units = trial.suggest_categorical("dense.units", [64, 128])
    dense_dropout = trial.suggest_float("dense.dropout", 0.0, 0.5)
    activation = trial.suggest_categorical("activation", ["relu", "gelu"])
    optimizer = trial.suggest_categorical("optimizer.name", ["adam", "sgd", "rmsprop"])
    lr = trial.suggest_float("optimizer.lr", 3e-4, 3e-2, log=True)
    momentum = nesterov = None
    if optimizer == "sgd":
        momentum = trial.suggest_float("optimizer.sgd.momentum", 0.8, 0.95)
        nesterov = trial.suggest_categorical("optimizer.sgd.nesterov", [False, True])
    batch_size = trial.suggest_categorical("training.batch_size", [64, 128])
    return _config(
        ModelConfig,
        TrainConfig,
        TrialConfig,
        n_blocks,
        base,
        batch_norm,
        conv_dropout,
        units,
        dense_dropout,
        activation,
        optimizer,
        lr,
        momentum,
        nesterov,
        batch_size,
    )


def kerastuner_space(hp: Any) -> Any:
    """The same space with KerasTuner's ``hp`` (SGD's parameters in a conditional scope)."""
    from hpsearch.model import ModelConfig, TrainConfig, TrialConfig

    n_blocks = hp.Int("conv.n_blocks", 1, 2)
    base = hp.Choice("conv.filters_base", [16, 32])
    batch_norm = hp.Boolean("conv.batch_norm")
    conv_dropout = hp.Float("conv.dropout", 0.0, 0.4)
    units = hp.Choice("dense.units", [64, 128])
    dense_dropout = hp.Float("dense.dropout", 0.0, 0.5)
    activation = hp.Choice("activation", ["relu", "gelu"])
    optimizer = hp.Choice("optimizer.name", ["adam", "sgd", "rmsprop"])
    lr = hp.Float("optimizer.lr", 3e-4, 3e-2, sampling="log")
    with hp.conditional_scope("optimizer.name", ["sgd"]):
        momentum = hp.Float("optimizer.sgd.momentum", 0.8, 0.95)
        nesterov = hp.Boolean("optimizer.sgd.nesterov")
    if optimizer != "sgd":
        momentum = nesterov = None
    batch_size = hp.Choice("training.batch_size", [64, 128])
    return _config(
        ModelConfig,
        TrainConfig,
        TrialConfig,
        n_blocks,
        base,
        batch_norm,
        conv_dropout,
        units,
        dense_dropout,
        activation,
        optimizer,
        lr,
        momentum,
        nesterov,
        batch_size,
    )


def _config(
    model_cls: Any, train_cls: Any, trial_cls: Any, n_blocks: int, base: int, *rest: Any
) -> Any:
    batch_norm, conv_dropout, units, dense_dropout, activation = rest[:5]
    optimizer, lr, momentum, nesterov, batch_size = rest[5:]
    model = model_cls(
        conv_filters=tuple((int(base) * 2**b,) for b in range(int(n_blocks))),
        kernel_size=3,
        padding="same",
        batch_norm=bool(batch_norm),
        pooling="max",
        conv_dropout=float(conv_dropout),
        dense_units=(int(units),),
        dense_dropout=float(dense_dropout),
        activation=str(activation),
    )
    train = train_cls(
        optimizer=str(optimizer),
        lr=float(lr),
        weight_decay=0.0,
        batch_size=int(batch_size),
        momentum=None if momentum is None else float(momentum),
        nesterov=None if nesterov is None else bool(nesterov),
    )
    return trial_cls(model=model, train=train)


def check_same_space(spec: Any, n: int = 40) -> None:
    """Raise if the hand-written spaces differ from hpsearch's sampling of ``spec``."""
    import keras_tuner as kt
    import optuna

    from hpsearch.space import sample_config

    def normalized(cfg: Any) -> Any:
        # hpsearch fills the fixed sub-parameters (rmsprop rho, adam beta_1) that Keras
        # defaults to anyway; compare what reaches make_optimizer.
        t = cfg.train
        train = {**t.__dict__, "rho": None, "beta_1": None}
        if t.optimizer == "rmsprop" and not t.momentum:
            train["momentum"] = None
        return cfg.model, train

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    hand = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dists: dict[str, Any] = {}
    hand_dists: dict[str, Any] = {}
    for _ in range(n):
        trial = study.ask()
        ours = sample_config(trial, spec.search)
        dists.update(trial.distributions)
        if normalized(optuna_space(optuna.trial.FixedTrial(trial.params))) != normalized(ours):
            raise AssertionError(f"optuna_space differs from hpsearch for {trial.params}")
        hp = kt.HyperParameters()
        for key, value in trial.params.items():
            hp.Fixed(key, value)
        if normalized(kerastuner_space(hp)) != normalized(ours):
            raise AssertionError(f"kerastuner_space differs from hpsearch for {trial.params}")
        other = hand.ask()
        optuna_space(other)
        hand_dists.update(other.distributions)
    if dists != hand_dists:
        raise AssertionError(f"distributions differ: {dists} vs {hand_dists}")


# --------------------------------------------------------------------------------------------
# One method, one seed (runs in a child process)
# --------------------------------------------------------------------------------------------


@dataclass
class _Best:
    """The best selectable model so far (weights kept in memory, tested after the budget)."""

    val: float = -math.inf
    config: Any = None
    weights: Any = None

    def offer(self, val: float, config: Any, model: Any) -> None:
        if val > self.val:
            self.val, self.config, self.weights = val, config, model.get_weights()

    def test_accuracy(self, splits: Any) -> float | None:
        if self.weights is None:
            return None
        from hpsearch.model import build_model, compile_model

        model = build_model(self.config.model, splits.input_shape, splits.n_classes)
        compile_model(model, self.config.train)
        model.set_weights(self.weights)
        return float(model.evaluate(splits.x_test, splits.y_test, batch_size=512, verbose=0)[1])


def _spec_dict(name: str, setting: dict[str, Any], seed: int) -> dict[str, Any]:
    raw = tomllib.loads(STUDY_FILE.read_text(encoding="utf-8"))
    raw["name"] = name
    if setting["train_subset"] is None:
        raw["data"].pop("train_subset", None)
    else:
        raw["data"]["train_subset"] = setting["train_subset"]
    raw["budget"] = {"n_trials": 100000, "max_epochs": setting["max_epochs"]}
    raw["sampler"]["seed"] = seed
    return raw


def run_hpsearch(
    spec_raw: dict[str, Any], splits: Any, clock: _Clock, worker: _Worker
) -> dict[str, Any]:
    """``hpsearch launch`` (worker 0; the others wait for the study), then ``run_worker``."""
    import optuna
    import tomli_w
    from optuna.trial import TrialState

    from hpsearch.spec import spec_from_dict
    from hpsearch.study import launch_study
    from hpsearch.worker import run_worker

    assert worker.storage, "hpsearch runs on a database"
    if worker.index == 0:
        launch_study(spec_from_dict(spec_raw), tomli_w.dumps(spec_raw), worker.storage)
    else:
        _wait_for_study(spec_raw["name"], worker.storage)
    clock.start(worker.ready)
    clock.run(lambda: run_worker(spec_raw["name"], worker.storage, worker_index=worker.index))
    start = datetime.fromtimestamp(clock.start_at)
    study = optuna.load_study(study_name=spec_raw["name"], storage=worker.storage)
    trials = study.get_trials(deepcopy=False)
    events = [
        {
            "t": (t.datetime_complete - start).total_seconds(),
            "val": t.value,
            "test": t.user_attrs.get("hpsearch:test_accuracy"),
            "trial": t.number,
        }
        for t in trials
        if t.state == TrialState.COMPLETE and t.datetime_complete is not None
    ]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    return {"events": sorted(events, key=lambda e: e["t"]), "counts": counts}


def run_optuna(
    splits: Any, max_epochs: int, seed: int, clock: _Clock, random: bool, worker: _Worker
) -> dict[str, Any]:
    """The plain Optuna script a user would write (TPE + Hyperband, or random search).

    With several workers each runs this script on one shared study (the storage's), its
    sampler seeded ``seed + worker`` as hpsearch does, so that they do not sample alike.
    """
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from hpsearch.model import build_model, compile_model

    best, events = _Best(), []

    def objective(trial: optuna.Trial) -> float:
        config = optuna_space(trial)
        keras.utils.set_random_seed(seed + trial.number)
        model = build_model(config.model, splits.input_shape, splits.n_classes)
        compile_model(model, config.train)
        history = model.fit(
            splits.x_train,
            splits.y_train,
            batch_size=config.train.batch_size,
            epochs=max_epochs,
            validation_data=(splits.x_val, splits.y_val),
            callbacks=[] if random else [KerasPruningCallback(trial, "val_accuracy")],
            verbose=0,
        )
        val = float(history.history["val_accuracy"][-1])
        events.append({"t": clock.elapsed(), "val": val, "trial": trial.number})
        best.offer(val, config, model)
        return val

    worker_seed = seed + worker.index
    study = optuna.create_study(
        storage=worker.storage,
        study_name=worker.study,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=worker_seed)
        if random
        else optuna.samplers.TPESampler(seed=worker_seed),
        pruner=optuna.pruners.NopPruner()
        if random
        else optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs),
    )
    clock.start(worker.ready)
    clock.run(lambda: study.optimize(objective))
    return _finish(events, best, splits, study)


def run_kerastuner(
    splits: Any, max_epochs: int, seed: int, clock: _Clock, worker: _Worker, workers: int
) -> dict[str, Any]:
    """``keras_tuner.Hyperband``; with several workers, KerasTuner's own parallel mode.

    There each worker is a KerasTuner "tuner" asking a chief process (:func:`serve_kt_oracle`,
    started by the parent before the workers) for trials over gRPC, as KerasTuner's guide on
    distributed tuning sets it up (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
    ``KERASTUNER_ORACLE_PORT``); they share one project folder, where a promoted trial finds
    its parent's checkpoint.
    """
    best, events = _Best(), []
    # (the workers of a parallel run share the chief's project folder: only the chief clears it)
    tuner = _kerastuner(splits, max_epochs, seed, clock, best, events, overwrite=workers == 1)
    clock.start(worker.ready)
    clock.run(
        lambda: tuner.search(
            splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val), verbose=0
        )
    )
    # several workers share no study to read: each counts the trials it began, merge_workers sums
    trials = len(tuner.oracle.trials) if workers == 1 else tuner.begun
    result = _finish(events, best, splits, None, {"trials": trials, "complete": len(events)})
    return {**result, "counts_own": workers > 1}


def serve_kt_oracle(splits: Any, max_epochs: int, seed: int, ready: Path) -> None:
    """KerasTuner's chief: serves the Hyperband oracle over gRPC until the parent kills it."""
    tuner = _kerastuner(splits, max_epochs, seed, None, _Best(), [], overwrite=True)
    ready.write_text(str(os.getpid()))
    tuner.search()  # on the chief this only serves the oracle


def _kerastuner(
    splits: Any,
    max_epochs: int,
    seed: int,
    clock: _Clock | None,
    best: _Best,
    events: list[dict[str, Any]],
    overwrite: bool,
) -> Any:
    """The Hyperband tuner every KerasTuner process builds (chief and workers alike)."""
    import keras
    import keras_tuner as kt

    from hpsearch.model import build_model, compile_model

    class Model(kt.HyperModel):  # type: ignore[misc]
        def build(self, hp: Any) -> Any:
            config = kerastuner_space(hp)
            model = build_model(config.model, splits.input_shape, splits.n_classes)
            compile_model(model, config.train)
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            assert clock is not None, "the chief trains nothing"
            config = kerastuner_space(hp)
            history = model.fit(*args, batch_size=config.train.batch_size, **kwargs)
            val = float(history.history["val_accuracy"][-1])
            events.append({"t": clock.elapsed(), "val": val, "epochs": kwargs.get("epochs")})
            best.offer(val, config, model)
            return history

    class Hyperband(kt.Hyperband):  # type: ignore[misc]
        begun = 0  # trials this process began

        def _configure_tensorboard_dir(self, *args: Any, **kwargs: Any) -> None:
            """No TensorBoard callback here; skip KerasTuner's import of tensorboard."""

        def on_trial_begin(self, trial: Any) -> None:
            super().on_trial_begin(trial)
            self.begun += 1

    keras.utils.set_random_seed(seed)
    return Hyperband(
        Model(),
        objective="val_accuracy",
        max_epochs=max_epochs,
        factor=3,
        hyperband_iterations=10**6,  # the wall-clock budget stops the search
        seed=seed,
        directory=os.environ["HPSEARCH_RUNS_DIR"],
        project_name="kt",
        overwrite=overwrite,
    )


def _finish(
    events: list[dict[str, Any]],
    best: _Best,
    splits: Any,
    study: Any,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    if study is not None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    test = best.test_accuracy(splits)
    for e in events:
        e["test"] = test if e["val"] == best.val else None
    return {"events": events, "counts": counts or {}}


@dataclass(frozen=True)
class _Worker:
    """Where one worker process of a run keeps its study, and its start-line file."""

    index: int
    storage: str | None  # None: in memory (plain Optuna and random search, one worker)
    study: str
    ready: Path


def _wait_for_study(name: str, storage: str, timeout_s: float = 300) -> None:
    """Block until worker 0 has launched study ``name``."""
    import optuna

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            optuna.load_study(study_name=name, storage=storage)
            return
        except KeyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class _Clock:
    """Wall clock of one run; sends SIGTERM to this process when the budget is over.

    The workers of a run share one start line: each writes its ``ready`` file once its
    imports, data and study are there, and the parent, once all are ready, writes ``go`` next
    to them with the start time. The budget and every event's time count from that time.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start_at = 0.0
        self.terminated = False
        self.t_end: float | None = None
        self._done = threading.Event()

    def start(self, ready: Path) -> None:
        ready.write_text(str(os.getpid()))
        go = ready.parent / "go"
        while not go.exists():
            time.sleep(0.05)
        self.start_at = float(go.read_text())
        time.sleep(max(0.0, self.start_at - time.time()))
        left = self.budget_s - self.elapsed()
        threading.Thread(target=self._terminate_at_budget, args=(left,), daemon=True).start()

    def _terminate_at_budget(self, left: float) -> None:
        """SIGTERM at the budget, again every few seconds until :meth:`run` has returned.

        Python drops an exception raised while it runs a finalizer or a weakref callback
        ("Exception ignored in ..."); a single signal landing there left a plain-Optuna worker
        training on for 15 minutes. hpsearch's own workers remember the signal instead
        (``hpsearch.preemption``) and ignore the repeats.
        """
        if self._done.wait(max(left, 0.0)):
            return
        while True:
            os.kill(os.getpid(), signal.SIGTERM)
            if self._done.wait(RESEND_S):
                return

    def elapsed(self) -> float:
        return time.time() - self.start_at

    def on_term(self, signum: int, frame: Any) -> None:
        """SIGTERM handler: the budget is over (a repeat once the search has stopped: ignored)."""
        self.terminated = True
        if not self._done.is_set():
            raise BudgetExhausted()

    @property
    def expired(self) -> bool:
        return self.terminated or (self.start_at > 0 and self.elapsed() >= self.budget_s - 0.5)

    def run(self, search: Callable[[], Any]) -> None:
        """Run ``search`` until the budget ends it, then stop the clock.

        The budget's signal can land while TensorFlow runs native code, where the exception it
        raises surfaces as another one (a ``SystemError``); once the budget is over any error
        means "stopped", and before it every error is raised.
        """
        try:
            search()
        except BaseException:
            self._done.set()
            if not self.expired:
                raise
        self.stop()

    def stop(self) -> None:
        self._done.set()
        self.t_end = self.elapsed()


def child(
    method: str,
    seed: int,
    setting_name: str,
    out: Path,
    worker: _Worker,
    earlier: str,
    workers: int = 1,
) -> None:
    """Run one worker of one method for one seed within the budget; events go to ``out``.

    ``method`` ``earlier`` is the earlier study of ``hpsearch_transfer`` (run once, before
    the seeds); ``earlier`` names it. ``method`` ``kerastuner_chief`` serves KerasTuner's
    oracle to the ``workers`` workers of a ``kerastuner`` run, and writes no result.
    """
    setting = SETTINGS[setting_name]
    clock = _Clock(setting["budget_s"])
    signal.signal(signal.SIGTERM, clock.on_term)
    import keras
    import optuna

    from hpsearch.data import load_splits
    from hpsearch.spec import spec_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec_raw = _spec_dict(worker.study, setting, seed)
    if method == "earlier":
        spec_raw["sampler"]["seed"] = EARLIER["seed"]
        spec_raw["data"]["split_seed"] = EARLIER["split_seed"]
    if method == "hpsearch_transfer":  # the study file with one more [[warm_start]] table
        entry = {"from_study": earlier, "top": TRANSFER_TOP}
        spec_raw["warm_start"] = [entry, *spec_raw.get("warm_start", [])]
    spec = spec_from_dict(spec_raw)
    check_same_space(spec)
    splits = load_splits(spec.data)
    max_epochs = setting["max_epochs"]
    if method == KT_CHIEF:
        serve_kt_oracle(splits, max_epochs, seed, worker.ready)
        return
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "hpsearch": lambda: run_hpsearch(spec_raw, splits, clock, worker),
        "earlier": lambda: run_hpsearch(spec_raw, splits, clock, worker),
        "hpsearch_transfer": lambda: run_hpsearch(spec_raw, splits, clock, worker),
        "hpsearch_data": lambda: run_hpsearch(
            {**spec_raw, "pruner": {**spec_raw["pruner"], "data_fractions": DATA_FRACTIONS}},
            splits,
            clock,
            worker,
        ),
        "hpsearch_testtop": lambda: run_hpsearch(
            {**spec_raw, "objective": {**spec_raw.get("objective", {}), "test_top": TEST_TOP}},
            splits,
            clock,
            worker,
        ),
        "kerastuner": lambda: run_kerastuner(splits, max_epochs, seed, clock, worker, workers),
        "optuna": lambda: run_optuna(splits, max_epochs, seed, clock, False, worker),
        "random": lambda: run_optuna(splits, max_epochs, seed, clock, True, worker),
    }
    result = runners[method]()
    result.update(
        method=method,
        seed=seed,
        worker=worker.index,
        ran_s=clock.t_end,
        backend=keras.backend.backend(),
        n_train=len(splits.x_train),
        n_val=len(splits.x_val),
    )
    out.write_text(json.dumps(result, default=float))


# --------------------------------------------------------------------------------------------
# The parent: run everything, aggregate, write results
# --------------------------------------------------------------------------------------------


class _RunFailed(Exception):
    """A worker of a run exited with an error, or wrote no result."""


class _Launcher:
    """Runs one method for one seed: its worker processes, their start line, their results."""

    def __init__(
        self,
        args: argparse.Namespace,
        setting_name: str,
        setting: dict[str, Any],
        gpus: list[str],
        storage: str | None,
        work: Path,
    ) -> None:
        self.args, self.setting_name, self.setting = args, setting_name, setting
        self.gpus, self.storage, self.tmp = gpus, storage, work
        id_file = work / "run_id"  # kept, so that a resumed run finds its earlier study
        if not id_file.exists():
            id_file.write_text(f"{os.getpid()}_{int(time.time())}")
        self.run_id = id_file.read_text()
        self.studies: list[str] = []
        if storage:  # Optuna's tables, made once: workers that all make them race on an empty
            from hpsearch.storage import get_storage  # database (CREATE TYPE ... exists)

            get_storage(storage, heartbeat=False)

    def study_name(self, method: str, seed: int) -> str:
        if method == "earlier":
            return f"{EARLIER['name']}_{self.run_id}"
        return f"bench_{method}_{seed}_{self.run_id}"

    def run(self, method: str, seed: int, budget_s: float) -> dict[str, Any]:
        """Start the workers, give them one start time once all are ready, merge results."""
        from hpsearch.local import thread_env

        workers = self.args.workers
        folder = self.tmp / f"{method}_{seed}"
        name = self.study_name(method, seed)
        self.studies.append(name)
        outs = [folder / f"result_{w}.json" for w in range(workers)]
        wall_file = folder / "wall_s"  # the run's own time, so a resumed invocation can sum it
        if all(out.exists() for out in outs):  # finished by an earlier, interrupted invocation
            merged = merge_workers([json.loads(out.read_text()) for out in outs])
            wall_s = float(wall_file.read_text()) if wall_file.exists() else None
            return {**merged, "budget_s": budget_s, "kept": True, "wall_s": wall_s}
        started = time.perf_counter()
        self.start_afresh(folder, name)
        if self.storage is None and method == "hpsearch_transfer":  # the earlier study's DB
            shutil.copy(self.tmp / f"earlier_{EARLIER['seed']}" / "search.db", folder)
        threads = max(1, self.args.threads // workers)
        env = {
            **os.environ,
            **thread_env(threads),
            "HPSEARCH_RUNS_DIR": str(folder),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        if not self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        procs: list[tuple[Any, Any]] = []
        chief: list[tuple[Any, Any]] = []

        def start(child: str, w: int, tuner_id: str | None) -> tuple[Any, Any]:
            cmd = [sys.executable, __file__, "--child", child, "--seed", str(seed)]
            cmd += ["--out", str(folder / f"result_{w}.json"), "--budget-s", str(budget_s)]
            cmd += ["--worker", str(w), "--workers", str(workers), "--study", name]
            cmd += ["--earlier", self.study_name("earlier", 0)]
            if self.storage:
                cmd += ["--storage", self.storage]
            cmd += (
                ["--quick"] if self.setting_name == "quick" else ["--setting", self.setting_name]
            )
            log_name = "chief" if child == KT_CHIEF else w
            log = open(folder / f"log_{log_name}.txt", "wb")  # noqa: SIM115 - closed below
            proc_env = env if tuner_id is None else {**env, "KERASTUNER_TUNER_ID": tuner_id}
            return subprocess.Popen(cmd, env=proc_env, stdout=log, stderr=log), log

        try:
            kt_parallel = method == "kerastuner" and workers > 1
            if kt_parallel:  # KerasTuner's chief, before its workers
                env.update(KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=_free_port())
                chief.append(start(KT_CHIEF, 0, "chief"))
                self._wait_ready(folder, chief, ["chief"])
            for w in range(workers):
                procs.append(start(method, w, f"tuner{w}" if kt_parallel else None))
            self._start_together(folder, procs)
            deadline = time.monotonic() + budget_s + 900
            for proc, _ in procs:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for proc, log in procs + chief:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        results = []
        for w, (proc, _) in enumerate(procs):
            out = folder / f"result_{w}.json"
            if proc.returncode != 0 or not out.exists():
                tail = (folder / f"log_{w}.txt").read_text(errors="replace")[-3000:]
                raise _RunFailed(f"{method} seed {seed} worker {w} failed:\n{tail}")
            results.append(json.loads(out.read_text()))
        wall_s = time.perf_counter() - started
        wall_file.write_text(f"{wall_s:.1f}")
        return {**merge_workers(results), "budget_s": budget_s, "wall_s": wall_s}

    def start_afresh(self, folder: Path, name: str) -> None:
        """An empty run folder and no study ``name``: an interrupted run leaves both behind,
        and its trials would otherwise count for the run that replaces it."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        self._delete_study(name)

    def _start_together(self, folder: Path, procs: list[tuple[Any, Any]]) -> None:
        self._wait_ready(folder, procs, [str(w) for w in range(len(procs))])
        tmp = folder / "go.tmp"
        tmp.write_text(repr(time.time() + 0.5))
        tmp.rename(folder / "go")

    @staticmethod
    def _wait_ready(folder: Path, procs: list[tuple[Any, Any]], names: list[str]) -> None:
        """Until every process has written its ready file (``ready_<name>``)."""
        ready = [folder / f"ready_{n}" for n in names]
        while not all(r.exists() for r in ready):
            for (proc, _), n, r in zip(procs, names, ready, strict=True):
                if proc.poll() is not None and not r.exists():
                    tail = (folder / f"log_{n}.txt").read_text(errors="replace")[-3000:]
                    who = "KerasTuner's chief" if n == "chief" else f"worker {n}"
                    raise _RunFailed(f"{who} died before the start:\n{tail}")
            time.sleep(0.1)

    def delete_studies(self) -> None:
        """Leave the shared database as it was (its studies of this run deleted)."""
        for name in self.studies:
            self._delete_study(name)

    def _delete_study(self, name: str) -> None:
        if not self.storage:
            return
        import optuna

        try:
            optuna.delete_study(study_name=name, storage=self.storage)
        except KeyError:
            pass


def _free_port() -> str:
    """A TCP port on 127.0.0.1 that nothing listens on now (for KerasTuner's chief)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def merge_workers(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's result from its workers' (each saw the shared study; a trial counts once)."""
    events: dict[Any, dict[str, Any]] = {}
    for r in results:
        for i, e in enumerate(r["events"]):
            events.setdefault(e.get("trial", (r["worker"], i)), e)
    merged = dict(results[0])
    merged["events"] = sorted(events.values(), key=lambda e: e["t"])
    if all(r.get("counts_own") for r in results):  # KerasTuner: no shared study
        merged["counts"] = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    else:
        merged["counts"] = max((r["counts"] for r in results), key=lambda c: sum(c.values()))
    merged["workers"] = len(results)
    merged.pop("worker", None)
    merged.pop("counts_own", None)
    return merged


def _runtime(
    runs: list[dict[str, Any]], earlier: dict[str, Any] | None, this_invocation_s: float
) -> tuple[float, list[str]]:
    """The measurement's run time, and a note when some runs were kept from an earlier
    invocation (``--work-dir``): then it is the sum of the runs' own times, not the time of
    the invocation that only wrote the report."""
    every = runs + ([earlier] if earlier is not None else [])
    kept = [r for r in every if r.get("kept")]
    if not kept:
        return this_invocation_s, []
    known = [r["wall_s"] for r in every if r.get("wall_s") is not None]
    note = f"{len(kept)} of {len(every)} runs were finished by an earlier invocation"
    if len(known) < len(every):
        return this_invocation_s, [
            f"{note}, some without their recorded time: run time is this invocation's only"
        ]
    return sum(known), [f"{note}: run time is the sum of every run's own time"]


def summarize(runs: list[dict[str, Any]], budget_s: float, target: float) -> dict[str, Any]:
    """Per method: best val and its test accuracy at the budget, time to target, trials."""
    out: dict[str, Any] = {}
    for method in ALL_METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        vals, tests, times, n_complete = [], [], [], []
        for r in mine:
            events = [e for e in r["events"] if e["t"] <= budget_s and e["val"] is not None]
            n_complete.append(len(events))
            if events:
                top = max(events, key=lambda e: e["val"])
                vals.append(top["val"])
                if top.get("test") is not None:
                    tests.append(top["test"])
            hit = [e["t"] for e in events if e["val"] >= target]
            times.append(min(hit) if hit else None)
        reached = [t for t in times if t is not None]
        out[method] = {
            "best_val": _common.mean_std(vals),
            "test_of_selected": _common.mean_std(tests),
            "time_to_target_s": _common.mean_std(reached),
            "reached": len(reached),
            "runs": len(mine),
            "complete_trials": _common.mean_std(n_complete),
            "per_seed_best_val": vals,
            "per_seed_time_to_target_s": times,
            "by_seed": {
                int(r["seed"]): {"best_val": v, "time_to_target_s": t}
                for r, v, t in zip(mine, _best_vals(mine, budget_s), times, strict=True)
            },
        }
    return out


def _best_vals(runs: list[dict[str, Any]], budget_s: float) -> list[float | None]:
    """Each run's best validation accuracy at the budget (None: no trial finished)."""
    out: list[float | None] = []
    for r in runs:
        vals = [e["val"] for e in r["events"] if e["t"] <= budget_s and e["val"] is not None]
        out.append(max(vals) if vals else None)
    return out


def paired_tests(
    summary: dict[str, Any], budget_s: float, ours_name: str = "hpsearch"
) -> dict[str, dict[str, Any]]:
    """``ours_name`` against each other method, paired by seed (Wilcoxon signed-rank, SciPy).

    Per other method: the seeds where both have a result, the mean difference of best
    validation accuracy (ours minus other; > 0: ours better) and its two-sided p, and the same
    for time to target (a run that never reached it counts as the budget; < 0: ours faster),
    with the ratio of the mean times. With fewer than 6 pairs no p below 0.05 is possible.
    """
    from scipy.stats import wilcoxon

    def test(diffs: list[float]) -> float | None:
        if len(diffs) < 2 or all(d == 0 for d in diffs):
            return None
        return float(wilcoxon(diffs, zero_method="zsplit").pvalue)

    ours = summary.get(ours_name, {}).get("by_seed", {})
    out: dict[str, dict[str, Any]] = {}
    for method, s in summary.items():
        if method == ours_name or (ours_name == "hpsearch" and method in VARIANTS):
            continue  # each variant has its own table, with its row against plain hpsearch
        seeds = sorted(
            k for k in ours if k in s["by_seed"] and None not in (
                ours[k]["best_val"], s["by_seed"][k]["best_val"])
        )  # fmt: skip
        val = [ours[k]["best_val"] - s["by_seed"][k]["best_val"] for k in seeds]

        def reached(t: float | None) -> float:
            return budget_s if t is None else t

        mine = [reached(ours[k]["time_to_target_s"]) for k in seeds]
        theirs = [reached(s["by_seed"][k]["time_to_target_s"]) for k in seeds]
        time = [a - b for a, b in zip(mine, theirs, strict=True)]
        out[method] = {
            "pairs": len(seeds),
            "val_gain": sum(val) / len(val) if val else None,
            "val_p": test(val),
            "time_gain_s": sum(time) / len(time) if time else None,
            "time_p": test(time),
            "time_ratio": sum(mine) / sum(theirs) if seeds and sum(theirs) > 0 else None,
        }
    return out


def plot(
    runs: list[dict[str, Any]], budget_s: float, target: float, path: Path, title: str
) -> None:
    """Best-so-far validation accuracy over time per method and seed, with the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpsearch.baselines import for_dataset, load_baselines

    fig, ax = plt.subplots(figsize=(10, 6))
    colors = dict(
        zip(
            ALL_METHODS,
            (
                "tab:red",
                "tab:blue",
                "tab:green",
                "tab:gray",
                "tab:purple",
                "tab:brown",
                "tab:orange",
            ),
            strict=True,
        )
    )
    lows = []
    for method in ALL_METHODS:
        for i, r in enumerate(x for x in runs if x["method"] == method):
            xs, ys, best = [], [], -1.0
            for e in sorted(r["events"], key=lambda e: e["t"]):
                if e["val"] is not None and e["t"] <= budget_s and e["val"] > best:
                    best = e["val"]
                    xs.append(e["t"])
                    ys.append(best)
            if not xs:
                continue
            lows.append(ys[0])
            ax.step(
                [*xs, budget_s],
                [*ys, ys[-1]],
                where="post",
                color=colors[method],
                alpha=0.8,
                label=method if i == 0 else None,
            )
    baselines = for_dataset(load_baselines(), "fashion_mnist")
    clusters: list[list[Any]] = []  # baselines closer than 0.006 share one label
    for b in baselines:
        ax.axhline(
            b.accuracy, color="black", lw=0.7, ls=":" if b.metric == "test" else "--", alpha=0.5
        )
        if clusters and clusters[-1][-1].accuracy - b.accuracy < 0.006:
            clusters[-1].append(b)
        else:
            clusters.append([b])
    for group in clusters:
        text = (
            f" {group[0].model[:34]} ({group[0].metric} {group[0].accuracy:.3f})"
            if len(group) == 1
            else f" {len(group)} baselines {group[-1].accuracy:.3f}–{group[0].accuracy:.3f}"
        )
        y = sum(b.accuracy for b in group) / len(group)
        ax.text(budget_s, y, text, fontsize=7, va="center")
    ax.axhline(target, color="tab:orange", lw=1, label=f"target {target}")
    ax.set_xlim(0, budget_s)
    ax.set_ylim(min(lows, default=0.7) - 0.02, max(b.accuracy for b in baselines) + 0.01)
    ax.set_xlabel("wall-clock seconds since the search started")
    ax.set_ylabel("best validation accuracy so far (baselines: dotted test, dashed val)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(ms: tuple[float, float], digits: int = 4) -> str:
    mean, std = ms
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (≈ 4 min)")
    parser.add_argument(
        "--setting",
        choices=sorted(SETTINGS),
        help="cpu (default), small (the quick data, 10 seeds; for --workers on few cores) or gpu",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (default: the setting's)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget per method and seed")
    parser.add_argument(
        "--target",
        type=float,
        help="the validation accuracy of time to target (default: the setting's)",
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated, of {', '.join(ALL_METHODS)} (default: {', '.join(METHODS)}; "
        f"with --workers: {', '.join(PARALLEL_METHODS)})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel worker processes per method, sharing one study in --storage (default 1)",
    )
    parser.add_argument(
        "--storage",
        default=os.environ.get("HPSEARCH_BENCH_STORAGE", DEFAULT_PG),
        help=f"database of the --workers setting (default $HPSEARCH_BENCH_STORAGE or "
        f"{DEFAULT_PG}); this run's studies are deleted at its end",
    )
    parser.add_argument(
        "--from-log",
        type=Path,
        help="no run: the best-val comparison from the '[search] seed' lines of a saved log "
        "(a run that stopped before its summary); written as --name",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep every run's results here (default: a temporary folder, removed after a "
        "successful run); a run already finished there is not run again, so the same command "
        "continues an interrupted benchmark",
    )
    parser.add_argument(
        "--earlier-budget-s",
        type=float,
        help="budget of hpsearch_transfer's earlier study (default: 10 × the budget)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--study", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--earlier", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the results' header (repeatable)"
    )
    parser.add_argument(
        "--name", help="results name (default: search, search_quick or search_gpu)"
    )
    args = parser.parse_args(argv)
    setting_name = "quick" if args.quick else (args.setting or "cpu")
    defaults = dict(SETTINGS[setting_name])
    if args.budget_s:
        SETTINGS[setting_name]["budget_s"] = args.budget_s
    if args.target:
        SETTINGS[setting_name]["target"] = args.target
    if args.child:
        runs_dir = Path(os.environ["HPSEARCH_RUNS_DIR"])
        storage = args.storage if args.workers > 1 else None
        if storage is None and args.child not in ("optuna", "random", "kerastuner"):
            storage = f"sqlite:///{runs_dir / 'search.db'}"
        ready = runs_dir / ("ready_chief" if args.child == KT_CHIEF else f"ready_{args.worker}")
        worker = _Worker(args.worker, storage, args.study, ready)
        child(args.child, args.seed, setting_name, args.out, worker, args.earlier, args.workers)
        return 0

    setting = dict(SETTINGS[setting_name])
    if args.from_log:
        return summarize_log(args.from_log, args.name or "search_from_log", setting, args.note)
    gpus = _common.gpus()
    if setting_name == "gpu" and not gpus:
        print(
            "search: the gpu setting needs an NVIDIA GPU (nvidia-smi lists none)", file=sys.stderr
        )
        return 2
    seeds = list(range(args.seeds or setting["seeds"]))
    default = PARALLEL_METHODS if args.workers > 1 else METHODS
    methods = [m for m in (args.methods or ",".join(default)).split(",") if m]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(ALL_METHODS)}")
    args.earlier_budget_s = args.earlier_budget_s or 10 * setting["budget_s"]
    started = time.perf_counter()
    runs = []
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hpsearch-search-"))
    work.mkdir(parents=True, exist_ok=True)
    storage = args.storage if args.workers > 1 else None
    launcher = _Launcher(args, setting_name, setting, gpus, storage, work)
    earlier: dict[str, Any] | None = None
    try:
        if "hpsearch_transfer" in methods:
            earlier = launcher.run("earlier", EARLIER["seed"], args.earlier_budget_s)
            if not earlier["events"]:
                raise _RunFailed(
                    f"the earlier study finished no trial in {args.earlier_budget_s:g} s: give "
                    "it a larger --earlier-budget-s"
                )
            best = max((e["val"] for e in earlier["events"]), default=float("nan"))
            print(
                f"[search] earlier study: {len(earlier['events'])} complete trials in "
                f"{earlier['budget_s']:.0f} s, best val {best:.4f}",
                file=sys.stderr,
            )
        for i, seed in enumerate(seeds):
            order = methods[i % len(methods) :] + methods[: i % len(methods)]
            for method in order:
                run = launcher.run(method, seed, setting["budget_s"])
                runs.append(run)
                best = max((e["val"] for e in run["events"]), default=float("nan"))
                took = "time not recorded" if run["wall_s"] is None else f"{run['wall_s']:.0f} s"
                print(
                    f"[search] seed {seed} {method:10s}: {len(run['events'])} complete "
                    f"trials, best val {best:.4f} ({took} with "
                    f"start-up{', kept from before' if run.get('kept') else ''})",
                    file=sys.stderr,
                    flush=True,
                )
    except (_RunFailed, KeyboardInterrupt) as exc:
        print(
            f"search: {exc or 'interrupted'}\nsearch: the finished runs are kept in {work}; "
            f"the same command with --work-dir {work} continues from them",
            file=sys.stderr,
        )
        return 1
    launcher.delete_studies()
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    reduced = []
    if setting_name != "quick":
        if setting["budget_s"] < defaults["budget_s"]:
            reduced.append(budget_phrase(setting["budget_s"], defaults["budget_s"]))
        if len(seeds) < defaults["seeds"]:
            reduced.append(f"{len(seeds)} seed(s) instead of {defaults['seeds']}")
        if not set(METHODS) - {"kerastuner"} <= set(methods):
            reduced.append(f"methods {', '.join(methods)} only")
    summary = summarize(runs, setting["budget_s"], setting["target"])
    device = f"GPU ({', '.join(gpus)})" if gpus else f"CPU ({args.threads} threads)"
    runtime_s, notes = _runtime(runs, earlier, time.perf_counter() - started)
    meta = _common.meta(
        runtime_s,
        mode=setting_name,
        setting=setting,
        seeds=seeds,
        methods=methods,
        threads=args.threads,
        device=device,
        n_train=runs[0]["n_train"],
        n_val=runs[0]["n_val"],
        backend=runs[0]["backend"],
        reduced=reduced,
        notes=args.note + notes,
        workers=args.workers,
        earlier=None if earlier is None else _earlier_meta(earlier),
    )
    name = (
        args.name
        or {
            "quick": "search_quick",
            "cpu": "search",
            "small": "search_small",
            "gpu": "search_gpu",
        }[setting_name]
    )
    if args.workers > 1 and not args.name:
        name += f"_{args.workers}workers"
    png = _common.RESULTS_DIR / f"{name}.png"
    _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    label = {
        "quick": "quick (smoke) setting",
        "cpu": "CPU setting",
        "small": "small CPU setting",
        "gpu": "GPU setting",
    }
    label = {k: v + _workers_label(args.workers) for k, v in label.items()}
    plot(
        runs,
        setting["budget_s"],
        setting["target"],
        png,
        f"Fashion-MNIST, {label[setting_name]} on {device}\n{runs[0]['n_train']} training "
        f"images, ≤ {setting['max_epochs']} epochs, {setting['budget_s']:.0f} s per method, "
        f"{len(seeds)} seed(s)",
    )
    title = f"search: equal-budget comparison, {label[setting_name]}"
    if "hpsearch_transfer" in methods:
        title = f"search: transfer from an earlier study, {label[setting_name]}"
    elif "hpsearch_testtop" in methods:
        title = f"search: testing only the best trial so far, {label[setting_name]}"
    title += longer_budget(setting_name, setting["budget_s"], defaults["budget_s"])
    if reduced:
        title += f" (reduced: {'; '.join(reduced)})"
    md = _common.header(title, meta)
    md += (
        f"\nDevice: **{device}**, Keras backend {runs[0]['backend']}. Data: Fashion-MNIST, "
        f"{runs[0]['n_train']} training / {runs[0]['n_val']} validation images (split of "
        f"`studies/fashion_mnist_quick.toml`), official test set. Space: that of "
        f"`fashion_mnist_quick.toml`; ≤ {setting['max_epochs']} epochs per trial; "
        f"budget {setting['budget_s']:.0f} s wall clock per method and seed; seeds {seeds}; "
        f"methods run one at a time, order rotated per seed. Target validation accuracy "
        f"{setting['target']}.\n\n"
    )
    if args.workers > 1:
        from hpsearch.storage import mask_url

        md += (
            f"Workers: **{args.workers} processes per method** sharing one study in "
            f"`{mask_url(storage or '')}`, {max(1, args.threads // args.workers)} CPU "
            "thread(s) each, started together once all had loaded the data; time counts from "
            "that start. Plain Optuna's and random search's workers run the same script on "
            "the shared study, samplers seeded seed + worker (as hpsearch's are). KerasTuner "
            f"runs in its own parallel mode: {args.workers} workers asking one more process, "
            "its chief, for trials over gRPC (the chief trains nothing, and its start-up is "
            "not in the budget).\n\n"
        )
    if earlier is not None:
        e = _earlier_meta(earlier)
        md += (
            f"`hpsearch_transfer` is the study file with one more table before its own warm "
            f"start (so it is queued first), `[[warm_start]] "
            f'from_study = "{EARLIER["name"]}"`, `top = {TRANSFER_TOP}`: the best trials of '
            f"an earlier study in the same database, run once before the seeds (hpsearch, "
            f"another split of the data: `split_seed = {EARLIER['split_seed']}`, sampler seed "
            f"{EARLIER['seed']}, {e['budget_s']:.0f} s, {e['complete']} complete trials, best "
            f"val {e['best_val']:.4f} on its own split). Its time is not counted in any "
            "budget: it stands for a lab's earlier search.\n\n"
        )
    if "hpsearch_testtop" in methods:
        md += (
            f"`hpsearch_testtop` is the study file plus `[objective] test_top = {TEST_TOP}`: "
            "a trial that is not the best complete trial when it completes skips its pass over "
            "the test set. Plain hpsearch tests every complete trial inside its budget; the "
            "baselines keep their best model's weights and test it after the budget. "
            "Everything else is plain hpsearch's.\n\n"
        )
    rows = []
    for method, s in summary.items():
        reached = f"{s['reached']}/{s['runs']}"
        rows.append(
            (
                method,
                _fmt(s["best_val"]),
                _fmt(s["test_of_selected"]),
                f"{_fmt(s['time_to_target_s'], 0)} s ({reached})"
                if s["reached"]
                else f"not reached ({reached})",
                _fmt(s["complete_trials"], 1),
            )
        )
    md += _common.table(
        [
            "method",
            "best val acc at budget",
            "test acc of selected",
            "time to target (seeds reached)",
            "complete trials",
        ],
        rows,
    )
    md += f"\n![best validation accuracy over time]({png.name})\n"
    paired = paired_by_variant(summary, setting["budget_s"])
    if paired:
        md += "\n" + PAIRED_CAPTION
        for ours, tests in paired.items():
            md += "\n" + paired_table(tests, ours)
    verdict, gap = _verdict(summary)
    md += f"\n{verdict}\n"
    tests = paired.get("hpsearch", {})
    variants = {k: v for k, v in paired.items() if k != "hpsearch"}
    results = result_lines(gap, paired, args.workers)
    md += "\n" + "\n".join(f"`RESULT {key}={value}`  " for key, value in results) + "\n"
    _common.write_results(
        name,
        md,
        {
            "meta": meta,
            "summary": summary,
            "paired": tests,
            "paired_variants": variants,
            "runs": runs,
        },
    )
    for key, value in results:
        _common.result_line(key, value)
    return 0


def longer_budget(setting_name: str, budget_s: float, default_s: float) -> str:
    """The title's note on a budget above the setting's own (``--budget-s``), else ''.

    A shorter budget is named among the run's reductions instead.
    """
    if setting_name == "quick" or budget_s <= default_s:
        return ""
    return f", {budget_phrase(budget_s, default_s)}"


def budget_phrase(budget_s: float, default_s: float) -> str:
    """How a results title names a budget other than the setting's own."""
    return f"{budget_s:g} s per method instead of {default_s:g} s"


def result_lines(
    gap: float, paired: dict[str, dict[str, dict[str, Any]]], workers: int = 1
) -> list[tuple[str, str]]:
    """The run's key figures as ``(name, value)``: hpsearch's mean best-val lead over the best
    other method, and its paired gain and p against plain Optuna (and hpsearch_transfer's, if
    run). Named ``search_...`` for one worker, ``search_<N>workers_...`` with parallel workers.
    """
    prefix = "search" if workers == 1 else f"search_{workers}workers"
    vs = paired.get("hpsearch", {}).get("optuna", {})
    lines = [
        (f"{prefix}_hpsearch_minus_best_other_val", f"{gap:+.4f}"),
        (f"{prefix}_gain_vs_optuna", _num(vs.get("val_gain"), "+.4f")),
        (f"{prefix}_p_vs_optuna", _num(vs.get("val_p"), ".3g")),
    ]
    if "optuna" in paired.get("hpsearch_transfer", {}):
        vs = paired["hpsearch_transfer"]["optuna"]
        lines.append((f"{prefix}_transfer_gain_vs_optuna", _num(vs["val_gain"], "+.4f")))
        lines.append((f"{prefix}_transfer_p_vs_optuna", _num(vs["val_p"], ".3g")))
    return lines


LOG_LINE = re.compile(r"\[search\] seed (\d+) (\S+)\s*: (\d+) complete trials, best val ([\d.]+)")


def summarize_log(path: Path, name: str, setting: dict[str, Any], notes: list[str]) -> int:
    """Best val per method and the paired tests, from the progress lines of a saved log.

    For a run that stopped before writing its summary: each ``[search] seed S METHOD: ...
    best val V`` line is one finished run; only seeds every method finished are compared.
    Time to target and test accuracy are not in those lines, so they are not reported.
    """
    by_method: dict[str, dict[int, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LOG_LINE.match(line)
        if m:
            by_method.setdefault(m.group(2), {})[int(m.group(1))] = float(m.group(4))
    seeds = sorted(set.intersection(*(set(v) for v in by_method.values()))) if by_method else []
    if len(seeds) < 2:
        print(f"search: {path} has fewer than 2 seeds that every method finished", file=sys.stderr)
        return 1
    runs = [
        {"method": m, "seed": k, "events": [{"t": 0.0, "val": v[k]}]}
        for m, v in by_method.items()
        for k in seeds
    ]
    summary = summarize(runs, setting["budget_s"], target=math.inf)
    paired = paired_by_variant(summary, setting["budget_s"])
    meta = _common.meta(
        0.0,
        seeds=seeds,
        methods=list(by_method),
        log=path.name,
        notes=notes,
        reduced=[f"best val only, {len(seeds)} seeds from a saved log"],
    )
    md = _common.header(f"search: best validation accuracy from a saved log ({path.name})", meta)
    md += (
        f"\nFrom the progress lines of `{path.name}` (kept beside this file): seeds {seeds}, "
        "those every method finished. Only best validation accuracy at the budget is in those "
        "lines: time to target and test accuracy are not reported.\n\n"
    )
    md += _common.table(
        ["method", "best val acc at budget", "per seed"],
        [
            (m, _fmt(s["best_val"]), " ".join(f"{v:.4f}" for v in s["per_seed_best_val"]))
            for m, s in summary.items()
        ],
    )
    md += "\nPaired by seed, Wilcoxon signed-rank (two-sided, SciPy); *gain* > 0: the first "
    md += "method better. Fewer than 6 pairs cannot reach p < 0.05.\n"
    for ours, tests in paired.items():
        rows = [
            (f"{ours} − {m}", t["pairs"], _num(t["val_gain"], "+.4f"), _num(t["val_p"], ".3g"))
            for m, t in tests.items()
        ]
        md += "\n" + _common.table(["comparison", "seed pairs", "val gain", "p (val)"], rows)
    _common.write_results(
        name,
        md,
        {
            "meta": meta,
            "summary": summary,
            "paired": paired.get("hpsearch", {}),
            "paired_variants": {k: v for k, v in paired.items() if k != "hpsearch"},
        },
    )
    return 0


def _workers_label(workers: int) -> str:
    return "" if workers == 1 else f", {workers} parallel workers"


def _earlier_meta(earlier: dict[str, Any]) -> dict[str, Any]:
    vals = [e["val"] for e in earlier["events"] if e["val"] is not None]
    return {
        "budget_s": earlier["budget_s"],
        "complete": len(vals),
        "best_val": max(vals, default=float("nan")),
        **EARLIER,
    }


def paired_by_variant(summary: dict[str, Any], budget_s: float) -> dict[str, Any]:
    """:func:`paired_tests` of each hpsearch variant in ``summary`` (none if it is alone)."""
    return {
        ours: paired_tests(summary, budget_s, ours)
        for ours in VARIANTS
        if ours in summary and len(summary) > 1
    }


def _num(value: float | None, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


PAIRED_CAPTION = (
    "Paired by seed, Wilcoxon signed-rank (two-sided, SciPy): *gain* is the mean difference of "
    "best validation accuracy (> 0: the first method better); *time* that of time to the "
    "target, a run that never reached it counted as the budget (< 0: the first method faster), "
    "and *time ratio* the ratio of the mean times (0.5: twice as fast). Fewer than 6 pairs "
    "cannot reach p < 0.05.\n"
)


def paired_table(tests: dict[str, dict[str, Any]], ours: str = "hpsearch") -> str:
    """Markdown table of :func:`paired_tests` (read it with :data:`PAIRED_CAPTION`)."""
    rows = [
        (
            f"{ours} − {method}",
            t["pairs"],
            _num(t["val_gain"], "+.4f"),
            _num(t["val_p"], ".3g"),
            _num(t["time_gain_s"], "+.0f"),
            _num(t.get("time_ratio"), ".2f"),
            _num(t["time_p"], ".3g"),
        )
        for method, t in tests.items()
    ]
    headers = ["comparison", "seed pairs", "val gain", "p (val)", "time gain s", "time ratio"]
    return _common.table([*headers, "p (time)"], rows)


def _verdict(summary: dict[str, Any]) -> tuple[str, float]:
    if "hpsearch" not in summary or len(summary) < 2:
        return "(hpsearch or every other method missing: no comparison)", float("nan")
    ours = summary["hpsearch"]["best_val"][0]
    others = {m: s["best_val"][0] for m, s in summary.items() if m not in VARIANTS}
    if not others:
        return "(no method other than hpsearch's variants: no comparison)", float("nan")
    best_other = max(others, key=lambda m: others[m])
    gap = ours - others[best_other]

    def median_time(s: dict[str, Any]) -> float:
        times = sorted(math.inf if t is None else t for t in s["per_seed_time_to_target_s"])
        return times[len(times) // 2]

    t_ours = median_time(summary["hpsearch"])
    t_others = min(median_time(s) for m, s in summary.items() if m in others)
    better = "at least as good as" if gap >= 0 else "worse than"
    faster = (
        "faster to the target than"
        if t_ours < t_others
        else ("as fast to the target as" if t_ours == t_others else "slower to the target than")
    )
    text = (
        f"**Verdict:** at equal budget hpsearch's mean best validation accuracy is {better} the "
        f"best other method ({best_other}, difference {gap:+.4f}), and by median time it is "
        f"{faster} the fastest other method. With few seeds and a busy machine, differences "
        "smaller than the standard deviations are noise."
    )
    if {"optuna", "random"} <= summary.keys() and (
        summary["optuna"]["per_seed_best_val"] == summary["random"]["per_seed_best_val"]
    ):
        text += (
            " The plain Optuna script and random search found the same models: Optuna's "
            "default `TPESampler` samples its first 10 trials at random, and this budget ends "
            "before that (hpsearch's study files start TPE after 4 trials, behind a warm start)."
        )
    return text, gap


if __name__ == "__main__":
    sys.exit(main())
