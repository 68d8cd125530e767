"""``hpsearch best``: re-train the best configurations with several seeds, pick one, export it.

The search ranks each configuration by one training run, so its best trial may only be the
luckiest. :func:`export_best` answers that honestly:

1. **Selection** (``seeds > 1`` or ``top > 1``): the ``top`` best complete trials by the
   study's objective (validation accuracy unless the study names another metric, such as
   ``val_loss``, in its own direction) are re-trained on the training split with the same
   ``seeds`` each (seed 0, 1, ... for every candidate, so they are compared on equal terms),
   for as many epochs as the trial ran. The candidate with the best mean of the objective on
   the validation split is picked; its test accuracy is
   reported as mean ± standard deviation over the seeds (never used to pick). Each candidate's
   figures are stored in the study as the study user attribute ``hpsearch:retrain:<trial>``
   (see :func:`retrain_records`), where ``status``, reports and the dashboard show them next to
   the search figures.
2. **Export** (with an output folder): the picked configuration (with the defaults, simply the
   search's best trial) is re-trained once on train+validation with the trial's own seed,
   evaluated once on the test set, and saved.

The folder gets ``model.keras``, ``hpsearch.json`` and ``study.toml`` (the study file). The model
takes **raw** images: scaling to [0, 1] and the reshape to the network's input are layers inside
it, so a uint8 array of the dataset's own shape (``(n, 28, 28)`` for Fashion-MNIST) goes straight
into ``model.predict``. ``hpsearch.json`` states the expected input (shape, dtype, value range),
the class names, the metrics (the test accuracy is that of the saved model on the raw test
images), the selection, the seeds, the package versions and the git commit.

Example:
    >>> study, spec = load_study("smoke")  # doctest: +SKIP
    >>> record = export_best(study, spec, Path("best"), seeds=3, top=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from hpsearch import attr_names
from hpsearch.data import call_loader, candidate_dirs, load_arrays, load_splits
from hpsearch.display import DEFAULT_METRIC, ranked_by
from hpsearch.errors import ExportError, StorageError
from hpsearch.ranking import RETRAIN_ATTR_PREFIX, best_complete_trials
from hpsearch.spec import DataSpec, StudySpec
from hpsearch.study import ATTR_SPEC_TOML, stored_attr

if TYPE_CHECKING:
    import keras

    from hpsearch.data import Splits
    from hpsearch.model import TrialConfig

_logger = logging.getLogger(__name__)

EXPORT_FILES = ("model.keras", "hpsearch.json", "study.toml")
ProgressHook = Callable[[int, int, str], None]
"""Called after every epoch with (epochs done, epochs in total, what is training)."""

CLASS_NAMES: dict[str, list[str]] = {
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "mnist": [str(d) for d in range(10)],
    "cifar10": [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ],
}  # fmt: skip


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a result (for reproducibility records)."""
    import keras

    from hpsearch import __version__

    out = {
        "python": platform.python_version(),
        "keras_backend": keras.backend.backend(),
        "hpsearch": __version__,
    }
    for name in ("keras", "tensorflow", "jax", "optuna", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> dict[str, Any] | None:
    """The commit of the hpsearch checkout running now, or None (an installed wheel, no git).

    Returns:
        ``{"commit": "<40 hex>", "dirty": bool}``; dirty means tracked files differ from it.
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


# --------------------------------------------------------------------------------------------
# The export folder: no writing through links, no silent overwrite
# --------------------------------------------------------------------------------------------


def check_export_dir(out_dir: Path, *, force: bool = False) -> None:
    """Refuse an export folder that is a link, holds links, or holds an export already.

    Called before any training (so an hour is not lost to a bad folder) and again just before
    writing. ``force`` allows replacing an existing export; links are refused even then.

    Raises:
        ExportError: With the folder, what is wrong and how to fix it.
    """
    if out_dir.is_symlink():
        raise ExportError(
            f"--export {out_dir}: is a symbolic link (to {os.readlink(out_dir)}); hpsearch "
            "does not write through links. Fix: give a real folder, e.g. --export best/"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(
            f"--export {out_dir}: exists and is not a folder. Fix: give a folder, "
            "e.g. --export best/"
        )
    if not out_dir.is_dir():
        return
    for name in EXPORT_FILES:
        path = out_dir / name
        if path.is_symlink():
            raise ExportError(
                f"--export {out_dir}: {name} is a symbolic link (to {os.readlink(path)}); "
                "hpsearch does not write through links. Fix: remove it, or give another "
                "folder, e.g. --export best/"
            )
    existing = [name for name in EXPORT_FILES if (out_dir / name).exists()]
    if existing and not force:
        raise ExportError(
            f"--export {out_dir}: already holds an export ({', '.join(existing)}); nothing was "
            f"overwritten. Fix: pass --force to replace it, or give another folder, "
            f"e.g. --export {out_dir.name or 'best'}-2"
        )


def _write_files(out_dir: Path, writers: dict[str, Callable[[Path], object]], force: bool) -> None:
    """Write into a fresh private folder inside ``out_dir``, then rename into place.

    ``os.replace`` replaces a name, never the target of a link, and a crash leaves either the
    old file or the new one.
    """
    check_export_dir(out_dir, force=force)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_export_dir(out_dir, force=force)  # nothing swapped in between
    tmp = Path(tempfile.mkdtemp(prefix=".hpsearch-export-", dir=out_dir))
    try:
        for name, write in writers.items():
            write(tmp / name)
        for name in writers:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Raw input: what the exported model takes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawInput:
    """The dataset's raw images as they come from its files, and how the model prepares them."""

    x_test: np.ndarray
    y_test: np.ndarray
    scale: float  # 1/255 for 0-255 pixels, 1.0 for data already in [0, 1]
    class_names: list[str] | None

    @property
    def shape(self) -> tuple[int, ...]:
        """One raw image, e.g. ``(28, 28)``."""
        return tuple(int(d) for d in self.x_test.shape[1:])

    def describe(self, model_input: tuple[int, ...]) -> dict[str, Any]:
        """The ``input`` entry of ``hpsearch.json``."""
        dtype = str(self.x_test.dtype)
        if self.scale == 1.0:
            lo, hi = float(self.x_test.min(initial=0.0)), float(self.x_test.max(initial=1.0))
            value_range = [lo, hi]
            inside = "none (values are used as they are)"
        else:
            value_range = [0, 255]
            inside = "x / 255"
        if self.shape != model_input:
            inside += f", reshape to {list(model_input)}"
        return {
            "shape": list(self.shape),
            "batch_shape": [None, *self.shape],
            "dtype": dtype,
            "range": value_range,
            "preprocessing_inside_model": inside,
            "note": f"give raw {dtype} images as in the dataset files; other numeric dtypes "
            "with the same values work too",
        }


def load_raw_input(data: DataSpec, python_path: tuple[str, ...] = ()) -> RawInput:
    """The raw test images of the data and how the model must prepare raw images.

    Built-in datasets and ``.npz`` files: their files as stored; a ``loader``: what it returns;
    an image folder: the decoded images, in [0, 1] (the model then only reshapes).
    """
    if data.kind == "folder":
        splits = load_splits(data, python_path)
        return RawInput(splits.x_test, splits.y_test, 1.0, None)
    if data.kind == "loader":
        arrays = call_loader(data, python_path)
    else:
        assert data.dataset is not None
        arrays = load_arrays(data.dataset)
    x_test = np.asarray(arrays.x_test)
    scale = 1.0 / 255.0 if float(x_test.max(initial=0)) > 1.0 else 1.0
    names = class_names(data.dataset) if data.dataset is not None else None
    return RawInput(x_test, np.asarray(arrays.y_test), scale, names)


def class_names(dataset: str) -> list[str] | None:
    """Class names, index = label: built-in lists, CIFAR meta files, an .npz's ``class_names``.

    Returns:
        The names, or None when the dataset does not say (labels are then just 0..n-1).
    """
    if dataset.endswith(".npz"):
        try:
            with np.load(dataset) as f:
                if "class_names" in f:
                    return [str(n) for n in f["class_names"].tolist()]
        except (OSError, ValueError):
            return None
        return None
    if dataset in CLASS_NAMES:
        return list(CLASS_NAMES[dataset])
    if dataset == "cifar100":
        import pickle

        for folder in candidate_dirs(dataset):
            meta = folder / "meta"
            if meta.exists():
                with open(meta, "rb") as f:
                    names = pickle.load(f, encoding="bytes")  # noqa: S301 - CIFAR's own format
                return [n.decode() for n in names[b"fine_label_names"]]
    return None


def raw_input_model(trained: keras.Model, raw: RawInput, model_input: tuple[int, ...]) -> Any:
    """``trained`` with the preprocessing in front: Rescaling and Reshape layers."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=raw.shape, name="raw_image")
    x = inputs
    if raw.scale != 1.0:
        x = layers.Rescaling(raw.scale, name="scale_to_unit")(x)
    if raw.shape != model_input:
        x = layers.Reshape(model_input, name="to_model_input")(x)
    return keras.Model(inputs, trained(x), name="hpsearch_model")


def _check_preprocessing(raw: RawInput, splits: Splits) -> None:
    """The in-model preprocessing must give exactly what training saw."""
    n = min(256, len(raw.x_test))
    mine = (raw.x_test[:n].astype("float32") * np.float32(raw.scale)).reshape(
        (n, *splits.input_shape)
    )
    if len(raw.x_test) != len(splits.x_test) or not np.allclose(
        mine, splits.x_test[:n], atol=1e-6
    ):
        raise ExportError(
            "the dataset's preprocessing cannot be expressed as Rescaling + Reshape layers "
            f"(raw shape {list(raw.shape)}, scale {raw.scale:g}); not exported"
        )


# --------------------------------------------------------------------------------------------
# Selection: top N trials × K seeds on the training split
# --------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A configuration re-trained with several seeds on the training split.

    ``val`` holds the objective's metric on the validation split per seed (the accuracy for
    ``val_accuracy``, the loss for ``val_loss``), ``test`` the test accuracy per seed. The
    record keeps the names ``search_val_accuracy``/``val_mean`` for the objective's value
    (stored studies depend on them); ``metric`` says which metric it is.
    """

    trial: int
    search_val_accuracy: float
    search_test_accuracy: float | None
    config: str
    epochs: int
    seeds: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    metric: str = DEFAULT_METRIC

    @property
    def val_mean(self) -> float:
        """Mean of the objective's metric on the validation split over the seeds."""
        return float(np.mean(self.val))

    @property
    def val_std(self) -> float | None:
        """Sample standard deviation (ddof=1) of the validation metric; None with one seed."""
        return _std(self.val)

    @property
    def test_mean(self) -> float:
        """Mean test accuracy over the seeds."""
        return float(np.mean(self.test))

    @property
    def test_std(self) -> float | None:
        """Sample standard deviation (ddof=1) of the test accuracy; None with one seed."""
        return _std(self.test)

    def record(self) -> dict[str, Any]:
        """What is stored in the study and in ``hpsearch.json``."""
        return {
            "trial": self.trial,
            "search_val_accuracy": self.search_val_accuracy,
            "search_test_accuracy": self.search_test_accuracy,
            "val_mean": self.val_mean,
            "val_std": self.val_std,
            "test_mean": self.test_mean,
            "test_std": self.test_std,
            "seeds": self.seeds,
            "val": self.val,
            "test": self.test,
            "epochs": self.epochs,
            "trained_on": "train",
            "metric": self.metric,
            "config": self.config,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def top_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials by the study's objective, in its direction (the highest
    validation accuracy, the lowest ``val_loss``; ties: lower number).

    Only complete trials: a pruned trial never trained for the full budget, so its last value
    is not comparable.

    Raises:
        StorageError: If the study has no complete trial.
    """
    best = best_complete_trials(study, n)
    if not best:
        raise StorageError(
            f"study {study.study_name!r} has no complete trial yet; run workers first"
        )
    return best


def _epochs_of(trial: FrozenTrial, spec: StudySpec) -> int:
    return int(trial.user_attrs.get(attr_names.EPOCHS) or spec.budget.max_epochs)


class _Epochs:
    """Counts epochs across all runs for the progress hook."""

    def __init__(self, total: int, hook: ProgressHook | None) -> None:
        self.total, self.done, self.hook = total, 0, hook

    def callback(self, what: str, epochs: int) -> Any:
        import keras

        counter = self

        class Report(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                counter.done += 1
                if counter.hook is not None:
                    counter.hook(counter.done, counter.total, f"{what} epoch {epoch + 1}/{epochs}")

        return Report()


def _train(
    spec: StudySpec,
    config: TrialConfig,
    splits: Splits,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    seed: int,
    callback: Any,
) -> tuple[Any, float, bool]:
    """Build (the study's builder), seed and train one model.

    Returns:
        The model, its last training loss, and whether it outputs logits (not probabilities).
    """
    import keras

    from hpsearch.model import compile_model, make_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    built = make_model(config, splits.input_shape, splits.n_classes, spec.python_path, seed)
    model = built.model
    compile_model(model, config.train, spec.objective.metric, built.from_logits)
    history = model.fit(
        x, y, batch_size=config.train.batch_size, epochs=epochs, verbose=0, callbacks=[callback]
    )
    loss = float(history.history["loss"][-1])
    if not math.isfinite(loss):
        _logger.warning("seed %d: the training loss ended as %s", seed, loss)
    return model, loss, built.from_logits


def select(
    study: optuna.Study,
    spec: StudySpec,
    *,
    seeds: int,
    top: int,
    counter: _Epochs | None = None,
    store: bool = True,
) -> list[Candidate]:
    """Re-train the ``top`` best complete trials with ``seeds`` seeds each on the train split.

    Args:
        study: The study (its trials and, when ``store``, where the figures go).
        spec: Its spec (data and search space).
        seeds: Seeds per candidate: 0, 1, ..., seeds-1, the same for every candidate.
        top: How many of the best complete trials (by the objective) to re-train.
        counter: Progress across runs (internal).
        store: Write each candidate's figures to the study (``hpsearch:retrain:<trial>``).
    Returns:
        The candidates, best mean of the objective's metric on the validation split first
        (in the study's direction; ties: the search's order).
    """
    from hpsearch.space import config_from_params

    trials = top_trials(study, top)
    splits = _splits(spec)
    counter = counter or _Epochs(sum(_epochs_of(t, spec) for t in trials) * seeds, None)
    out = []
    for t in trials:
        config = config_from_params(spec, t.params)
        epochs = _epochs_of(t, spec)
        search_test = t.user_attrs.get(attr_names.TEST_ACCURACY)
        cand = Candidate(
            t.number,
            float(t.value or 0.0),
            None if search_test is None else float(search_test),
            config.summary(),
            epochs,
            metric=spec.objective.metric,
        )
        for seed in range(seeds):
            what = f"trial {t.number} seed {seed + 1}/{seeds}"
            model, _, _ = _train(
                spec,
                config,
                splits,
                splits.x_train,
                splits.y_train,
                epochs,
                seed,
                counter.callback(what, epochs),
            )
            val = _metric(model, splits.x_val, splits.y_val, spec.objective.metric)
            test = _accuracy(model, splits.x_test, splits.y_test)
            cand.seeds.append(seed)
            cand.val.append(float(val))
            cand.test.append(float(test))
            _logger.info("%s: val %.4f test %.4f", what, val, test)
        if store:
            study.set_user_attr(f"{RETRAIN_ATTR_PREFIX}{t.number}", cand.record())
        out.append(cand)
    order = {c.trial: i for i, c in enumerate(out)}
    sign = 1.0 if spec.objective.direction == "minimize" else -1.0
    return sorted(out, key=lambda c: (sign * c.val_mean, order[c.trial]))


# --------------------------------------------------------------------------------------------
# hpsearch best
# --------------------------------------------------------------------------------------------


def export_best(
    study: optuna.Study,
    spec: StudySpec,
    out_dir: Path | None,
    *,
    seeds: int = 1,
    top: int = 1,
    force: bool = False,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    """Pick the best configuration (re-trained with several seeds if asked) and export it.

    With the defaults (``seeds=1, top=1``) the search's best trial is re-trained once on
    train+validation and exported, with no selection step. See the module docstring.

    Args:
        study: A study with at least one complete trial.
        spec: Its spec.
        out_dir: The export folder (created); None re-trains and stores the selection only.
        seeds: Seeds per candidate in the selection. Defaults to `1`.
        top: Candidates in the selection: the best complete trials by the objective.
            Defaults to `1`.
        force: Replace an existing export in ``out_dir``. Links are refused even then.
        progress: Called after every epoch of every training run.
    Returns:
        The ``hpsearch.json`` record (also written to ``out_dir``).
    Raises:
        ExportError: If ``out_dir`` is a link, holds links or an export (without ``force``).
        StorageError: If the study has no complete trial yet.
    """
    from hpsearch.space import config_from_params

    if seeds < 1 or top < 1:
        raise ExportError(
            f"--seeds and --top must be at least 1. Received: seeds={seeds}, top={top}. "
            "Example: --seeds 3 --top 3"
        )
    if out_dir is not None:
        check_export_dir(out_dir, force=force)
    selecting = seeds > 1 or top > 1
    if out_dir is None and not selecting:
        raise ExportError(
            "nothing to do: give --export DIR to export the best model, or --seeds/--top to "
            "re-train the best trials. Example: --export best/ --seeds 3 --top 3"
        )
    trials = top_trials(study, top if selecting else 1)
    total = sum(_epochs_of(t, spec) for t in trials) * seeds if selecting else 0
    by_number = {t.number: t for t in trials}
    final_epochs = _epochs_of(trials[0], spec)
    counter = _Epochs(total + (final_epochs if out_dir is not None else 0), progress)
    if progress is not None:
        progress(0, counter.total, "loading data")
    candidates: list[Candidate] = []
    if selecting:
        candidates = select(study, spec, seeds=seeds, top=top, counter=counter)
        picked = by_number[candidates[0].trial]
        if out_dir is not None:  # the export trains the pick, not necessarily the first
            counter.total += _epochs_of(picked, spec) - final_epochs
    else:
        picked = trials[0]
    selection = None
    if selecting:
        selection = {
            "picked_trial": picked.number,
            "picked_by": f"mean {ranked_by(spec.objective.metric, spec.objective.direction)} "
            "on the validation split over the seeds (test accuracy never used)",
            "search_best_trial": trials[0].number,
            "seeds": list(range(seeds)),
            "top": top,
            "trained_on": f"train ({len(_splits(spec).x_train)} images)",
            "std": "sample standard deviation (ddof=1) over the seeds",
            "candidates": [c.record() for c in candidates],
        }
    record: dict[str, Any] = {
        "study": study.study_name,
        "trial": picked.number,
        "params": picked.params,
        "config": config_from_params(spec, picked.params).to_dict(),
        "selection": selection,
    }
    if out_dir is None:
        return record
    exported, model = _export(study, spec, picked, counter)
    record.update(exported)
    if selection is not None:
        record["seeds"]["selection_seeds"] = selection["seeds"]
    study_toml = str(stored_attr(study, ATTR_SPEC_TOML) or "")
    text = json.dumps(record, indent=2, default=str) + "\n"
    _write_files(
        out_dir,
        {
            "model.keras": lambda p: model.save(p),
            "hpsearch.json": lambda p: p.write_text(text),
            "study.toml": lambda p: p.write_text(study_toml),
        },
        force,
    )
    return record


def _export(
    study: optuna.Study, spec: StudySpec, trial: FrozenTrial, counter: _Epochs
) -> tuple[dict[str, Any], Any]:
    """Train ``trial``'s configuration on train+val, wrap it for raw input, test it, save it."""
    from hpsearch.model import compile_model
    from hpsearch.space import config_from_params

    config = config_from_params(spec, trial.params)
    epochs = _epochs_of(trial, spec)
    seed = int(trial.user_attrs.get(attr_names.SEED, spec.sampler.seed or 0))
    splits = _splits(spec)
    raw = load_raw_input(spec.data, tuple(spec.python_path))
    _check_preprocessing(raw, splits)
    x = np.concatenate([splits.x_train, splits.x_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    _logger.info("re-training trial %d (%s) for %d epochs", trial.number, config.summary(), epochs)
    what = f"export: trial {trial.number} on train+val"
    trained, loss, from_logits = _train(
        spec, config, splits, x, y, epochs, seed, counter.callback(what, epochs)
    )
    model = raw_input_model(trained, raw, splits.input_shape)
    # so that a loaded model can `evaluate(x_raw, y)` as is (loss from the trained model's output)
    compile_model(model, config.train, "val_accuracy", from_logits)
    model.optimizer.build(model.trainable_variables)  # saved and loaded with the same variables
    test_acc = raw_accuracy(model, raw.x_test, raw.y_test)
    search_test = trial.user_attrs.get(attr_names.TEST_ACCURACY)
    record = {
        "metrics": {
            "search_val_accuracy": trial.value,
            "search_test_accuracy": search_test,
            "retrained_train_loss": loss,
            "retrained_test_accuracy": test_acc,
            "retrained_test_accuracy_on": f"raw test images ({len(raw.x_test)}), this model",
        },
        "input": raw.describe(splits.input_shape),
        "output": {
            "shape": [None, splits.n_classes],
            "meaning": (
                "class scores (logits); the label is the argmax"
                if from_logits
                else "class probabilities (softmax); the label is the argmax"
            ),
            "n_classes": splits.n_classes,
            "class_names": raw.class_names,
        },
        "dataset": spec.data.dataset,
        "epochs": epochs,
        "trained_on": f"train+validation ({len(x)} images)",
        "seeds": {"split_seed": spec.data.split_seed, "model_seed": seed},
        "n_params": int(trained.count_params()),
        "versions": package_versions(),
        "git": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return record, model


def _splits(spec: StudySpec) -> Splits:
    """The study's data splits (cached per process by :func:`hpsearch.data.load_splits`)."""
    return load_splits(spec.data, tuple(spec.python_path))


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy, whatever else the model was compiled with (``evaluate`` returns a dict)."""
    return _metric(model, x, y, "val_accuracy")


def _metric(model: Any, x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """``metric`` (``val_loss``, ``val_accuracy``, ...) of ``model`` on ``(x, y)``."""
    scores = model.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)
    return float(scores[metric.removeprefix("val_")])


def raw_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on raw images: argmax of its predictions against the labels."""
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == np.asarray(y).reshape(-1)))
