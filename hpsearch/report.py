"""Rank trials against literature baselines: the data behind ``status``, the dashboard and reports.

Honest split: trials are ranked by **validation** accuracy (what the search optimized). Test
accuracy is shown beside it and is the number compared with a baseline's test accuracy to mark
a trial as beating it; it is never used to rank or select.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.baselines import Baseline, for_dataset

_STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2}


@dataclass
class Row:
    """One leaderboard line: a trial or a baseline."""

    kind: str  # "trial" or "baseline"
    rank: int | None
    val_accuracy: float | None
    test_accuracy: float | None = None
    study: str | None = None
    trial: int | None = None
    state: str | None = None
    epochs: int | None = None
    wall_minutes: float | None = None
    gpu_minutes: float | None = None
    n_params: int | None = None
    config: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fail_reason: str | None = None
    slurm_job: str | None = None
    model: str | None = None
    source: str | None = None
    metric: str | None = None
    beats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def trial_row(study_name: str, trial: FrozenTrial) -> Row:
    """A leaderboard row for one trial: value if complete, else its last reported epoch."""
    attrs = trial.user_attrs
    val = trial.value if trial.state == TrialState.COMPLETE else None
    if val is None and trial.intermediate_values:
        val = trial.intermediate_values[max(trial.intermediate_values)]
    wall = attrs.get("hpsearch:wall_time_s")
    gpus = [g for g in str(attrs.get("hpsearch:gpu") or "").split(",") if g]
    job = attrs.get("hpsearch:slurm_job_id")
    if job and attrs.get("hpsearch:slurm_array_task_id") is not None:
        job = f"{job}_{attrs['hpsearch:slurm_array_task_id']}"
    return Row(
        kind="trial",
        rank=None,
        val_accuracy=val,
        test_accuracy=attrs.get("hpsearch:test_accuracy"),
        study=study_name,
        trial=trial.number,
        state=trial.state.name.lower(),
        epochs=attrs.get("hpsearch:epochs") or (len(trial.intermediate_values) or None),
        wall_minutes=None if wall is None else wall / 60.0,
        gpu_minutes=None if wall is None or not gpus else wall * len(gpus) / 60.0,
        n_params=attrs.get("hpsearch:n_params"),
        config=attrs.get("hpsearch:config"),
        params=dict(trial.params),
        fail_reason=attrs.get("hpsearch:fail_reason"),
        slurm_job=job,
    )


def rank(
    trials: list[Row], baselines: list[Baseline], dataset: str | None = None
) -> list[Row]:
    """Sort trials by validation accuracy (complete before pruned) and interleave baselines.

    A baseline sits just above the first trial whose validation accuracy is lower than the
    baseline's accuracy. ``beats`` lists the baselines whose test (or, for val-metric
    baselines, validation) accuracy the trial exceeds.
    """
    ranked = sorted(
        (t for t in trials if t.val_accuracy is not None),
        key=lambda t: (-(t.val_accuracy or 0.0), t.study or "", t.trial or 0),
    )
    unranked = [t for t in trials if t.val_accuracy is None]
    lines = [
        Row(kind="baseline", rank=None, val_accuracy=None, test_accuracy=b.accuracy,
            model=b.model, source=b.source, metric=b.metric)
        for b in (for_dataset(baselines, dataset) if dataset else [])
    ]
    for i, t in enumerate(ranked, start=1):
        t.rank = i
        t.beats = [b.model or "" for b in lines if _beats(t, b)]
    merged: list[Row] = []
    pending = list(lines)
    for t in ranked:
        while pending and (pending[0].test_accuracy or 0.0) > (t.val_accuracy or 0.0):
            merged.append(pending.pop(0))
        merged.append(t)
    return merged + pending + unranked


def _beats(t: Row, b: Row) -> bool:
    mine = t.val_accuracy if b.metric == "val" else t.test_accuracy
    return mine is not None and b.test_accuracy is not None and mine > b.test_accuracy


def study_rows(study: optuna.Study) -> list[Row]:
    """Rows for every trial of a study (not ranked)."""
    return [trial_row(study.study_name, t) for t in study.get_trials(deepcopy=False)]


def study_summary(study: optuna.Study, baselines: list[Baseline], dataset: str) -> dict[str, Any]:
    """Machine-readable summary: counts by state, failures by cause, best trial, leaderboard."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    causes = Counter(
        str(t.user_attrs.get("hpsearch:fail_reason") or "exception")
        for t in trials
        if t.state == TrialState.FAIL
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value or 0.0) if complete else None
    return {
        "study": study.study_name,
        "dataset": dataset,
        "counts": {s.name.lower(): counts.get(s.name.lower(), 0) for s in TrialState},
        "n_trials": len(trials),
        "failed_by_cause": dict(causes),
        "best": None
        if best is None
        else {
            "trial": best.number,
            "val_accuracy": best.value,
            "test_accuracy": best.user_attrs.get("hpsearch:test_accuracy"),
            "epochs": best.user_attrs.get("hpsearch:epochs"),
            "config": best.user_attrs.get("hpsearch:config"),
            "params": best.params,
        },
        "leaderboard": [
            r.to_dict()
            for r in rank([trial_row(study.study_name, t) for t in trials], baselines, dataset)
        ],
    }
