"""Warm start from earlier studies: ``[[warm_start]] from_study = "NAME"``.

The study database is shared, so a lab's earlier searches can start its next one. A
``[[warm_start]]`` table that names ``from_study`` (instead of parameter values) enqueues the
best complete trials of that study, on the same storage, as the new study's first trials (all
``[[warm_start]]`` tables queue in the file's order)::

    [[warm_start]]
    from_study = "fashion_mnist_quick"   # a study on the same storage
    top = 5                              # its 5 best complete trials (default 5)
    out_of_range = "clip"                # or "skip": what to do with values outside this space
    if_missing = "error"                 # or "skip": start without it if that study is not
                                         # there yet or has no complete trial

Each source configuration is mapped into the new space: parameters the new space does not
search are dropped; a number outside its new range is clipped into it (to the nearest grid
point or choice) with ``out_of_range = "clip"``, and a configuration with such a value is left
out with ``"skip"``; a category the new space does not offer always leaves the configuration
out. Parameters the source did not have are sampled as usual. With ``if_missing = "skip"`` a
study file can name a study that may not have run yet (the shipped GPU study names the CPU demo
study): launch then says it started without it. The source's own objective and
direction pick its best trials. :func:`transfer_warm_starts` returns what was done, so that
``launch`` can say it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpsearch.display import excerpt
from hpsearch.errors import SpecError
from hpsearch.spec import NAME_PATTERN, CatDim, FloatDim, IntDim, StudySpec

FROM_STUDY = "from_study"
KEYS = (FROM_STUDY, "top", "out_of_range", "if_missing")
DEFAULT_TOP = 5
OUT_OF_RANGE = ("clip", "skip")
IF_MISSING = ("error", "skip")


@dataclass(frozen=True)
class TransferEntry:
    """One ``[[warm_start]]`` table that names ``from_study``."""

    index: int
    study: str
    top: int = DEFAULT_TOP
    out_of_range: str = "clip"
    if_missing: str = "error"


@dataclass
class Transferred:
    """What one :class:`TransferEntry` enqueued, and what it had to change or leave out."""

    entry: TransferEntry
    enqueued: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    clipped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: str | None = None
    """Why nothing came from the study (``if_missing = "skip"``), else None."""

    def summary(self) -> str:
        """One line: ``warm start from study X: trials 3, 7 (clipped: ...; dropped: ...)``."""
        if self.missing is not None:
            return (
                f"warm start from study {self.entry.study}: skipped, {self.missing} "
                '(if_missing = "skip")'
            )
        trials = ", ".join(f"#{n}" for n, _ in self.enqueued) or "none"
        notes = []
        if self.dropped:
            notes.append(
                "parameters not in this space dropped: " + ", ".join(sorted(self.dropped))
            )
        if self.clipped:
            notes.append("clipped into range: " + "; ".join(self.clipped))
        if self.skipped:
            notes.append("left out: " + "; ".join(self.skipped))
        return (
            f"warm start from study {self.entry.study}: {len(self.enqueued)} of its best "
            f"{self.entry.top} trials enqueued ({trials})"
            + (f"; {'; '.join(notes)}" if notes else "")
        )


def is_transfer(entry: Mapping[str, Any]) -> bool:
    """Whether a ``[[warm_start]]`` table names an earlier study instead of parameter values."""
    return FROM_STUDY in entry


def transfer_entry(index: int, entry: Mapping[str, Any], source: str) -> TransferEntry:
    """Validate one ``from_study`` table.

    Raises:
        SpecError: One line naming the field, what was received and a valid example.
    """
    where = f"{source}: `warm_start[{index}]"
    example = '[[warm_start]] from_study = "fashion_mnist_quick"'
    for key in entry:
        if key not in KEYS:
            raise SpecError(
                f"{where}.{excerpt(key, 40)}` cannot stand next to from_study (a table names "
                f"either parameter values or an earlier study). Valid keys: "
                f"{', '.join(KEYS)}. Example: {example}"
            )
    study, top, mode, if_missing = (
        entry[FROM_STUDY],
        entry.get("top", DEFAULT_TOP),
        entry.get("out_of_range", "clip"),
        entry.get("if_missing", "error"),
    )
    if not isinstance(study, str) or not re.fullmatch(NAME_PATTERN, study):
        raise SpecError(
            f"{where}.from_study` must be a study name. Received: {excerpt(study)}. "
            f"Example: {example}"
        )
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 100:
        raise SpecError(
            f"{where}.top` must be a whole number from 1 to 100. Received: {excerpt(top)}. "
            f"Example: {example}"
        )
    if mode not in OUT_OF_RANGE:
        raise SpecError(
            f'{where}.out_of_range` must be "clip" or "skip". Received: {excerpt(mode)}. '
            'Example: out_of_range = "clip"'
        )
    if if_missing not in IF_MISSING:
        raise SpecError(
            f'{where}.if_missing` must be "error" or "skip". Received: {excerpt(if_missing)}. '
            'Example: if_missing = "skip"'
        )
    return TransferEntry(index, study, top, mode, if_missing)


def transfer_entries(spec: StudySpec, source: str | None = None) -> list[TransferEntry]:
    """The spec's ``from_study`` tables, validated (see :func:`transfer_entry`)."""
    source = source or f"study {spec.name}"
    return [
        transfer_entry(i, entry, source)
        for i, entry in enumerate(spec.warm_start)
        if is_transfer(entry)
    ]


