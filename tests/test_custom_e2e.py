"""Your own model and data, end to end with real training (tiny: hundreds of images, 1-3 epochs).

A custom builder (examples/custom_cnn/mymodels.py, a tiny ResNet) on a folder of real
Fashion-MNIST PNGs with 2 local workers, pruning and a minimized val_loss; ``best --export``
reloaded in a fresh process; SIGTERM mid-trial resuming the custom model from its checkpoint
with a loader function; and a builder that fails inside trials.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from examples.custom_cnn.make_image_folder import make_image_folder
from hpsearch.errors import HpsearchError
from hpsearch.spec import load_spec
from hpsearch.study import launch_study, load_study
from hpsearch.worker import run_worker
from tests.conftest import ROOT, run_cli
from tests.test_worker import epochs_logged, start_worker, wait_for_epochs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_available")]

EXAMPLE = ROOT / "examples" / "custom_cnn"

FOLDER_STUDY = """
name = "resnet_folder"
[model]
builder = "mymodels:build_resnet"
[data]
dataset = "images"
image_size = [28, 28]
color_mode = "grayscale"
val_fraction = 0.2
[objective]
metric = "val_loss"
[budget]
n_trials = 6
max_epochs = 2
[sampler]
seed = 3
[pruner]
kind = "median"
n_startup_trials = 2
n_warmup_steps = 0
[search.model]
depth = 1
width = {choices = [8, 16]}
dropout = 0.0
[search.optimizer]
name = "adam"
lr = {low = 1e-6, high = 1e-2, log = true}
weight_decay = 0.0
[search.training]
batch_size = 16
"""
# Two good configurations first, then ones that barely learn: the median pruner stops those.
GOOD_THEN_BAD = "".join(
    f'[[warm_start]]\n"model.width" = {w}\n"optimizer.lr" = {lr}\n'
    for w, lr in ((8, 0.005), (16, 0.004), (8, 1e-6), (16, 1e-6), (8, 2e-6), (16, 2e-6))
)


def test_custom_builder_on_an_image_folder_with_two_workers_pruning_and_export(
    tmp_path: Path,
) -> None:
    study_dir = tmp_path / "project"
    make_image_folder(study_dir / "images", per_class=50, test_per_class=10)
    shutil.copy(EXAMPLE / "mymodels.py", study_dir / "mymodels.py")
    (study_dir / "study.toml").write_text(FOLDER_STUDY + GOOD_THEN_BAD)
    elsewhere = tmp_path / "elsewhere"  # workers start in another directory
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    env = {"HPSEARCH_RUNS_DIR": str(tmp_path / "runs")}
    run = run_cli(
        "run", "../project/study.toml", "--workers", "2", "--storage", url, cwd=elsewhere, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ranked by val_loss (lower is better)" in run.stdout
    assert "no literature baselines" in run.stdout

    study, spec = load_study("resnet_folder", url, heartbeat=False)
    assert spec.data.dataset == str(study_dir / "images")  # stored resolved
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert len(trials) == 6 and TrialState.FAIL not in states, [
        (t.number, t.state, t.user_attrs.get("hpsearch:error")) for t in trials
    ]
    assert states.count(TrialState.PRUNED) >= 1, [
        (t.number, t.intermediate_values) for t in trials
    ]
    assert len({t.user_attrs["hpsearch:pid"] for t in trials}) == 2  # both workers trained
    best = study.best_trial
    assert best.params["optimizer.lr"] > 1e-3 and best.value < 2.2  # lowest val_loss wins
    assert best.user_attrs["hpsearch:config"].startswith("build_resnet depth=1")
    assert 0.3 < best.user_attrs["hpsearch:test_accuracy"] <= 1.0

    out = tmp_path / "best"
    export = run_cli("best", "resnet_folder", "--storage", url, "--export", str(out), env=env)
    assert export.returncode == 0, export.stderr[-3000:]
    record = json.loads((out / "hpsearch.json").read_text())
    check = (
        "import json, sys, keras\n"
        "from hpsearch.spec import load_spec\n"
        "from hpsearch.data import load_splits\n"
        f"spec = load_spec({str(study_dir / 'study.toml')!r})\n"
        "splits = load_splits(spec.data)\n"
        f"model = keras.saving.load_model({str(out / 'model.keras')!r})\n"
        "r = model.evaluate(splits.x_test, splits.y_test, verbose=0, return_dict=True)\n"
        "print(json.dumps({'acc': r['accuracy'], 'layers': [x.name for x in model.layers]}))\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    reloaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert "tiny_resnet" in reloaded["layers"]  # the custom model, behind the raw-input layers
    assert abs(reloaded["acc"] - record["metrics"]["retrained_test_accuracy"]) < 1e-6


LOADER = """
from hpsearch.data import load_arrays

def load():
    a = load_arrays("fashion_mnist")
    return (a.x_train[:3000], a.y_train[:3000]), (a.x_test[:300], a.y_test[:300])
