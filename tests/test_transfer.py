"""``[[warm_start]] from_study``: a new study starts from the best trials of an earlier one.

Real studies on SQLite (made with Optuna's ask/tell and hpsearch's own sampling, no training):
the best trials are mapped into the new space (dropped, clipped or left out, and said so), the
source's direction picks them, and every bad table is one line that writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpsearch import attr_names
from hpsearch.errors import SpecError
from hpsearch.space import sample_config
from hpsearch.spec import load_spec
from hpsearch.study import launch_study
from tests.conftest import STUDIES, run_in_process

# smoke.toml's search, with a narrower learning rate, only adam and no dense.units choice.
TARGET = """
name = "{name}"
[data]
dataset = "fashion_mnist"
val_fraction = 0.05
train_subset = 1000
[budget]
n_trials = 6
max_epochs = 3
[search]
activation = "relu"
[search.conv]
n_blocks = 1
layers_per_block = 1
filters_base = {{choices = [8, 16, 32]}}
filters_growth = 1.0
dropout = {{low = 0.0, high = 0.1}}
[search.dense]
n_layers = 1
units = 64
[search.optimizer]
name = {optimizer}
lr = {{low = 1e-3, high = 5e-3, log = true}}
weight_decay = 0.0
[search.training]
batch_size = {{choices = [32, 64]}}

