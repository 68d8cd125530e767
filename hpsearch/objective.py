"""One trial: sample a config, build the CNN, train epoch by epoch, report, prune, checkpoint.

Every epoch the trial reports validation accuracy to Optuna (step = epochs run) and saves a
checkpoint (model + optimizer state) under ``runs/<study>/checkpoints/trial_<n>/`` (or
``$HPSEARCH_CHECKPOINT_DIR/<study>/trial_<n>/``). A retried trial (after preemption or a dead
worker) resumes from the checkpoint of the trial it retries, so at most the epoch in flight is
lost. Test accuracy is measured only for completed trials (with ``objective.test_top``, only
for those among the study's best when they complete) and only recorded, never returned to
Optuna.

Trial user attrs (all ``hpsearch:*``): ``epochs``, ``wall_time_s``, ``n_params``,
``test_accuracy`` (or ``test_skipped``), ``config``, ``seed``, ``fail_reason`` (``nan``,
``oom``, ``preempted``, ``timeout``, ``budget``, ``exception``), ``error``, and where the trial
ran (``host``, ``pid``, ``slurm_job_id``, ``slurm_array_task_id``, ``gpu``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from hpsearch import attr_names
from hpsearch.data import Splits, load_splits
from hpsearch.env import checkpoint_dir, log_prefix, where_am_i
from hpsearch.errors import BudgetReachedError, NanLossError, TrialTimeoutError
from hpsearch.model import compile_model, make_model
from hpsearch.preemption import raise_if_stop_requested
from hpsearch.space import sample_config
from hpsearch.spec import StudySpec
from hpsearch.storage import count_live_trials_before, trial_id, trial_writes

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

MONITOR = "val_accuracy"


@dataclass
class CheckpointState:
    """What a checkpoint remembers besides the model: epochs done and time spent."""

    epochs_done: int
    wall_time_s: float
    val_accuracy: float


class Checkpoint:
    """Per-trial checkpoint folder, written atomically after every epoch.

    ``checkpoint.npz`` holds the model's weights, the optimizer's state (momenta, step count)
    and the progress; a freshly built model of the same configuration resumes from it. Plain
    NumPy arrays take about 8 ms to write where a ``.keras`` file takes 40-60 ms, which matters
    once per epoch. ``state.json`` repeats the progress for people and monitoring.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "checkpoint.npz"
        self.state_path = folder / "state.json"

    def save(self, model: keras.Model, state: CheckpointState) -> None:
        """Save weights, optimizer state and progress; a crash mid-save keeps the old one."""
        import keras

        self.folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"state": np.array(json.dumps(state.__dict__))}
        for prefix, variables in (
            ("weight", model.weights),
            ("optimizer", _optimizer_vars(model)),
        ):
            for i, variable in enumerate(variables):
                arrays[f"{prefix}_{i}"] = keras.ops.convert_to_numpy(variable.value)
        tmp = self.folder / "checkpoint.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, self.path)
        tmp_state = self.folder / "state.tmp.json"
        tmp_state.write_text(json.dumps(state.__dict__))
        os.replace(tmp_state, self.state_path)

    def restore(self, model: keras.Model) -> CheckpointState | None:
        """Load the checkpoint into ``model`` (built and compiled); None when there is none.

        Raises:
            ValueError: If the checkpoint was saved from a model of another shape.
        """
        if not self.path.exists():
            return None
        with np.load(self.path) as data:
            targets = {"weight": model.weights, "optimizer": _optimizer_vars(model, build=True)}
            for prefix, variables in targets.items():
                saved = sum(key.startswith(prefix + "_") for key in data.files)
                if saved != len(variables):
                    raise ValueError(
                        f"checkpoint {self.path} has {saved} {prefix} variables, the model "
                        f"{len(variables)}: it was saved from another configuration"
                    )
                for i, variable in enumerate(variables):
                    variable.assign(data[f"{prefix}_{i}"])
            return CheckpointState(**json.loads(str(data["state"])))

    def remove(self) -> None:
        """Delete the folder (the trial finished; nothing to resume)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _optimizer_vars(model: keras.Model, build: bool = False) -> list[Any]:
    optimizer = model.optimizer
    if build and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(optimizer.variables)


def _free_accelerator_memory() -> None:
    """Drop Keras' global state after an out-of-memory error, so the next trial fits."""
    import keras

    keras.backend.clear_session()


