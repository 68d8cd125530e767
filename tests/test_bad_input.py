"""Bad input, from the outside review of issue 16: every case gets one short line, fast.

Study values are strict and bounded; files that are not UTF-8, too large or nested too deep
get one line; user data is printed as text (never Rich markup, control characters escaped)
and echoed only as a short excerpt; a dataset with NaN pixels is reported at load.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import tomli_w
import tomllib

from hpsearch.display import EXCERPT_CHARS, clean, excerpt
from hpsearch.errors import SpecError
from hpsearch.spec import FloatDim, IntDim, StudySpec, _Dim, _model_type, load_spec
from tests.conftest import STUDIES, run_in_process

MINIMAL = {
    "name": "t",
    "data": {"dataset": "fashion_mnist"},
    "budget": {"n_trials": 3, "max_epochs": 2},
}


def tiny_npz(path: Path) -> Path:
    """A small real .npz dataset at ``path`` (validate loads the data to build one model)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:  # np.savez would append ".npz" to an odd name
        np.savez(
            f,
            x_train=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
            y_train=np.arange(20) % 2,
            x_test=rng.integers(0, 255, (10, 8, 8), dtype=np.uint8),
            y_test=np.arange(10) % 2,
        )
    return path


def write(tmp_path: Path, doc: dict[str, Any] | str | bytes, name: str = "study.toml") -> Path:
    path = tmp_path / name
    if isinstance(doc, dict):
        doc = tomli_w.dumps(doc)
    path.write_bytes(doc.encode() if isinstance(doc, str) else doc)
    return path


def with_value(path: tuple[str, ...], value: Any, base: dict[str, Any] = MINIMAL) -> dict:
    doc = tomllib.loads(tomli_w.dumps(base))  # a deep copy
    table = doc
    for key in path[:-1]:
        table = table.setdefault(key, {})
    table[path[-1]] = value
    return doc


def one_line_error(tmp_path: Path, doc: dict[str, Any] | str | bytes) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, doc))
    message = str(info.value)
    assert "\n" not in message and len(message) <= 500, message
    return message


# --- item 15: every numeric field is strict and bounded ---------------------------------------


def numeric_fields(model: Any = StudySpec, prefix: tuple[str, ...] = ()) -> list[Any]:
    """Every numeric field of the spec, found by walking the models.

    Returns:
        ``(path, int or float, is a search dimension)`` for each.
    """
    found = []
    for name, info in model.model_fields.items():
        path, sub = (*prefix, name), _model_type(info.annotation)
        types = {info.annotation, *get_args(info.annotation)}
        if sub in (IntDim, FloatDim):
            found.append((path, int if sub is IntDim else float, True))
        elif sub is not None and not issubclass(sub, _Dim):
            found += numeric_fields(sub, path)
        elif {int, float} & types:
            found.append((path, float if float in types else int, False))
    return found


NUMERIC = numeric_fields()


def test_the_walk_finds_the_numeric_fields() -> None:
    paths = {".".join(p) for p, _, _ in NUMERIC}
    assert len(NUMERIC) >= 40, paths
    for expected in (
        "budget.n_trials",
        "data.split_seed",
        "search.conv.kernel_size",
        "search.optimizer.sgd.momentum",
        "search.optimizer.adadelta.lr",
        "search.augment.translate",
        "pruner.reduction_factor",
    ):
        assert expected in paths


