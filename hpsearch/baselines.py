"""Literature and course baselines (dataset, model, accuracy, metric, source).

The numbers ship in ``hpsearch/baselines.toml``; a user file in the same format
(``[[baseline]]`` tables) adds its own with ``--baselines FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib

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
        except OSError as e:
            raise SpecError(f"{extra}: cannot read the baselines file ({e.strerror})") from e
    return baselines


def for_dataset(baselines: list[Baseline], dataset: str) -> list[Baseline]:
    """Baselines of one dataset, best first."""
    return sorted((b for b in baselines if b.dataset == dataset), key=lambda b: -b.accuracy)


def _parse(text: str, source: str) -> list[Baseline]:
    try:
        rows = tomllib.loads(text).get("baseline", [])
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: not valid TOML: {e}") from e
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
            shown = repr(row) if len(repr(row)) <= 200 else repr(row)[:197] + "..."
            raise SpecError(
                f"{source}: `baseline[{i}]` needs dataset, model and accuracy (a fraction, or a "
                f"percentage up to 100). Received: {shown}. "
                'Example: [[baseline]] dataset = "mnist" model = "my CNN" accuracy = 0.991 '
                'source = "my paper"'
            ) from e
    return out
