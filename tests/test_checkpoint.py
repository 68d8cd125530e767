"""Checkpoints: a fresh model of the same configuration resumes exactly where training stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpsearch.model import ModelConfig, TrainConfig, build_model, compile_model
from hpsearch.objective import Checkpoint, CheckpointState
from tests.conftest import ROOT

MODEL = ModelConfig(
    conv_filters=((8,),), kernel_size=3, batch_norm=True, dense_units=(16,), dense_dropout=0.2
)


def trained(config: TrainConfig, steps: int) -> object:
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model = build_model(MODEL, (12, 12, 1), 3, seed=0)
    compile_model(model, config)
    model.fit(x, y, batch_size=64 // steps, epochs=1, verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_restore_gives_back_weights_optimizer_state_and_progress(
    tmp_path: Path, optimizer: str
) -> None:
    import keras

    momentum = 0.9 if optimizer == "sgd" else None
    config = TrainConfig(optimizer=optimizer, lr=0.01, momentum=momentum, batch_size=16)
    model = trained(config, steps=4)
    state = CheckpointState(epochs_done=3, wall_time_s=12.5, val_accuracy=0.81)
    Checkpoint(tmp_path).save(model, state)

    fresh = build_model(MODEL, (12, 12, 1), 3, seed=1)  # other initial weights
    compile_model(fresh, config)
    assert Checkpoint(tmp_path).restore(fresh) == state
    for saved, restored in zip(model.weights, fresh.weights, strict=True):  # incl. BN statistics
        np.testing.assert_array_equal(
            *map(keras.ops.convert_to_numpy, (restored.value, saved.value))
        )
    saved_opt = [keras.ops.convert_to_numpy(v.value) for v in model.optimizer.variables]
    fresh_opt = [keras.ops.convert_to_numpy(v.value) for v in fresh.optimizer.variables]
    assert (
        int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 4
    )  # the step count came back too
    for a, b in zip(saved_opt, fresh_opt, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "state.json").exists() and not list(tmp_path.glob("*.tmp.*"))


@pytest.mark.slow
def test_no_checkpoint_is_none_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=16)
    assert Checkpoint(tmp_path / "none").restore(trained(config, steps=1)) is None
    Checkpoint(tmp_path).save(trained(config, steps=1), CheckpointState(1, 1.0, 0.5))
    other = build_model(
        ModelConfig(conv_filters=((4,), (4,)), dense_units=(8,)), (12, 12, 1), 3, seed=0
    )
    compile_model(other, config)
    with pytest.raises(ValueError, match="saved from another configuration"):
        Checkpoint(tmp_path).restore(other)


@pytest.mark.jax
def test_checkpoints_round_trip_on_jax() -> None:
    """The same tests with KERAS_BACKEND=jax (the backend is fixed when Keras is imported)."""
    pytest.importorskip("jax", reason="jax missing: run `make install`")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--all",  # the round trips are marked slow
            __file__,
            "-k",
            "not on_jax",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 passed" in result.stdout
