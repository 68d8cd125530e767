"""Your own model and data: builder and [search.model], folders, loaders, metric, bad input.

Fast tests check the study file, the search space and the one-line errors (a few build one
tiny Keras model). The slow ones (tests/test_custom_e2e.py) train for real.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from hpsearch.errors import DataError, SpecError
from hpsearch.ranking import Row, rank
from hpsearch.space import config_from_params, first_point, first_values, param_dimensions
from hpsearch.spec import load_spec
from hpsearch.usercode import check_study_runs, import_function
from tests.conftest import run_cli

CUSTOM = """
name = "custom"
[model]
builder = "{module}:build"
[data]
dataset = "fashion_mnist"
[budget]
n_trials = 2
max_epochs = 1
[search.model]
depth = {{choices = [1, 2]}}
width = {{low = 8, high = 32, step = 8}}
dropout = {{low = 0.0, high = 0.5}}
kind = {{choices = ["plain", "res"]}}
[search.optimizer]
name = "adam"
lr = 0.001
[[warm_start]]
"model.depth" = 2
"model.width" = 16
"""

BUILDER = """
import keras
from keras import layers

def build(hp, input_shape, num_classes):
    {body}
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(hp["width"], 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense({units}, activation="softmax")(x))
"""


def write_study(tmp_path: Path, module: str, extra: str = "", **builder: str) -> Path:
    """A study file with a builder module next to it (a unique module name per test)."""
    (tmp_path / f"{module}.py").write_text(
        BUILDER.format(body=builder.get("body", "pass"), units=builder.get("units", "num_classes"))
    )
    path = tmp_path / "study.toml"
    path.write_text(CUSTOM.format(module=module) + extra)
    return path


def test_builder_parameters_are_searched_under_model_names(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path, "b_names"))
    dims = param_dimensions(spec.search, spec.model.builder)
    assert [n for n in dims if n.startswith("model.")] == [
        "model.depth",
        "model.width",
        "model.dropout",
        "model.kind",
    ]
    assert not any(n.startswith(("conv.", "dense.", "activation")) for n in dims)
    params = first_values(spec)
    params.update({"model.depth": 2, "model.width": 24, "model.dropout": 0.1, "model.kind": "res"})
    config = config_from_params(spec, params)
    hp = config.hp()
    assert {k: hp[k] for k in ("depth", "width", "dropout", "kind")} == {
        "depth": 2,
        "width": 24,
        "dropout": 0.1,
        "kind": "res",
    }
    assert hp["optimizer.name"] == "adam" and hp["optimizer.lr"] == 0.001
    assert hp["training.batch_size"] in (32, 64, 128) and hp["augment.flip"] is False
    assert config.model is None and config.summary().startswith("build depth=2 width=24")
    assert first_point(spec).params == {"depth": 1, "width": 8, "dropout": 0.0, "kind": "plain"}


def test_builtin_cnn_goes_through_the_same_builder_interface() -> None:
    from hpsearch.model import WORKSHOP_CNN, build_cnn

    hp = WORKSHOP_CNN.hp()
    assert hp["conv_filters"] == ((32, 64),) and hp["optimizer.name"] == "sgd"
    assert build_cnn(hp, (28, 28, 1), 10).count_params() == 1_199_882


def test_paths_resolve_against_the_study_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "x.npz", x_train=np.zeros((4, 8, 8)), y_train=np.arange(4))
    path = write_study(tmp_path, "b_paths")
    path.write_text(path.read_text().replace('"fashion_mnist"', '"data/x.npz"'))
    monkeypatch.chdir("/")
    spec = load_spec(path)
    assert spec.data.dataset == str(tmp_path / "data" / "x.npz")
    assert spec.python_path == [str(tmp_path)]


@pytest.mark.parametrize(
    ("old", "new", "field", "example"),
    [
        ('"fashion_mnist"', '"missing_folder"', "data.dataset", 'dataset = "images/"'),
        ('"fashion_mnist"', '"missing.npz"', "data.dataset", 'dataset = "data.npz"'),
        ('name = "custom"', 'python_path = ["nope"]\nname = "c"', "python_path", '["src"]'),
        ('"b_bad:build"', '"build_resnet"', "model.builder", '"mymodels:build_resnet"'),
        ("{choices = [1, 2]}", "{choices = []}", "search.model", "depth"),
        ("[search.model]", "[search.conv]\nn_blocks = 2\n[search.model]", "search.conv", "["),
        ("[budget]", '[objective]\nmetric = "val loss"\n[budget]', "objective.metric", "val_"),
    ],
    ids=["no-folder", "no-npz", "python-path", "reference", "empty-dim", "conv", "metric"],
)
def test_bad_custom_field_is_one_line(
    tmp_path: Path, old: str, new: str, field: str, example: str
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(CUSTOM.format(module="b_bad").replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: `{field}"), message
    assert "Received: " in message and re.search(f"Example: .*{re.escape(example)}", message)


def test_search_model_without_builder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(CUSTOM.format(module="x").replace('[model]\nbuilder = "x:build"\n', ""))
    with pytest.raises(SpecError, match=r"`search.model.depth` is a parameter of a custom"):
        load_spec(path)


def test_objective_direction_follows_the_metric(tmp_path: Path) -> None:
    path = write_study(tmp_path, "b_dir", '[objective]\nmetric = "val_loss"\n')
    assert load_spec(path).objective.direction == "minimize"
    path = write_study(tmp_path, "b_dir", '[objective]\nmetric = "val_auc"\n')
    assert load_spec(path).objective.direction == "maximize"


def test_ranking_follows_the_direction() -> None:
    rows = [
        Row("trial", None, v, study="s", trial=i, state="complete")
        for i, v in enumerate([0.5, 0.2, 0.9])
    ]
    assert [r.trial for r in rank(rows, [], direction="minimize")] == [1, 0, 2]
    assert [r.trial for r in rank(rows, [], direction="maximize")] == [2, 0, 1]


def test_missing_module_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        import_function("no_such_module_xyz:build", [str(tmp_path)])
    assert f"no module 'no_such_module_xyz' in {tmp_path}, on PYTHONPATH" in str(info.value)
    (tmp_path / "b_nofunc.py").write_text("def other(): pass\n")
    with pytest.raises(
        SpecError, match=r"b_nofunc.py: no function 'build'.*Functions there: other"
    ):
        import_function("b_nofunc:build", [str(tmp_path)])
    (tmp_path / "b_syntax.py").write_text("def build(:\n")
    with pytest.raises(SpecError, match=r"b_syntax.py.*importing 'b_syntax'.*SyntaxError"):
        import_function("b_syntax:build", [str(tmp_path)])


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ({"body": "raise ValueError('depth must be even')"}, r"raised ValueError: depth must be"),
        ({"body": "return 42"}, r"returned int, not a keras.Model"),
        ({"units": "3"}, r"output has shape \(3,\) per image; it must be \(10,\)"),
    ],
    ids=["raises", "not-a-model", "wrong-classes"],
)
def test_broken_builder_is_caught_before_any_worker(
    tmp_path: Path, builder: dict[str, str], message: str
) -> None:
    module = f"b_broken_{len(message)}_{len(builder)}"
    spec = load_spec(write_study(tmp_path, module, **builder))
    with pytest.raises(SpecError) as info:
        check_study_runs(spec, "study.toml")
    text = str(info.value)
    assert "\n" not in text, text
    assert text.startswith("study.toml: `model.builder`"), text
    assert f"{tmp_path / module}.py:build" in text and re.search(message, text), text


def test_folder_dataset_checks(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((6, 4, 3), 40 * i, "uint8")).save(root / label / f"{i}.png")
    path = write_study(tmp_path, "b_folder")
    path.write_text(
        path.read_text().replace(
            'dataset = "fashion_mnist"', 'dataset = "imgs"\ntest_fraction = 0.2'
        )
    )
    spec = load_spec(path)
    from hpsearch.data import data_shape, load_splits

    assert data_shape(spec.data) == ((6, 4, 3), 2)
    splits = load_splits(spec.data)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (7, 1, 2)
    assert splits.x_train.dtype == np.float32 and splits.x_train.max() <= 1.0
    assert (
        sorted(np.concatenate([splits.y_train, splits.y_val, splits.y_test])) == [0] * 5 + [1] * 5
    )
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"imgs/c: class folder without images"):
        data_shape(spec.data)


def test_loader_that_returns_the_wrong_thing_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "b_loader.py").write_text("def load():\n    return [1, 2, 3]\n")
    path = tmp_path / "study.toml"
    path.write_text(
        CUSTOM.format(module="b_unused").replace(
            'dataset = "fashion_mnist"', 'loader = "b_loader:load"'
        )
    )
    spec = load_spec(path)
    with pytest.raises(DataError, match=r"b_loader.py:load returned list\. Expected: \(x_train"):
        check_study_runs(spec)


@pytest.mark.slow
def test_cli_validate_and_launch_refuse_a_missing_builder_module(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(CUSTOM.format(module="b_absent_module"))
    db = tmp_path / "study.db"
    for args in (["validate", str(path)], ["launch", str(path), "--storage", f"sqlite:///{db}"]):
        result = run_cli(*args, cwd=Path(os.sep))
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr
        assert "`model.builder` = 'b_absent_module:build': no module 'b_absent_module'" in lines[0]
    assert not db.exists()


@pytest.mark.parametrize("metric", ["val_mae", "val_nonsense"])
def test_metric_the_model_cannot_report_is_one_line(tmp_path: Path, metric: str) -> None:
    path = write_study(tmp_path, f"b_metric_{metric}", f'[objective]\nmetric = "{metric}"\n')
    with pytest.raises(SpecError) as info:
        check_study_runs(load_spec(path), "study.toml")
    text = str(info.value)
    assert "\n" not in text and text.startswith("study.toml: `objective.metric`"), text


def test_an_edited_builder_module_is_imported_again(tmp_path: Path) -> None:
    module = tmp_path / "b_edited.py"
    module.write_text("def build(hp, input_shape, num_classes):\n    return 1\n")
    assert import_function("b_edited:build", [str(tmp_path)])({}, (1,), 2) == 1
    module.write_text("def build(hp, input_shape, num_classes):\n    return 2\n")
    os.utime(module, (1e9, 1e9))  # a different mtime, even within the same second
    assert import_function("b_edited:build", [str(tmp_path)])({}, (1,), 2) == 2
