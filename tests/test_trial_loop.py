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