def transfer_warm_starts(
    storage: optuna.storages.BaseStorage, spec: StudySpec, source: str | None = None
) -> list[Transferred]:
    """Map the best trials of each ``from_study`` into ``spec``'s space (nothing is written).

    Raises:
        SpecError: If a named study is the study itself or shares no searched parameter with
            this space, or (unless its table says ``if_missing = "skip"``) is not on the
            storage or has no complete trial.
    """
    from hpsearch.ranking import best_complete_trials
    from hpsearch.space import param_dimensions, searched_params

    source = source or f"study {spec.name}"
    entries = transfer_entries(spec, source)
    if not entries:
        return []
    dims = param_dimensions(spec.search, spec.model.builder)
    searched = {k for k, d in dims.items() if not d.is_fixed}
    names = sorted(s.study_name for s in storage.get_all_studies())
    out = []
    for entry in entries:
        where = f"{source}: `warm_start[{entry.index}].from_study`"
        if entry.study == spec.name:
            raise SpecError(f"{where} names this study itself. Received: {entry.study!r}")
        if entry.study not in names:
            if entry.if_missing == "skip":
                out.append(Transferred(entry, missing="no such study on this storage yet"))
                continue
            listed = ", ".join(names[:20]) or "none"
            raise SpecError(
                f"{where} names no study on this storage. Received: {entry.study!r}. Studies "
                f'here: {listed}. Add if_missing = "skip" to start without it'
            )
        other = optuna.load_study(study_name=entry.study, storage=storage)
        best = best_complete_trials(other, entry.top)
        if not best:
            if entry.if_missing == "skip":
                out.append(Transferred(entry, missing="it has no complete trial yet"))
                continue
            raise SpecError(
                f"{where}: study {entry.study!r} has no complete trial to start from yet"
            )
        if not any(k in searched for t in best for k in t.params):
            raise SpecError(
                f"{where}: study {entry.study!r} searches none of this study's parameters "
                f"(it has {', '.join(sorted(best[0].params)) or 'none'}); it cannot warm-start it"
            )
        done = Transferred(entry)
        for trial in best:
            mapped = _map(trial, dims, entry.out_of_range, done)
            if mapped is not None:
                params = searched_params(spec.search, mapped, spec.model.builder)
                done.enqueued.append((trial.number, params))
        out.append(done)
    return out


def _map(
    trial: optuna.trial.FrozenTrial, dims: Mapping[str, Any], mode: str, done: Transferred
) -> dict[str, Any] | None:
    """``trial``'s parameters in the new space, or None when the configuration is left out."""
    mapped: dict[str, Any] = {}
    for key, value in trial.params.items():
        if key not in dims:
            done.dropped.add(key)
            continue
        fitted = _fit(dims[key], value)
        if fitted is None or (fitted != value and mode == "skip"):
            done.skipped.append(f"#{trial.number} ({key} = {excerpt(value, 30)})")
            return None
        if fitted != value:
            done.clipped.append(f"#{trial.number} {key} {value!r} → {fitted!r}")
        mapped[key] = fitted
    return mapped


def _fit(dim: Any, value: Any) -> Any:
    """``value`` if the dimension takes it, else the nearest value it takes, else None."""
    if dim.contains(value):
        return value
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(dim, CatDim) or not numeric:
        return None
    if dim.value is not None:  # a fixed number: the study's own value
        return dim.value
    if dim.choices is not None:
        return min(dim.choices, key=lambda c: (abs(c - value), c))
    low, high = dim.low, dim.high
    if isinstance(dim, IntDim):
        steps = round((min(max(value, low), high) - low) / dim.step)
        return int(min(low + steps * dim.step, high))
    if isinstance(dim, FloatDim):
        return float(min(max(value, low), high))
    return None
