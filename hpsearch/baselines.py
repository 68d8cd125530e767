"""Literature and course baselines (dataset, model, accuracy, metric, source).

The numbers ship in ``hpsearch/baselines.toml``; a user file in the same format
(``[[baseline]]`` tables) adds its own with ``--baselines FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib

from hpsearch.display import clean, excerpt
from hpsearch.errors import SpecError


@dataclass(frozen=True)
class Baseline:
    """One published or course result. ``accuracy`` is a fraction; ``metric`` is test or val."""

    dataset: str
    model: str
    accuracy: float
    metric: str
    source: str


def load_baselines(extra: str | Path | None = None) -> list[Baseline]:
    """The shipped baselines, plus those of ``extra`` (a TOML file of ``[[baseline]]``)."""
    text = resources.files("hpsearch").joinpath("baselines.toml").read_text(encoding="utf-8")
    baselines = _parse(text, "hpsearch/baselines.toml")
    if extra is not None:
        try:
            baselines += _parse(Path(extra).read_text(encoding="utf-8"), str(extra))
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not UTF-8 text"
            raise SpecError(
                f"{clean(extra, 300)}: cannot read the baselines file ({reason})"
            ) from e
    return baselines


def for_dataset(baselines: list[Baseline], dataset: str) -> list[Baseline]:
    """Baselines of one dataset, best first."""
    return sorted((b for b in baselines if b.dataset == dataset), key=lambda b: -b.accuracy)


def _parse(text: str, source: str) -> list[Baseline]:
    try:
        rows = tomllib.loads(text).get("baseline", [])
    except (ValueError, RecursionError) as e:  # TOMLDecodeError, a 4,300-digit integer, nesting
        reason = clean(e, 200) if isinstance(e, ValueError) else "nested too deeply"
        raise SpecError(f"{clean(source, 300)}: not valid TOML: {reason}") from e
    if not isinstance(rows, list):
        raise SpecError(
            f"{clean(source, 300)}: `baseline` must be [[baseline]] tables. Received: "
            f'{excerpt(rows)}. Example: [[baseline]] dataset = "mnist" model = "my CNN" '
            "accuracy = 0.991"
        )
    out = []
    for i, row in enumerate(rows):
        try:
            accuracy = float(row["accuracy"])
            if accuracy > 1.0:
                accuracy /= 100.0  # accept percent
            if not 0.0 <= accuracy <= 1.0:  # also NaN and infinities
                raise ValueError("accuracy out of range")
            out.append(
                Baseline(
                    dataset=str(row["dataset"]),
                    model=str(row["model"]),
                    accuracy=accuracy,
                    metric=str(row.get("metric", "test")),
                    source=str(row.get("source", source)),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(
                f"{clean(source, 300)}: `baseline[{i}]` needs dataset, model and accuracy (a "
                f"fraction, or a percentage up to 100). Received: {excerpt(row)}. "
                'Example: [[baseline]] dataset = "mnist" model = "my CNN" accuracy = 0.991 '
                'source = "my paper"'
            ) from e
    return out
