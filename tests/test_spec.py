"""Study files: the shipped ones load; every kind of mistake gets one precise line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.spec import load_spec
from tests.conftest import STUDIES, run_cli

MINIMAL = """
name = "t"
[data]
dataset = "fashion_mnist"
[budget]
n_trials = 3
max_epochs = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.objective.metric == "val_accuracy"


def test_workshop_warm_start_in_fashion_and_mnist_studies() -> None:
    for name in ("fashion_mnist", "mnist"):
        first = load_spec(STUDIES / f"{name}.toml").warm_start[0]
        assert first["conv.filters_base"] == 32 and first["conv.layers_per_block"] == 2
        assert first["optimizer.name"] == "sgd" and first["optimizer.lr"] == 0.01
        assert first["optimizer.sgd.momentum"] == 0.9 and first["training.batch_size"] == 32
        assert first["conv.dropout"] == 0.25 and first["dense.dropout"] == 0.5


def test_minimal_spec_gets_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.sampler.kind == "tpe" and spec.pruner.kind == "hyperband"
    assert spec.data.val_fraction == 0.1
    assert spec.search.optimizer.name.choices == ["sgd", "adam", "adamw", "rmsprop", "adadelta"]


def test_fingerprint_changes_with_the_spec(tmp_path: Path) -> None:
    a = load_spec(write(tmp_path, MINIMAL))
    b = load_spec(write(tmp_path, MINIMAL.replace("n_trials = 3", "n_trials = 4")))
    assert a.fingerprint() == load_spec(write(tmp_path, MINIMAL)).fingerprint()
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize(
    ("extra", "field", "received", "example"),
    [
        (
            "[search.conv]\nn_blokcs = 2",
            r"`search\.conv\.n_blokcs` is not a known field "
            r"\(valid here: n_blocks,",
            "2",
            r"\[search\.conv\] n_blocks = \{low = 1, high = 3\}",
        ),
        (
            '[search.conv]\nn_blocks = "three"',
            r"`search\.conv\.n_blocks` is invalid: Input "
            "should be a valid integer",
            '"three"',
            r"n_blocks = \{low = 1, high = 3\}",
        ),
        (
            "[search.dense]\nunits = {choices = []}",
            r"`search\.dense\.units` is invalid: the "
            "choice list is empty",
            r"\{choices = \[\]\}",
            r"units = \{choices = \[64, 128, 256\]\}",
        ),
        (
            "[search.conv]\nn_blocks = {low = 4, high = 2}",
            r"`search\.conv\.n_blocks` is invalid: "
            "low must be <= high",
            r"\{low = 4, high = 2\}",
            "n_blocks = ",
        ),
        (
            "[search.optimizer]\nlr = {low = 0.0, high = 0.1, log = true}",
            r"`search\.optimizer\.lr` is invalid: a log range needs low > 0",
            "log = true",
            r"lr = \{low = 0\.0001, high = 0\.1, log = true\}",
        ),
        (
            '[search.optimizer]\nname = {choices = ["sgd", "adamax"]}',
            r"`search\.optimizer\.name\.choices\.1` is invalid: Input should be 'sgd', 'adam'",
            '"adamax"',
            "name = ",
        ),
    ],
    ids=["unknown-key", "wrong-type", "empty-choices", "low-gt-high", "log-zero", "optimizer"],
)
def test_bad_field_gives_one_precise_line(
    tmp_path: Path, extra: str, field: str, received: str, example: str
) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    import re

    assert re.search(field, message), message
    assert re.search(f"Received: .*{received}", message), message
    assert re.search(f"Example: .*{example}", message), message


def test_unknown_dataset_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"`data\.dataset` is not a built-in dataset and no such folder exists\. "
        r"Received: \"imagenet\".*Example: dataset = \"fashion_mnist\" \(built-in: "
        r"fashion_mnist, mnist, cifar10, cifar100\)",
    ):
        load_spec(write(tmp_path, MINIMAL.replace('"fashion_mnist"', '"imagenet"')))


def test_missing_budget_field(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"`budget\.max_epochs` is required\. Received: nothing\. "
        r"Example: max_epochs = 30",
    ):
        load_spec(write(tmp_path, MINIMAL.replace("max_epochs = 2", "")))


def test_missing_table_example_lists_its_required_keys(tmp_path: Path) -> None:
    without_budget = MINIMAL.split("[budget]")[0]
    with pytest.raises(
        SpecError,
        match=r"`budget` is required\. Received: nothing\. "
        r"Example: \[budget\] n_trials = 100, max_epochs = 30$",
    ):
        load_spec(write(tmp_path, without_budget))


def test_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"study\.toml: not valid TOML: .*line 3"):
        load_spec(write(tmp_path, 'name = "t"\n[data]\ndataset = \n'))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.toml: cannot read the study file"):
        load_spec(tmp_path / "nope.toml")


def test_warm_start_must_fit_the_space(tmp_path: Path) -> None:
    base = MINIMAL + "[search.conv]\nn_blocks = {low = 1, high = 2}\n"
    with pytest.raises(
        SpecError,
        match=r"`warm_start\[0\]\.conv\.n_blocks` is outside its "
        r"search dimension\. Received: 5\. Example: n_blocks = \{low = 1, high = 2\}",
    ):
        load_spec(write(tmp_path, base + '[[warm_start]]\n"conv.n_blocks" = 5\n'))
    with pytest.raises(SpecError, match=r"`warm_start\[0\]\.conv\.nblocks` is not a parameter"):
        load_spec(write(tmp_path, base + '[[warm_start]]\n"conv.nblocks" = 1\n'))


def test_filters_schemes_are_exclusive(tmp_path: Path) -> None:
    per_block = load_spec(write(tmp_path, MINIMAL + "[search.conv]\nfilters = {choices = [8]}\n"))
    assert per_block.search.conv.filters_base is None
    with pytest.raises(SpecError, match="give either filters_base"):
        load_spec(write(tmp_path, MINIMAL + "[search.conv]\nfilters = 8\nfilters_base = 8\n"))


@pytest.mark.parametrize("command", ["validate", "launch"])
def test_cli_broken_file_one_line_exit_1_nothing_written(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, MINIMAL + "[search.conv]\nn_blocks = {low = 4, high = 2}\n")
    db = tmp_path / "study.db"
    args = [command, str(path)] + (["--storage", f"sqlite:///{db}"] if command == "launch" else [])
    result = run_cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: `search.conv.n_blocks` is invalid")
    assert not db.exists()