"""

LOADER_STUDY = """
name = "resnet_loader"
[model]
builder = "mymodels:build_resnet"
[data]
loader = "term_data:load"
val_fraction = 0.05
[budget]
n_trials = 1
max_epochs = 6
[pruner]
kind = "none"
[search.model]
depth = 1
width = 8
dropout = 0.0
[search.optimizer]
name = "adam"
lr = 0.003
weight_decay = 0.0
[search.training]
batch_size = 32
"""


def test_sigterm_mid_trial_resumes_the_custom_model_from_its_checkpoint(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE / "mymodels.py", tmp_path / "mymodels.py")
    (tmp_path / "term_data.py").write_text(LOADER)
    path = tmp_path / "study.toml"
    path.write_text(LOADER_STUDY)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    launch_study(load_spec(path), path.read_text(), url)
    worker = start_worker("resnet_loader", url)  # from the repository root, not tmp_path
    done = wait_for_epochs("resnet_loader", 0, at_least=2, timeout=300)
    worker.send_signal(signal.SIGTERM)
    first, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, first
    checkpointed = wait_for_epochs("resnet_loader", 0, at_least=done, timeout=1)
    resumed = start_worker("resnet_loader", url)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resuming trial 0 after epoch {checkpointed}" in output
    assert epochs_logged(output) == list(range(checkpointed + 1, 7))  # no epoch trained twice
    study, _ = load_study("resnet_loader", url, heartbeat=False)
    interrupted, final = study.get_trials(deepcopy=False)
    assert interrupted.user_attrs["hpsearch:fail_reason"] == "preempted"
    assert final.state == TrialState.COMPLETE and sorted(final.intermediate_values) == list(
        range(1, 7)
    )
    assert final.user_attrs["hpsearch:config"].startswith("build_resnet depth=1 width=8")
    assert final.user_attrs["hpsearch:test_accuracy"] > 0.5


FLAKY_BUILDER = """
import keras
from keras import layers

def build(hp, input_shape, num_classes):
    if hp["depth"] == 2:
        raise ValueError("depth 2 is not implemented yet")
    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten()(inputs)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
"""


def test_builder_failing_inside_trials_fails_them_and_stops_the_worker(
    tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "flaky_models.py").write_text(FLAKY_BUILDER)
    path = tmp_path / "study.toml"
    path.write_text(
        'name = "flaky"\n[model]\nbuilder = "flaky_models:build"\n'
        '[data]\ndataset = "fashion_mnist"\ntrain_subset = 200\n'
        "[budget]\nn_trials = 5\nmax_epochs = 1\nmax_consecutive_failures = 2\n"
        "[search.model]\ndepth = {choices = [1, 2]}\nunits = {choices = [4, 8]}\n"
        '[[warm_start]]\n"model.depth" = 2\n"model.units" = 4\n'
        '[[warm_start]]\n"model.depth" = 2\n"model.units" = 8\n'
    )
    launch_study(load_spec(path), path.read_text(), sqlite_url)  # the first point builds
    with pytest.raises(HpsearchError, match="2 trials in a row failed; last: BuilderError: .*"):
        run_worker("flaky", sqlite_url, worker_index=0)
    study, _ = load_study("flaky", sqlite_url, heartbeat=False)
    failed = study.get_trials(deepcopy=False)
    assert [t.state for t in failed] == [TrialState.FAIL, TrialState.FAIL]
    for t in failed:
        assert t.user_attrs["hpsearch:fail_reason"] == "exception"
        error = t.user_attrs["hpsearch:error"]
        assert "\n" not in error
        assert f"{tmp_path / 'flaky_models.py'}:build raised ValueError: depth 2 is not" in error
    assert os.environ["HPSEARCH_RUNS_DIR"]  # nothing else written: no checkpoints left
    assert not any((Path(os.environ["HPSEARCH_RUNS_DIR"]) / "flaky" / "checkpoints").glob("*"))


def test_python_api_launch_from_a_dict_run_leaderboard_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpsearch

    (tmp_path / "api_data.py").write_text(LOADER.replace("3000", "400").replace(":300]", ":200]"))
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    study = {
        "name": "api",
        "data": {"loader": "api_data:load", "val_fraction": 0.1},
        "budget": {"n_trials": 2, "max_epochs": 1},
        "pruner": {"kind": "none"},
        "search": {
            "activation": "relu",
            "conv": {"n_blocks": 1, "layers_per_block": 1, "filters_base": {"choices": [8, 16]}},
            "dense": {"n_layers": 1, "units": 32},
            "optimizer": {"name": "adam", "lr": 0.003},
        },
    }
    handle = hpsearch.launch(study, storage=url)
    assert handle.created and handle.spec.python_path == [str(tmp_path)]
    result = hpsearch.run_workers(handle.name, workers=1, storage=url)
    assert result.exit_codes == [0]
    board = hpsearch.leaderboard(handle.name, storage=url)
    assert list(board["rank"]) == [1, 2] and set(board["state"]) == {"complete"}
    assert board["value"].is_monotonic_decreasing and (board["metric"] == "val_accuracy").all()
    assert set(board["conv.filters_base"]) <= {8, 16}
    record = hpsearch.export_best(handle.name, tmp_path / "best", storage=url)
    assert (
        record["trial"] == int(board["trial"][0]) and (tmp_path / "best" / "model.keras").exists()
    )
