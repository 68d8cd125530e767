"""Showing what a user gave us: short excerpts, control characters made visible, never markup.

Every value echoed in an error message goes through :func:`excerpt` (at most
:data:`EXCERPT_CHARS` characters, whatever was received), and every piece of user data printed
on the terminal through :func:`clean` or :func:`plain` (a :class:`rich.text.Text`, so that
``[bold]`` or ``[/x]`` in a dataset path or a baseline name is printed as it is, not parsed as
Rich markup). Control characters (newlines, ANSI escapes, bidirectional overrides) are shown as
``\\x1b``-style escapes, so that a value can neither break an error onto several lines nor
restyle the terminal.

Example:
    >>> excerpt("x" * 1000, limit=12)
    '"xxxxxxxxxx… (1,000 characters)'
    >>> clean("red\\x1b[31m")
    'red\\\\x1b[31m'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

EXCERPT_CHARS = 80
"""The most characters of a received value that an error message shows."""

# C0 and C1 controls, DEL, zero-width and bidirectional formatting characters, line and
# paragraph separators, BOM: nothing a name, a path or a number needs, all able to hide or
# restyle text on a terminal, or to end a line of a shell script.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_MAX_DEPTH = 4


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control or invisible formatting character (newline included)."""
    return _CONTROL.search(text) is not None


def clean(text: object, limit: int | None = None) -> str:
    """``text`` as one safe line: control characters escaped, cut to ``limit`` with ``…``."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: max(1, limit - 1)] + "…"
    return _CONTROL.sub(_escape, text)


def plain(text: object, limit: int | None = 200, style: str = "") -> Text:
    """User data for a Rich console or table cell: :func:`clean` text, never markup."""
    from rich.text import Text

    return Text(clean(text, limit), style=style)


def quoted(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters (``'nope'``, for names in messages)."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short one-line rendering of a received value, for error messages.

    Strings are quoted, numbers and booleans written as in TOML, tables and arrays shown to a
    few levels. The rendering stops at ``limit`` characters (so a 10 MB string or a table nested
    thousands of levels deep costs no more than a short one) and says how long the value was.
    """
    parts: list[str] = []
    size = 0
    for part in _render(value, 0):
        parts.append(part)
        size += len(part)
        if size > limit:
            break
    text = "".join(parts)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if isinstance(value, str) and len(value) > limit:
        text += f" ({len(value):,} characters)"
    elif isinstance(value, list | tuple | Mapping) and size > limit and len(value) > 1:
        text += f" ({len(value):,} items)"
    return _CONTROL.sub(_escape, text)


def _render(value: object, depth: int) -> Iterator[str]:
    if isinstance(value, bool):
        yield "true" if value else "false"
    elif isinstance(value, int):
        yield (
            str(value)
            if value.bit_length() < 200
            else f"(an integer of {value.bit_length():,} bits)"
        )
    elif isinstance(value, float):
        if math.isfinite(value):
            yield repr(value)
        else:
            yield "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, str):
        yield json.dumps(value[: EXCERPT_CHARS * 2], ensure_ascii=False)
    elif isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            yield "{…}"
            return
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + clean(key, EXCERPT_CHARS) + " = "
            yield from _render(item, depth + 1)
        yield "}"
    elif isinstance(value, list | tuple):
        if depth >= _MAX_DEPTH:
            yield "[…]"
            return
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _render(item, depth + 1)
        yield "]"
    elif value is None:
        yield "(none)"
    else:
        yield clean(repr(value), EXCERPT_CHARS * 2)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


__all__ = [
    "DEFAULT_METRIC",
    "EXCERPT_CHARS",
    "clean",
    "excerpt",
    "format_metric",
    "has_control",
    "is_accuracy",
    "mean_pm",
    "metric_label",
    "metric_short",
    "percent",
    "plain",
    "quoted",
    "ranked_by",
]

DEFAULT_METRIC = "val_accuracy"
"""The objective of a study that names none (and of plain Optuna studies on the leaderboard)."""


def percent(value: float | None, missing: str = "") -> str:
    """An accuracy (a fraction) as a percentage with two decimals: ``0.9418`` -> ``94.18%``;
    ``missing`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value * 100:.2f}%"


def mean_pm(mean: float | None, std: float | None, fmt: Callable[[float], str] = percent) -> str:
    """Mean ± std over seeds, each written by ``fmt``: ``94.18% ± 0.12%``; empty without a mean."""
    if mean is None:
        return ""
    return fmt(mean) + ("" if std is None else f" ± {fmt(std)}")


def is_accuracy(metric: str) -> bool:
    """Whether ``metric`` is an accuracy (a fraction shown as a percentage): ``val_accuracy``,
    ``val_top5_accuracy``; not ``val_loss`` or ``val_auc``."""
    return metric.endswith("accuracy")


def metric_label(metric: str) -> str:
    """A column heading for the objective: ``val acc`` for val_accuracy, else ``val loss``."""
    return "val acc" if metric == DEFAULT_METRIC else metric.replace("_", " ")


def metric_short(metric: str) -> str:
    """The objective in a compound heading (``search val``, ``val loss mean ± std``)."""
    return "val" if metric == DEFAULT_METRIC else metric_label(metric)


def format_metric(value: float | None, metric: str = DEFAULT_METRIC) -> str:
    """A value of ``metric``: a percentage for accuracies (``94.18%``), else four decimals
    (``0.2731``); empty for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return percent(value) if is_accuracy(metric) else f"{value:.4f}"


def ranked_by(metric: str, direction: str) -> str:
    """``validation accuracy (higher is better)``, ``val_loss (lower is better)``."""
    name = "validation accuracy" if metric == DEFAULT_METRIC else metric
    return f"{name} ({'lower' if direction == 'minimize' else 'higher'} is better)"