def pruning_callback(trial: optuna.Trial, monitor: str = MONITOR, *, last_epoch: int) -> Any:
    """optuna-integration's Keras callback with step = epochs run, raising on a missing metric.

    The epoch ``last_epoch`` (the schedule's last) is reported but never pruned: the trial has
    trained to the end, and pruning it then would throw its result away for no saving. (Optuna
    counts steps from 0, so its pruners can ask at step ``max_resource``, e.g. Hyperband's rung
    at epoch 3 of a 3-epoch schedule, only where steps are epochs run, as here.)

    (Built on call so that importing this module does not import Keras.)
    """
    from optuna_integration import KerasPruningCallback

    class PruningCallback(KerasPruningCallback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if not logs or monitor not in logs:
                raise KeyError(
                    f"metric {monitor!r} is missing from the epoch logs (have: "
                    f"{', '.join(logs or {}) or 'none'}); compile with metrics=['accuracy'] "
                    "and pass validation_data"
                )
            if epoch + 1 >= last_epoch:
                trial.report(float(logs[monitor]), step=epoch + 1)
                return
            super().on_epoch_end(epoch + 1, logs)

    return PruningCallback(trial, monitor)


@dataclass
class _Progress:
    epochs: int
    val_accuracy: float
    started: float
    time_before: float

    def wall_time(self) -> float:
        return self.time_before + time.monotonic() - self.started


def injected_fault(trial_number: int) -> str | None:
    """The fault ``$HPSEARCH_INJECT_FAULT`` asks for in this trial, e.g. ``oom@3`` → ``"oom"``.

    For tests of failure handling: a GPU running out of memory cannot happen on a CPU machine,
    and a diverging loss (``nan@N``) no longer needs a learning rate the spec would refuse.
    """
    for item in os.environ.get("HPSEARCH_INJECT_FAULT", "").split(","):
        kind, _, number = item.strip().partition("@")
        if kind in ("oom", "nan") and number.isdigit() and int(number) == trial_number:
            return kind
    return None


def _out_of_memory_error() -> Exception:
    """The error the Keras backend raises when the accelerator runs out of memory."""
    import keras

    message = "OOM when allocating tensor with shape[512,4096] (HPSEARCH_INJECT_FAULT)"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.errors.ResourceExhaustedError(None, None, message)
    return RuntimeError(f"RESOURCE_EXHAUSTED: Out of memory: {message}")  # JAX's wording


def _epoch_callbacks(
    trial: optuna.Trial,
    checkpoint: Checkpoint,
    progress: _Progress,
    timeout_s: float | None,
    monitor: str = MONITOR,
) -> tuple[Any, Any]:
    import keras

    prefix = f"[{log_prefix()} trial {trial.number}]"
    fault = injected_fault(trial.number)

    class EpochGuard(keras.callbacks.Callback):  # type: ignore[misc]
        """Raise on a NaN loss (or an injected fault), count and log the epoch."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            loss = float(logs.get("loss", math.nan))
            if fault == "oom":
                raise _out_of_memory_error()
            if fault == "nan":
                loss = math.nan
            if not math.isfinite(loss):
                raise NanLossError(f"loss became {loss} in epoch {epoch + 1}")
            progress.epochs = epoch + 1
            progress.val_accuracy = float(logs.get(monitor, math.nan))
            _logger.info(
                "%s epoch %d val_acc=%.4f loss=%.4f%s",
                prefix,
                epoch + 1,
                float(logs.get(MONITOR, math.nan)),
                loss,
                "" if monitor == MONITOR else f" {monitor}={progress.val_accuracy:.4f}",
            )

    class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
        """Save the checkpoint after the epoch was reported (and not pruned).

        Then stop if a stop signal arrived whose exception Python lost (hpsearch.preemption),
        or if the trial passed its time limit (``budget.trial_timeout_s``).
        """

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            checkpoint.save(
                self.model,
                CheckpointState(progress.epochs, progress.wall_time(), progress.val_accuracy),
            )
            raise_if_stop_requested()
            if timeout_s is not None and progress.wall_time() > timeout_s:
                raise TrialTimeoutError(
                    f"trial time limit budget.trial_timeout_s = {timeout_s:g} s passed after "
                    f"epoch {epoch + 1} ({progress.wall_time():.0f} s)"
                )

    return EpochGuard(), Checkpointer()


def fit_by_data_fraction(
    model: keras.Model,
    splits: Splits,
    spec: StudySpec,
    initial_epoch: int,
    prefix: str = "",
    **fit_kwargs: Any,
) -> None:
    """Train from ``initial_epoch`` to ``budget.max_epochs``, each epoch on its share of the
    training images (``pruner.data_fractions``; all of them without a schedule).

    Consecutive epochs with the same share are one ``model.fit`` call, so without a schedule
    this is exactly one call. Epoch numbers (and so the pruner's steps and the checkpoints)
    run on across calls; a resumed trial picks up the schedule at its next epoch.
    """
    pruner, max_epochs = spec.pruner, spec.budget.max_epochs
    n_images = len(splits.x_train)
    epoch = initial_epoch
    while epoch < max_epochs:
        share = pruner.data_fraction(epoch)
        end = epoch + 1
        while end < max_epochs and pruner.data_fraction(end) == share:
            end += 1
        n = max(1, round(n_images * share))
        if share < 1.0:
            _logger.info(
                "%s epochs %d-%d on %d of %d training images", prefix, epoch + 1, end, n, n_images
            )
        model.fit(
            splits.x_train[:n], splits.y_train[:n], epochs=end, initial_epoch=epoch, **fit_kwargs
        )
        if getattr(model, "stop_training", False):  # a callback ended training early
            return
        epoch = end


def classify_failure(error: BaseException) -> str:
    """Cause of a failed trial: ``preempted``, ``nan``, ``oom``, ``timeout`` or ``exception``."""
    if isinstance(error, KeyboardInterrupt):  # Preempted, or Ctrl-C
        return "preempted"
    if isinstance(error, NanLossError):
        return "nan"
    if isinstance(error, TrialTimeoutError):
        return "timeout"
    if isinstance(error, BudgetReachedError):
        return "budget"
    text = f"{type(error).__name__} {error}".lower()
    if isinstance(error, MemoryError) or any(
        s in text for s in ("resourceexhausted", "resource_exhausted", "out of memory", "oom ")
    ):
        return "oom"
    return "exception"


def ranks_in_top(study: optuna.Study, value: float, top: int, maximize: bool) -> bool:
    """True if fewer than ``top`` complete trials of ``study`` have a better value than ``value``.

    Checked as a trial completes, this never leaves out one of the study's ``top`` best at the
    end: fewer than ``top`` trials beat such a trial at the end, so fewer had beaten it then.
    Ties do not count as better.
    """
    better = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.value is not None and (t.value > value if maximize else t.value < value):
            better += 1
            if better >= top:
                return False
    return True


class Objective:
    """The Optuna objective for one study: returns the last epoch's objective metric.

    The metric is ``objective.metric`` of the spec (validation accuracy by default); the model
    comes from the spec's builder (:func:`hpsearch.model.make_model`).

    Args:
        spec: The study spec (data, budget and search space).
        splits: Data to train on; defaults to :func:`hpsearch.data.load_splits` of the spec.
        folder: Where checkpoints go; defaults to ``runs/<study>/checkpoints``.
    """

    def __init__(
        self, spec: StudySpec, splits: Splits | None = None, folder: Path | None = None
    ) -> None:
        self.spec = spec
        self._splits = splits
        self.folder = folder or checkpoint_dir(spec.name)
        self.current_trial_id: int | None = None
        self.metric = spec.objective.metric

    @property
    def splits(self) -> Splits:
        """The data, loaded on first use (once per process)."""
        if self._splits is None:
            self._splits = load_splits(self.spec.data, tuple(self.spec.python_path))
        return self._splits

    def __call__(self, trial: optuna.Trial) -> float:
        self.current_trial_id = trial_id(trial)
        if self._is_surplus(trial):
            message = (
                f"trial {trial.number} is beyond the budget of {self.spec.budget.n_trials} "
                "trials (other workers started the last ones at the same moment); not trained"
            )
            trial.set_user_attr(attr_names.FAIL_REASON, "budget")
            trial.set_user_attr(attr_names.ERROR, message)
            raise BudgetReachedError(message)
        root = int(
            trial.storage.get_trial_system_attrs(trial_id(trial)).get("failed_trial", trial.number)
        )
        checkpoint = Checkpoint(self.folder / f"trial_{root}")
        seed = (self.spec.sampler.seed or 0) + root
        with trial_writes(trial):  # one transaction: other workers read them with the trial
            config = sample_config(trial, self.spec.search, self.spec.model.builder)
            trial.set_user_attr(attr_names.CONFIG, config.summary())
            trial.set_user_attr(attr_names.SEED, seed)
            for key, value in where_am_i().items():
                trial.set_user_attr(attr_names.where(key), value)
        progress = _Progress(0, math.nan, time.monotonic(), 0.0)
        try:
            import keras

            splits = self.splits
            trial.set_user_attr(attr_names.KERAS_BACKEND, keras.backend.backend())
            keras.utils.set_random_seed(seed)
            built = make_model(
                config, splits.input_shape, splits.n_classes, self.spec.python_path, seed
            )
            model = built.model
            compile_model(model, config.train, self.metric, built.from_logits)
            state = checkpoint.restore(model)
            if state is not None:
                progress.epochs, progress.val_accuracy = state.epochs_done, state.val_accuracy
                progress.time_before = state.wall_time_s
                _logger.info(
                    "[%s trial %d] resuming trial %d after epoch %d",
                    log_prefix(),
                    trial.number,
                    root,
                    state.epochs_done,
                )
            trial.set_user_attr(attr_names.N_PARAMS, int(model.count_params()))
            guard, checkpointer = _epoch_callbacks(
                trial, checkpoint, progress, self.spec.budget.trial_timeout_s, self.metric
            )
            fit_by_data_fraction(
                model,
                splits,
                self.spec,
                progress.epochs,
                f"[{log_prefix()} trial {trial.number}]",
                batch_size=config.train.batch_size,
                validation_data=(splits.x_val, splits.y_val),
                callbacks=[
                    keras.callbacks.TerminateOnNaN(),
                    guard,
                    pruning_callback(trial, self.metric, last_epoch=self.spec.budget.max_epochs),
                    checkpointer,
                ],
                verbose=0,
            )
            self._finish(trial, checkpoint, progress, self._test_results(trial, model, progress))
            return progress.val_accuracy
        except optuna.TrialPruned:
            self._finish(trial, checkpoint, progress)
            raise
        except (Exception, KeyboardInterrupt) as e:
            reason = classify_failure(e)
            try:
                with trial_writes(trial):
                    trial.set_user_attr(attr_names.FAIL_REASON, reason)
                    trial.set_user_attr(attr_names.ERROR, f"{type(e).__name__}: {e}"[:500])
                    self._record_progress(trial, progress)
            except optuna.exceptions.UpdateFinishedTrialError:
                _logger.warning(
                    "[%s trial %d] was failed by another worker meanwhile (no heartbeat "
                    "reached the database); this attempt's failure is not recorded",
                    log_prefix(),
                    trial.number,
                )
            if reason != "preempted":
                checkpoint.remove()
            if reason == "oom":
                _free_accelerator_memory()
            raise

    def _test_results(
        self, trial: optuna.Trial, model: keras.Model, progress: _Progress
    ) -> dict[str, float | str]:
        """Test accuracy (and the objective's metric on test) as user attributes to record.

        With ``objective.test_top = N`` a trial that N complete trials already beat is not
        tested; it records why instead.
        """
        top = self.spec.objective.test_top
        maximize = self.spec.objective.direction == "maximize"
        if top is not None and not ranks_in_top(trial.study, progress.val_accuracy, top, maximize):
            return {
                attr_names.TEST_SKIPPED: f"not tested: {top} complete trials were better on "
                f"{self.metric} when it completed (objective.test_top = {top})"
            }
        splits = self.splits
        test = model.evaluate(
            splits.x_test, splits.y_test, batch_size=512, verbose=0, return_dict=True
        )
        results: dict[str, float | str] = {attr_names.TEST_ACCURACY: float(test["accuracy"])}
        if self.metric != MONITOR:
            name = self.metric.removeprefix("val_")
            if name in test:
                results[attr_names.test_metric(name)] = float(test[name])
        return results

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        """True if ``budget.n_trials`` trials that are not failed were created before this one.

        Workers check the budget before asking for a trial, but two can ask at once for the
        last one. Trial numbers are assigned one at a time, so ranking by number is exact.
        """
        return count_live_trials_before(trial) >= self.spec.budget.n_trials

    @staticmethod
    def _record_progress(trial: optuna.Trial, progress: _Progress) -> None:
        trial.set_user_attr(attr_names.EPOCHS, progress.epochs)
        trial.set_user_attr(attr_names.WALL_TIME_S, progress.wall_time())

    def _finish(
        self,
        trial: optuna.Trial,
        checkpoint: Checkpoint,
        progress: _Progress,
        results: dict[str, float | str] | None = None,
    ) -> None:
        with trial_writes(trial):
            for key, value in (results or {}).items():
                trial.set_user_attr(key, value)
            self._record_progress(trial, progress)
        checkpoint.remove()
