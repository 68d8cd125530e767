"""The whole trial loop once, fast: a worker trains one tiny CNN on real Fashion-MNIST images.

This is the fast suite's end-to-end check (the slow suite has the faults, pruning and many
workers): sampling, one transaction of start-of-trial writes, per-epoch reports and
checkpoints, test accuracy, and the result other workers read.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from hpsearch.spec import load_spec
from hpsearch.storage import cached, get_storage
from hpsearch.study import launch_study
from hpsearch.worker import run_worker
from tests.conftest import slow_trial_spec

pytestmark = pytest.mark.usefixtures("fashion_mnist_available")


def test_one_tiny_trial_end_to_end(tmp_path: Path, sqlite_url: str) -> None:
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(slow_trial_spec("tiny", train_subset=300, max_epochs=2))
    launch_study(load_spec(study_file), study_file.read_text(), sqlite_url)
    result = run_worker("tiny", sqlite_url, n_trials=1, worker_index=0)
    assert result.trials_run == 1
    other = optuna.load_study(study_name="tiny", storage=cached(get_storage(sqlite_url)))
    (trial,) = other.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2]
    assert trial.value == trial.intermediate_values[2]
    attrs = trial.user_attrs
    assert 0.0 < attrs["hpsearch:test_accuracy"] <= 1.0
    assert attrs["hpsearch:epochs"] == 2 and attrs["hpsearch:wall_time_s"] > 0
    assert attrs["hpsearch:config"].startswith("conv 16") and str(attrs["hpsearch:pid"]) == str(
        os.getpid()
    )
    assert "hpsearch:fail_reason" not in attrs
    checkpoints = Path(os.environ["HPSEARCH_RUNS_DIR"]) / "tiny" / "checkpoints"
    assert not any(checkpoints.glob("*"))  # removed once the trial finished


def test_data_fractions_grow_the_training_set_epoch_by_epoch(tmp_path: Path) -> None:
    """``pruner.data_fractions = [0.25, 0.5]``: epoch 1 trains on a quarter of the images,
    epoch 2 on half, epoch 3 on all; a resumed trial picks the schedule up at its next epoch,
    and a callback that stops training early is obeyed."""
    import keras
    import numpy as np

    from hpsearch.data import Splits
    from hpsearch.objective import fit_by_data_fraction
    from hpsearch.spec import spec_from_dict

    text = slow_trial_spec("frac", train_subset=400, max_epochs=3)
    text = text.replace(
        '[pruner]\nkind = "none"', '[pruner]\nkind = "none"\ndata_fractions = [0.25, 0.5]'
    )
    (tmp_path / "frac.toml").write_text(text)
    spec = load_spec(tmp_path / "frac.toml")
    assert spec.pruner.data_fractions == [0.25, 0.5]
    rng = np.random.default_rng(0)
    x = rng.random((400, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 400).astype("int32")
    splits = Splits(x, y, x[:40], y[:40], x[:40], y[:40])

    class Steps(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self, stop_after: int | None = None) -> None:
            super().__init__()
            self.seen: list[tuple[int, int]] = []
            self.stop_after = stop_after

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.seen.append((epoch + 1, self.params["steps"]))  # batches of 50 images
            if self.stop_after == epoch + 1:
                self.model.stop_training = True

    def run(initial_epoch: int, steps: Steps) -> list[tuple[int, int]]:
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(10, activation="softmax")])  # fmt: skip
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        fit_by_data_fraction(
            model, splits, spec, initial_epoch, batch_size=50, callbacks=[steps], verbose=0,
            validation_data=(splits.x_val, splits.y_val),
        )  # fmt: skip
        return steps.seen

    assert run(0, Steps()) == [(1, 2), (2, 4), (3, 8)]
    assert run(1, Steps()) == [(2, 4), (3, 8)]  # resumed after epoch 1
    assert run(0, Steps(stop_after=1)) == [(1, 2)]
    with pytest.raises(Exception, match="data_fractions must not shrink"):
        spec_from_dict({**spec.model_dump(mode="json"), "pruner": {"data_fractions": [0.5, 0.25]}})


def test_the_last_epoch_is_reported_but_never_pruned() -> None:
    """A trial that trained to the end of its schedule completes: pruning it after its last epoch
    (Hyperband's rung at epoch 3 of a 3-epoch study did) throws the result away for no saving.
    A pruner that prunes every value below 1.0 still prunes any earlier epoch."""
    from hpsearch.objective import pruning_callback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(1.0))
    early, last = study.ask(), study.ask()
    with pytest.raises(optuna.TrialPruned):
        pruning_callback(early, "val_accuracy", last_epoch=3).on_epoch_end(
            1, {"val_accuracy": 0.8}
        )
    pruning_callback(last, "val_accuracy", last_epoch=3).on_epoch_end(2, {"val_accuracy": 0.8})
    study.tell(last, 0.8)
    assert study.trials[last.number].state == TrialState.COMPLETE
    assert study.trials[last.number].intermediate_values == {3: 0.8}


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1.0) | st.sampled_from([0.5, 0.9]), min_size=1, max_size=25),
    top=st.integers(1, 6),
    maximize=st.booleans(),
)
def test_test_top_never_leaves_out_one_of_the_best_at_the_end(
    values: list[float], top: int, maximize: bool
) -> None:
    """``objective.test_top = N`` decides as each trial completes; whatever the order of values
    (ties included), every trial among the N best at the end was tested, and a trial left out
    had N better ones already."""
    from hpsearch.objective import ranks_in_top

    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    tested = []
    for value in values:
        tested.append(ranks_in_top(study, value, top, maximize))
        study.add_trial(optuna.trial.create_trial(value=value))

    def better(a: float, b: float) -> bool:
        return a > b if maximize else a < b

    for i, value in enumerate(values):
        if sum(better(v, value) for v in values) < top:  # among the N best at the end
            assert tested[i], (i, value)
        if not tested[i]:
            assert sum(better(v, value) for v in values[:i]) >= top


def test_test_top_tests_a_trial_only_if_it_ranks_among_the_best(
    tmp_path: Path, sqlite_url: str
) -> None:
    """With ``test_top = 2`` and one better trial already in the study, the first trial trained
    is tested and the next only if it beats it; one left out says why instead."""
    text = slow_trial_spec("top", train_subset=200, max_epochs=1).replace(
        "n_trials = 1", "n_trials = 3"
    )
    study_file = tmp_path / "top.toml"
    study_file.write_text(text + "[objective]\ntest_top = 2\n")
    spec = load_spec(study_file)
    assert spec.objective.test_top == 2
    launch_study(spec, study_file.read_text(), sqlite_url)
    study = optuna.load_study(study_name="top", storage=cached(get_storage(sqlite_url)))
    study.add_trial(optuna.trial.create_trial(value=0.999))  # a better trial, e.g. from before
    run_worker("top", sqlite_url, n_trials=2, worker_index=0)
    planted, first, second = study.get_trials()
    assert first.state == second.state == TrialState.COMPLETE
    assert 0.0 < first.user_attrs["hpsearch:test_accuracy"] <= 1.0
    assert "hpsearch:test_skipped" not in first.user_attrs
    if second.value >= first.value:  # not beaten by the first
        assert "hpsearch:test_accuracy" in second.user_attrs
    else:
        assert "hpsearch:test_accuracy" not in second.user_attrs
        assert "objective.test_top = 2" in second.user_attrs["hpsearch:test_skipped"]