[[warm_start]]
{warm_start}
"""

# Source trials (value, params): trial numbers 0..3 of study `smoke` (maximize).
SOURCE = [
    (0.70, {"optimizer.name": "adam", "optimizer.lr": 0.003, "dense.units": 64}),
    (0.80, {"optimizer.name": "sgd", "optimizer.lr": 0.002, "dense.units": 64}),
    (0.75, {"optimizer.name": "adam", "optimizer.lr": 0.009, "dense.units": 64}),  # lr > 5e-3
    (0.60, {"optimizer.name": "adam", "optimizer.lr": 0.001, "dense.units": 32}),
]
for _, _params in SOURCE:
    _params["conv.dropout"] = 0.05  # inside both spaces


def make_source(url: str, direction: str = "maximize") -> optuna.Study:
    text = (STUDIES / "smoke.toml").read_text()
    if direction == "minimize":
        text += '\n[objective]\nmetric = "val_loss"\ndirection = "minimize"\n'
    path = Path(url.removeprefix("sqlite:///")).with_name("smoke.toml")
    path.write_text(text)
    spec = load_spec(path)
    study = launch_study(spec, text, url).study
    while study.get_trials(states=(optuna.trial.TrialState.WAITING,)):  # the warm start
        trial = study.ask()
        sample_config(trial, spec.search)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    for value, params in SOURCE:
        study.enqueue_trial(params)
        trial = study.ask()
        sample_config(trial, spec.search)
        study.tell(trial, value)
    return study


def target(tmp_path: Path, warm_start: str, name: str = "next", optimizer: str = '"adam"') -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TARGET.format(name=name, warm_start=warm_start, optimizer=optimizer))
    return path


def queued(url: str, name: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    study = optuna.load_study(study_name=name, storage=url)
    return [
        (t.user_attrs[attr_names.WARM_START_FROM], t.system_attrs["fixed_params"])
        for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    ]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lab.db'}"


def test_best_trials_are_mapped_into_the_new_space(tmp_path: Path, url: str) -> None:
    source = make_source(url)
    numbers = {t.value: t.number for t in source.get_trials() if t.value is not None}
    path = target(tmp_path, 'from_study = "smoke"\ntop = 3')
    launched = launch_study(load_spec(path), path.read_text(), url)
    got = queued(url, "next")
    # Best three by val accuracy: 0.80 (sgd: this study fixes adam, left out), 0.75, 0.70.
    assert [src for src, _ in got] == [f"smoke#{numbers[0.75]}", f"smoke#{numbers[0.70]}"]
    clipped, kept = got[0][1], got[1][1]
    assert clipped["optimizer.lr"] == pytest.approx(0.005)  # 0.009 clipped into [1e-3, 5e-3]
    assert kept["optimizer.lr"] == pytest.approx(0.003)
    assert "dense.units" not in kept and "optimizer.name" not in kept  # fixed here
    assert kept["conv.filters_base"] in (8, 16, 32)
    (line,) = launched.warm_started
    assert line.startswith("warm start from study smoke: 2 of its best 3 trials enqueued")
    assert f"left out: #{numbers[0.80]} (optimizer.name = " in line and "0.009 → 0.005" in line


def test_skip_leaves_out_what_clip_would_change(tmp_path: Path, url: str) -> None:
    make_source(url)
    path = target(tmp_path, 'from_study = "smoke"\ntop = 3\nout_of_range = "skip"')
    launch_study(load_spec(path), path.read_text(), url)
    assert len(queued(url, "next")) == 1  # only the 0.70 trial fits unchanged


def test_source_direction_picks_its_best(tmp_path: Path, url: str) -> None:
    source = make_source(url, direction="minimize")  # values are losses: 0.60 is the best
    best = min((t for t in source.get_trials() if t.value is not None), key=lambda t: t.value)
    path = target(
        tmp_path, 'from_study = "smoke"\ntop = 1', optimizer='{choices = ["adam", "sgd"]}'
    )
    launch_study(load_spec(path), path.read_text(), url)
    assert [src for src, _ in queued(url, "next")] == [f"smoke#{best.number}"]


@pytest.mark.parametrize(
    ("warm_start", "message"),
    [
        (
            'from_study = "nope"',
            "names no study on this storage. Received: 'nope'. Studies here: smoke",
        ),
        ('from_study = "next"', "names this study itself"),
        (
            'from_study = "smoke"\ntop = 0',
            "`warm_start[0].top` must be a whole number from 1 to 100",
        ),
        (
            'from_study = "smoke"\nout_of_range = "wrap"',
            'must be "clip" or "skip". Received: "wrap"',
        ),
        ('from_study = "smoke"\n"optimizer.lr" = 0.01', "cannot stand next to from_study"),
        ('from_study = "../x"', "`warm_start[0].from_study` must be a study name"),
        (
            'from_study = "smoke"\nif_missing = "ignore"',
            '`warm_start[0].if_missing` must be "error" or "skip". Received: "ignore"',
        ),
    ],
)
def test_bad_tables_are_one_line_and_write_nothing(
    tmp_path: Path, url: str, warm_start: str, message: str
) -> None:
    make_source(url)
    path = target(tmp_path, warm_start)
    code, _, stderr = run_in_process("launch", str(path), "--storage", url)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["smoke"]


def test_a_source_without_complete_trials_or_shared_parameters_is_refused(
    tmp_path: Path, url: str
) -> None:
    empty = optuna.create_study(study_name="empty", storage=url)
    path = target(tmp_path, 'from_study = "empty"')
    with pytest.raises(SpecError, match="has no complete trial to start from yet"):
        launch_study(load_spec(path), path.read_text(), url)
    x = optuna.distributions.FloatDistribution(0, 2)
    empty.add_trial(
        optuna.trial.create_trial(value=1.0, params={"x": 1.0}, distributions={"x": x})
    )
    with pytest.raises(SpecError, match="searches none of this study's parameters"):
        launch_study(load_spec(path), path.read_text(), url)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["empty"]


def test_if_missing_skip_starts_without_a_study_that_has_not_run(tmp_path: Path, url: str) -> None:
    """A study file may name a study that has not run yet (the GPU study names the CPU demo):
    with ``if_missing = "skip"`` launch says so and starts without it; once the source has
    complete trials, the next study does start from them."""
    path = target(tmp_path, 'from_study = "smoke"\nif_missing = "skip"')
    code, stdout, stderr = run_in_process("launch", str(path), "--storage", url)
    assert code == 0, stderr
    assert "warm start from study smoke: skipped, no such study on this storage yet" in (
        stdout + stderr
    )
    assert [src for src, _ in queued(url, "next")] == []
    optuna.create_study(study_name="smoke", storage=url)  # there, but nothing complete yet
    path = target(tmp_path, 'from_study = "smoke"\nif_missing = "skip"', name="again")
    (line,) = launch_study(load_spec(path), path.read_text(), url).warm_started
    assert "skipped, it has no complete trial yet" in line
    optuna.delete_study(study_name="smoke", storage=url)
    make_source(url)
    path = target(tmp_path, 'from_study = "smoke"\nif_missing = "skip"', name="later")
    launch_study(load_spec(path), path.read_text(), url)
    assert len(queued(url, "later")) == 3  # 0.75, 0.70, 0.60 (sgd's 0.80 left out)


@pytest.mark.parametrize("transfer_first", [True, False])
def test_warm_starts_queue_in_the_study_files_order(
    tmp_path: Path, url: str, transfer_first: bool
) -> None:
    """Hand-written and ``from_study`` tables enqueue in the order the file lists them, so a
    lab that puts its earlier study first has its best configuration trained first."""
    make_source(url)
    transfer, hand = 'from_study = "smoke"\ntop = 2', '"optimizer.lr" = 0.002'
    first, second = (transfer, hand) if transfer_first else (hand, transfer)
    path = target(tmp_path, f"{first}\n\n[[warm_start]]\n{second}")
    launch_study(load_spec(path), path.read_text(), url)
    study = optuna.load_study(study_name="next", storage=url)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    sources = [t.user_attrs.get(attr_names.WARM_START_FROM, "hand")[:6] for t in waiting]
    assert sources == (["smoke#", "hand"] if transfer_first else ["hand", "smoke#"])
