"""``hpsearch best --export``: re-train the best configuration on train+validation and save it.

The folder gets ``model.keras``, ``hpsearch.json`` (study, trial, parameters, resolved config,
metrics, seeds and package versions) and ``study.toml`` (the study file).
"""

from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from hpsearch.data import load_splits
from hpsearch.errors import StorageError
from hpsearch.model import compile_model, make_model
from hpsearch.space import config_from_params
from hpsearch.spec import StudySpec
from hpsearch.study import ATTR_SPEC_TOML, stored_attr

_logger = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a result (for reproducibility records)."""
    import keras

    out = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for name in ("hpsearch", "keras", "tensorflow", "jax", "optuna", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def export_best(
    study: optuna.Study, spec: StudySpec, out_dir: Path, *, verbose: int = 2
) -> dict[str, Any]:
    """Re-train the best trial's configuration on train+val and save model and metadata.

    It trains for as many epochs as the best trial ran, then evaluates once on the test set.

    Raises:
        StorageError: If the study has no completed trial yet.
    """
    import keras

    try:
        best = study.best_trial
    except ValueError as e:
        raise StorageError(
            f"study {study.study_name!r} has no completed trial yet; run workers first"
        ) from e
    config = config_from_params(spec, best.params)
    epochs = int(best.user_attrs.get("hpsearch:epochs") or spec.budget.max_epochs)
    seed = int(best.user_attrs.get("hpsearch:seed", spec.sampler.seed or 0))
    splits = load_splits(spec.data, tuple(spec.python_path))
    x = np.concatenate([splits.x_train, splits.x_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    keras.utils.set_random_seed(seed)
    built = make_model(config, splits.input_shape, splits.n_classes, spec.python_path, seed)
    model = built.model
    compile_model(model, config.train, spec.objective.metric, built.from_logits)
    _logger.info("re-training trial %d (%s) for %d epochs", best.number, config.summary(), epochs)
    history = model.fit(x, y, batch_size=config.train.batch_size, epochs=epochs, verbose=verbose)
    test = model.evaluate(
        splits.x_test, splits.y_test, batch_size=512, verbose=0, return_dict=True
    )
    test_acc = test["accuracy"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    record = {
        "study": study.study_name,
        "trial": best.number,
        "params": best.params,
        "config": config.to_dict(),
        "metrics": {
            "search_val_accuracy": best.value,
            "search_test_accuracy": best.user_attrs.get("hpsearch:test_accuracy"),
            "retrained_train_loss": float(history.history["loss"][-1]),
            "retrained_test_accuracy": float(test_acc),
        },
        "epochs": epochs,
        "trained_on": f"train+validation ({len(x)} images)",
        "seeds": {"split_seed": spec.data.split_seed, "model_seed": seed},
        "n_params": int(model.count_params()),
        "versions": package_versions(),
    }
    (out_dir / "hpsearch.json").write_text(json.dumps(record, indent=2, default=str))
    (out_dir / "study.toml").write_text(str(stored_attr(study, ATTR_SPEC_TOML) or ""))
    return record