@pytest.mark.parametrize(
    ("path", "kind", "is_dim"), NUMERIC, ids=[".".join(p) for p, _, _ in NUMERIC]
)
def test_every_numeric_field_is_strict_finite_and_bounded(
    tmp_path: Path, path: tuple[str, ...], kind: type, is_dim: bool
) -> None:
    huge = 2**62 if kind is int else 1e300
    bad: list[Any] = [True, "10", -1, huge]
    if kind is float:
        bad += [float("nan"), float("inf")]
    else:
        bad += [2.5]
    if is_dim:  # ranges and choice lists too
        bad += [{"choices": [1, huge]}, {"low": 1, "high": huge}]
        if kind is float:
            bad += [{"low": 0.001, "high": float("nan")}, {"choices": [0.001, float("inf")]}]
    for value in bad:
        message = one_line_error(tmp_path, with_value(path, value))
        assert f"`{'.'.join(path)}" in message, (value, message)
        assert "Example: " in message


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("search", "conv", "kernel_size"), 0, "must be in [1, 15]; 0 is not"),
        (("search", "conv", "kernel_size"), -3, "-3 is not"),
        (("search", "dense", "units"), 0, "must be in [1, 16384]"),
        (("search", "conv", "dropout"), 1.0, "must be in [0, 1); 1.0 is not"),
        (("search", "dense", "dropout"), {"low": -0.1, "high": 0.5}, "-0.1 is not"),
        (("search", "conv", "dropout"), float("nan"), "finite number"),
        (("search", "training", "batch_size"), 0, "0 is not"),
        (("search", "conv", "filters_growth"), 0.0, "must be in [1, 4]"),
        (("search", "conv", "filters_growth"), float("nan"), "finite number"),
        (("search", "optimizer", "sgd", "momentum"), 1.5, "1.5 is not"),
        (("search", "optimizer", "lr"), -0.1, "must be in (0, 10]"),
        (("search", "optimizer", "lr"), {"low": 0.0, "high": 0.1}, "0.0 is not"),
        (("search", "conv", "n_blocks"), 2**63 - 1, "must be in [1, 8]"),
        (("search", "conv", "n_blocks"), {"low": 1, "high": 100}, "100 is not"),
        (("search", "conv", "n_blocks"), {"low": 1, "high": 4, "step": 2, "log": True}, "step"),
        (("budget", "n_trials"), True, "valid integer. Received: true"),
        (("budget", "n_trials"), "10", 'valid integer. Received: "10"'),
        (("budget", "n_trials"), 10**12, "less than or equal to 1000000"),
        (("budget", "max_epochs"), 0, "greater than 0"),
        (("data", "val_fraction"), float("nan"), "finite number"),
        (("sampler", "seed"), -1, "greater than or equal to 0"),
        (("name",), "x" * 200, "at most 100 characters"),
        (("name",), "smoke\n", "should match pattern"),
        (("name",), "../x", "should match pattern"),
        (("data", "dataset"), "data/x\x1b[31m.npz", "no control characters"),
    ],
)
def test_values_that_cannot_train_are_refused(
    tmp_path: Path, path: tuple[str, ...], value: Any, says: str
) -> None:
    message = one_line_error(tmp_path, with_value(path, value))
    assert f"`{'.'.join(path)}` is invalid" in message and says in message, message


def test_warm_start_values_are_strict(tmp_path: Path) -> None:
    doc = {**MINIMAL, "warm_start": [{"optimizer.lr": float("nan")}]}
    message = one_line_error(tmp_path, doc)
    assert "`warm_start[0].optimizer.lr` is invalid: must be a finite number" in message
    assert 'Example: [[warm_start]] "optimizer.lr" = 0.01' in message


def test_the_shipped_studies_keep_their_values() -> None:
    for path in STUDIES.glob("*.toml"):
        spec = load_spec(path)
        assert spec.budget.n_trials >= 1


# --- item 9: files that are not UTF-8, huge or nested deep ------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('name = "a"\n'.encode("utf-16"), "is not UTF-8 text (byte 0xff at offset 0"),
        (b'name = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 at offset 11"),
        ("x = " + "[" * 5000 + "]" * 5000, "nested deeper than Python can parse"),
        ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "nested deeper than Python can parse"),
        ("x = " + "[" * 40 + "]" * 40, "nested more than 16 levels deep"),
        ("x = 1" + "0" * 5000, "not valid TOML: Exceeds the limit"),
        ('name = "' + "a" * (2 << 20) + '"', "is larger than 256 KiB"),
        ("name = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
    ],
    ids=["utf16", "latin1", "deep-arrays", "deep-tables", "41-levels", "huge-int", "2MB", "toml"],
)
def test_unreadable_files_are_one_line(tmp_path: Path, content: str | bytes, says: str) -> None:
    start = time.perf_counter()
    message = one_line_error(tmp_path, content)
    assert message.startswith(f"{tmp_path / 'study.toml'}: ") and says in message, message
    assert time.perf_counter() - start < 2


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + tomli_w.dumps(MINIMAL).encode())
    assert load_spec(path).name == "t"


# --- items 4 and 5: user data printed as text; long values echoed as short excerpts -----------


def test_excerpt_and_clean() -> None:
    assert excerpt("x" * 10_000_000).endswith("… (10,000,000 characters)")
    assert len(excerpt("x" * 10_000_000)) < EXCERPT_CHARS + 30
    assert excerpt([1, 2.5, float("nan"), True, "a\nb"]) == '[1, 2.5, nan, true, "a\\nb"]'
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert excerpt(deep) == "[[[[[…]]]]]"  # no recursion to overflow
    assert excerpt(list(range(10**6))).endswith("(1,000,000 items)")
    assert excerpt(2**5000) == "(an integer of 5,001 bits)"
    assert clean("a\x1b[31mb\u202ec\nd") == "a\\x1b[31mb\\u202ec\\x0ad"
    assert clean("x" * 50, 10) == "x" * 9 + "…"


@pytest.mark.parametrize("dataset", ["data/[/x]/tiny.npz", "[bold]x[/bold][link=http://e]l.npz"])
def test_validate_prints_markup_in_user_data_as_text(tmp_path: Path, dataset: str) -> None:
    tiny_npz(tmp_path / dataset)
    path = write(tmp_path, with_value(("data", "dataset"), dataset))
    code, out, err = run_in_process("validate", str(path))
    assert code == 0, err
    assert f"dataset {tmp_path / dataset} (val" in out and f"{path}: OK" in out


