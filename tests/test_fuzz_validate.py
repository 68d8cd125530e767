"""Property-based fuzzing of ``hpsearch validate`` (Hypothesis), issue 16.

Each example is a shipped study file mutated by Hypothesis: values replaced by other types,
huge, negative, NaN or infinite numbers, unicode, control characters and Rich markup, long
strings; keys deleted or added; tables nested deep; bytes that are not UTF-8 inserted; the
file truncated. ``hpsearch validate`` runs in this process through the real entry point, and
every outcome must be either a success (exit 0) or exactly one line on stderr of at most 500
characters with exit code 1 - never a traceback or another exception, never more than a few
seconds, and nothing written (no database, no runs folder, no other file).
"""

from __future__ import annotations

import copy
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib
import typer.main

from tests.conftest import STUDIES, run_in_process

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis missing: pip install -e .[test]")
st = hypothesis.strategies

N_EXAMPLES = int(os.environ.get("HPSEARCH_FUZZ_EXAMPLES", "1000"))
MAX_SECONDS = 3.0
MAX_ERROR_CHARS = 500
BASES = {p.name: tomllib.loads(p.read_text(encoding="utf-8")) for p in STUDIES.glob("*.toml")}

NASTY_STRINGS = [
    "",
    " ",
    "[/x]",
    "[bold]",
    "[link=http://evil.example]x[/link]",
    "data/[/x]/tiny.npz",
    "\x1b[31mred\x1b[0m",
    "a\nb",
    "smoke\n",
    "\u202eevil",
    "../../x",
    "x.npz",
    "fashion_mnist",
    "relu",
    "adam",
    "max",
    "true",
    "10",
    "nan",
]
NASTY_NUMBERS = [0, -1, 1, 2, 9, 2**31, 2**63 - 1, -(2**63), 2**64, 10**40]
NASTY_FLOATS = [0.0, -0.0, 1.0, 0.5, 0.9999999, -1e-300, 1e-300, 1e300, -1e300]


@dataclass(frozen=True)
class Long:
    """A long string, written into the file directly (tomli_w escapes one character at a time)."""

    char: str
    n: int

    def toml(self) -> str:
        escaped = {"\n": "\\n", "\x1b": "\\u001b"}.get(self.char, self.char)
        return '"' + escaped * self.n + '"'


text = st.one_of(
    st.text(max_size=40),  # any unicode, control characters included
    st.sampled_from(NASTY_STRINGS),
    st.builds(Long, st.sampled_from(["x", "[", "\n", "é", "\x1b"]), st.integers(80, 300_000)),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY_FLOATS + [float("nan"), float("inf"), -float("inf")]),
)
scalars = st.one_of(st.booleans(), numbers, text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.sampled_from(NASTY_STRINGS)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
# Byte sequences that are not UTF-8 (a lone continuation byte, a truncated sequence, a
# surrogate, UTF-16 BOM) and other bytes a TOML parser must refuse cleanly.
BAD_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\x00",
    b"\x1b",
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in ``doc`` (tables and values; list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, item in doc.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            found += _paths(item, (*prefix, i))
    return found


def _swap_long(value: Any, longs: list[Long]) -> Any:
    """``value`` with each :class:`Long` replaced by a placeholder string (recorded in order)."""
    if isinstance(value, Long):
        longs.append(value)
        return f"@@long{len(longs) - 1}@@"
    if isinstance(value, dict):
        return {k: _swap_long(v, longs) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_long(v, longs) for v in value]
    return value


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def study_files(draw: Any) -> bytes:
    """A mutated shipped study file, as the bytes written to disk."""
    doc = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(doc)
        op = draw(st.sampled_from(["set", "set", "set", "retype", "delete", "add"]))
        if not paths or op == "add":
            tables = [p for p in paths if isinstance(_parent(doc, (*p, "")), dict)]
            table = draw(st.sampled_from([()] + tables))
            key = draw(st.one_of(st.text(max_size=12), st.sampled_from(NASTY_STRINGS)))
            _parent(doc, (*table, key))[key] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        if op == "delete":
            del parent[key]
        elif op == "retype":
            old = parent[key]
            parent[key] = draw(
                st.sampled_from([repr(old)[:50], [old], {"value": old}, {"low": old}, True])
            )
        else:
            parent[key] = draw(values)
    longs: list[Long] = []
    written = tomli_w.dumps(_swap_long(doc, longs))
    for i, long in enumerate(longs):
        written = written.replace(f'"@@long{i}@@"', long.toml(), 1)
    data = written.encode()
    mangle = draw(st.sampled_from(["none"] * 6 + ["bytes", "truncate", "deep", "bom"]))
    if mangle == "bytes":
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.one_of(st.sampled_from(BAD_BYTES), st.binary(max_size=6)))
            + data[at:]
        )
    elif mangle == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif mangle == "deep":
        n = draw(st.one_of(st.integers(1, 40), st.integers(900, 20_000)))
        nested = "[" * n + "]" * n if draw(st.booleans()) else "{a = " * n + "1" + "}" * n
        data += f"\n[fuzz]\nx = {nested}\n".encode()
    elif mangle == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


def _validate(path: Path) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    code, out, err = run_in_process("validate", str(path))
    return code, out, err, time.perf_counter() - start


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
def test_validate_survives_mutated_study_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # Typer rebuilds the click command on every call (0.1 s); build it once for 1,000 calls.
    monkeypatch.setattr(typer.main, "get_command", functools.cache(typer.main.get_command))
    runs = Path(os.environ["HPSEARCH_RUNS_DIR"])
    study = work / "study.toml"
    outcomes = {"ok": 0, "error": 0}

    @hypothesis.settings(
        max_examples=N_EXAMPLES,
        deadline=None,  # timed below, with the same limit for every example
        database=None,  # Hypothesis writes nothing either
        suppress_health_check=list(hypothesis.HealthCheck),
        print_blob=True,
    )
    @hypothesis.given(study_files())
    def check(data: bytes) -> None:
        study.write_bytes(data)
        code, out, err, seconds = _validate(study)
        assert seconds < MAX_SECONDS, f"took {seconds:.1f} s"
        assert "Traceback" not in out + err
        assert _tree(work) == {"study.toml"}, _tree(work)
        assert not runs.exists()
        if code == 0:
            assert out.rstrip().endswith(f"{study}: OK") and err == "", (out, err)
            outcomes["ok"] += 1
            return
        assert code == 1, (code, out, err)
        assert out == "", out
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert err.startswith("error: ") and len(err) <= MAX_ERROR_CHARS, err
        outcomes["error"] += 1

    code, _, err, _ = _validate(STUDIES / "smoke.toml")  # imports happen here, untimed
    assert code == 0, err
    check()
    assert outcomes["ok"] + outcomes["error"] >= N_EXAMPLES
    assert outcomes["ok"] >= 10 and outcomes["error"] >= N_EXAMPLES // 2, outcomes