def test_validate_of_a_long_dataset_path_is_fast_and_capped(tmp_path: Path) -> None:
    long_path = ("d" * 200 + "/") * 15 + "x.npz"  # 3,020 characters: valid (under PATH_MAX)
    tiny_npz(tmp_path / long_path)
    path = write(tmp_path, with_value(("data", "dataset"), long_path))
    run_in_process("validate", str(path))  # the first call imports Keras to build a model
    start = time.perf_counter()
    code, out, err = run_in_process("validate", str(path))
    assert code == 0, err
    assert time.perf_counter() - start < 3
    assert "ddd" in out and "…" in out and long_path not in out
    too_long = write(tmp_path, with_value(("data", "dataset"), "d" * 200_000 + ".npz"), "b.toml")
    start = time.perf_counter()
    code, out, err = run_in_process("validate", str(too_long))
    assert code == 1 and time.perf_counter() - start < 3
    assert len(err.splitlines()) == 1 and len(err) < 500, err
    assert "(200,004 characters)" in err


def test_errors_are_one_line_whatever_the_message_holds(tmp_path: Path) -> None:
    path = write(tmp_path, with_value(("data", "dataset"), "a\nb\x1b[2J"), "we\nird\x1b.toml")
    code, out, err = run_in_process("validate", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "\x1b" not in err, err
    assert "we\\x0aird\\x1b.toml" in err


def test_status_prints_markup_in_baselines_as_text(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpsearch.study import launch_study

    monkeypatch.chdir(tmp_path)
    smoke = STUDIES / "smoke.toml"
    launch_study(load_spec(smoke), smoke.read_text(), sqlite_url)
    baselines = tmp_path / "baselines.toml"
    baselines.write_text(
        '[[baseline]]\ndataset = "fashion_mnist"\nmodel = "[/bold]"\naccuracy = 0.5\n'
        'source = "[link=http://evil.example]paper[/link] \\u001b[31m"\n'
    )
    code, out, err = run_in_process(
        "status", "smoke", "--storage", sqlite_url, "--baselines", str(baselines)
    )
    assert code == 0, err
    assert "[/bold] — [link=http://evil.example]paper[/link] \\x1b[31m" in out
    assert "\x1b" not in out
    code, out, err = run_in_process("status", "x\x1b" * 50_000, "--storage", sqlite_url)
    assert code == 1 and err.startswith("error: no study named 'x\\x1bx"), err
    assert len(err) < 500 and err.count("\n") == 1


@pytest.mark.parametrize("command", ["status", "dashboard"])
def test_help_shows_double_brackets(command: str) -> None:
    code, out, _ = run_in_process(command, "--help")
    assert code == 0 and "[[baseline]]" in out


# --- item 16: NaN pixels ---------------------------------------------------------------------


def test_nan_pixels_are_reported_at_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hpsearch import data
    from hpsearch.spec import DataSpec

    x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    x[3, 2, 2, 0] = np.nan
    x[5, 1, 1, 0] = np.inf
    npz = tmp_path / "nan.npz"
    y = np.arange(40) % 2
    np.savez(npz, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    data.load_splits.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hpsearch.data"):
        data.load_splits(DataSpec(dataset=str(npz)))
    (record,) = [r for r in caplog.records if r.name == "hpsearch.data"]
    assert "NaN or infinite (x_train 2, x_test 2)" in record.getMessage()
    assert "\n" not in record.getMessage()
    caplog.clear()
    clean_x = np.nan_to_num(x, posinf=1.0)
    np.savez(npz, x_train=clean_x, y_train=y, x_test=clean_x[:10], y_test=y[:10])
    data.load_splits.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hpsearch.data"):
        data.load_splits(DataSpec(dataset=str(npz)))
    assert not [r for r in caplog.records if r.name == "hpsearch.data"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"[[baseline]]\nmodel = '\xff'\n", "cannot read the baselines file (not UTF-8 text)"),
        ("x = " + "[" * 3000 + "]" * 3000, "not valid TOML: nested too deeply"),
        ("baseline = 3", "`baseline` must be [[baseline]] tables. Received: 3"),
        ('[[baseline]]\nmodel = "' + "m" * 10_000 + '"', 'Received: {model = "mmm'),
    ],
    ids=["latin1", "deep", "not-tables", "huge-row"],
)
def test_bad_baselines_files_are_one_short_line(
    tmp_path: Path, content: str | bytes, says: str
) -> None:
    from hpsearch.baselines import load_baselines

    path = write(tmp_path, content, "baselines.toml")
    with pytest.raises(SpecError) as info:
        load_baselines(path)
    message = str(info.value)
    assert says in message and "\n" not in message and len(message) < 500, message
