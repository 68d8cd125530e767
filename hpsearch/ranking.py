"""Rank trials against literature baselines: the data behind ``status``, the dashboard and reports.

Honest split: trials are ranked by **validation** accuracy (what the search optimized). Test
accuracy is shown beside it and is the number compared with a baseline's test accuracy to mark
a trial as beating it; it is never used to rank or select.

Only finished trials get a rank: complete ones by their value, pruned ones by the last epoch
they reported. Running, queued and failed trials are listed after the ranking, without a rank.
A trial that was interrupted (preempted, or its worker died) and re-queued is one trial with its
retries: only its latest attempt is listed, with the earlier ones in ``attempts``.

Trial attributes are user data in a shared database: each one goes through :func:`coerce`, and a
malformed value (``wall_time_s = "60s"``, ``test_accuracy = inf``) is shown as missing data and
logged once per study and attribute, never an error.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch import attr_names
from hpsearch.baselines import Baseline, for_dataset
from hpsearch.display import DEFAULT_METRIC
from hpsearch.errors import StorageError
from hpsearch.storage.leaderboard_sql import (
    TrialRecord,
    read_studies,
    read_study_attrs,
    read_trials,
)

_logger = logging.getLogger(__name__)

RANKED_STATES = ("complete", "pruned")
"""States that get a rank (finished trials); the others are listed after the ranking."""
_UNRANKED_ORDER = {"running": 0, "waiting": 1, "fail": 2}


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
    retry_of: int | None = None  # the first attempt's number, when this trial is a retry
    attempts: list[int] = field(default_factory=list)  # earlier attempts folded into this row
    # `hpsearch best --seeds K --top N`: mean ± std over K re-trainings on the train split.
    retrain_val_mean: float | None = None
    retrain_val_std: float | None = None
    retrain_test_mean: float | None = None
    retrain_test_std: float | None = None
    retrain_seeds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN becomes None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def trial_row(study_name: str, trial: FrozenTrial, retrain: Any = None) -> Row:
    """A leaderboard row for one trial: value if complete, else its last reported epoch."""
    steps = trial.intermediate_values
    last = (len(steps), steps[max(steps)]) if steps else None
    row = _sql_row(study_name, trial.number, trial.state.name, trial.value, trial.user_attrs, last)
    row.params = dict(trial.params)
    row.retry_of = _retry_of(trial.system_attrs.get("failed_trial"), study_name, trial.number)
    apply_retrain(row, retrain)
    return row


def rank(
    trials: list[Row],
    baselines: list[Baseline],
    dataset: str | None = None,
    direction: str = "maximize",
) -> list[Row]:
    """Rank finished trials by validation accuracy and interleave baselines; list the rest after.

    Retries are folded first (:func:`fold_retries`). Complete and pruned trials with a finite
    validation accuracy get ranks 1, 2, ...; a baseline sits just above the first ranked trial
    whose validation accuracy is lower than the baseline's accuracy. Then come, without a rank,
    running, queued and failed trials (and finished ones whose value is missing). ``beats``
    lists the baselines whose test (or, for val-metric baselines, validation) accuracy a ranked
    trial exceeds.
    """
    trials = fold_retries(trials)
    sign = 1.0 if direction == "minimize" else -1.0
    ranked = sorted(
        (t for t in trials if _rankable(t)),
        key=lambda t: (sign * (t.val_accuracy or 0.0), t.study or "", t.trial or 0),
    )
    unranked = sorted(
        (t for t in trials if not _rankable(t)),
        key=lambda t: (_UNRANKED_ORDER.get(t.state or "", 3), t.study or "", t.trial or 0),
    )
    lines = [
        Row(
            kind="baseline",
            rank=None,
            val_accuracy=None,
            test_accuracy=b.accuracy,
            model=b.model,
            source=b.source,
            metric=b.metric,
        )
        for b in (for_dataset(baselines, dataset) if dataset else [])
        if math.isfinite(b.accuracy)
    ]
    for i, t in enumerate(ranked, start=1):
        t.rank = i
        t.beats = [b.model or "" for b in lines if _beats(t, b)]
    for t in unranked:
        t.rank = None
        t.beats = []
    merged: list[Row] = []
    pending = list(lines)
    for t in ranked:
        while pending and (pending[0].test_accuracy or 0.0) > (t.val_accuracy or 0.0):
            merged.append(pending.pop(0))
        merged.append(t)
    return merged + pending + unranked


def _rankable(t: Row) -> bool:
    return t.state in RANKED_STATES and t.val_accuracy is not None


def fold_retries(trials: list[Row]) -> list[Row]:
    """One row per trial: the attempts of a re-queued trial fold into the latest one.

    Optuna's retry (``RetryHeartbeatStaleTrialCallback``, which hpsearch uses for preempted
    trials and dead workers) gives every retry the system attr ``failed_trial``: the number of
    the first attempt. The latest attempt stays, with the earlier numbers in ``attempts``.
    """
    if all(t.retry_of is None for t in trials):
        return trials
    chains: dict[tuple[str | None, int], list[Row]] = {}
    for t in trials:
        if t.kind == "trial":
            chains.setdefault(_chain_key(t), []).append(t)
    out = []
    for t in trials:
        chain = chains.get(_chain_key(t), []) if t.kind == "trial" else []
        if len(chain) <= 1:
            out.append(t)
        elif t is max(chain, key=lambda c: c.trial or 0):
            t.attempts = sorted(c.trial or 0 for c in chain if c is not t)
            out.append(t)
    return out


def _chain_key(t: Row) -> tuple[str | None, int]:
    return (t.study, t.retry_of if t.retry_of is not None else (t.trial or 0))


def _retry_of(value: Any, study: str, number: int) -> int | None:
    root = _checked(value, "count", study, number, "failed_trial")
    return None if root is None or root == number else int(root)


def state_label(row: dict[str, Any]) -> str:
    """A trial row's state as reports show it: ``fail (oom)``, ``complete (retry of #3)``."""
    notes = [str(row["fail_reason"])] if row.get("fail_reason") else []
    if row.get("attempts"):
        notes.append("retry of " + ", ".join(f"#{n}" for n in row["attempts"]))
    return str(row["state"]) + (f" ({'; '.join(notes)})" if notes else "")


def _beats(t: Row, b: Row) -> bool:
    mine = t.val_accuracy if b.metric == "val" else t.test_accuracy
    return mine is not None and b.test_accuracy is not None and mine > b.test_accuracy


def study_rows(study: optuna.Study) -> list[Row]:
    """Rows for every trial of a study (not ranked)."""
    return [trial_row(study.study_name, t) for t in study.get_trials(deepcopy=False)]


def study_summary(study: optuna.Study, baselines: list[Baseline], dataset: str) -> dict[str, Any]:
    """Machine-readable summary: counts by state, failures by cause, best trial, leaderboard.

    Counts are of trials as the leaderboard lists them: a re-queued trial and its retries count
    once (``resumed`` says how many earlier attempts were folded into their retries).
    """
    frozen = study.get_trials(deepcopy=False)
    direction = _direction(study.direction)
    retrain = retrain_records(study.user_attrs)
    rows = rank(
        [trial_row(study.study_name, t, retrain.get(t.number)) for t in frozen],
        baselines,
        dataset,
        direction,
    )
    trials = [r for r in rows if r.kind == "trial"]
    counts = Counter(r.state for r in trials)
    best = next((r for r in trials if r.rank is not None and r.state == "complete"), None)
    return {
        "study": study.study_name,
        "dataset": dataset,
        "direction": direction,
        "metric": (study.metric_names or [DEFAULT_METRIC])[0],
        "counts": {s.name.lower(): counts.get(s.name.lower(), 0) for s in TrialState},
        "n_trials": len(trials),
        "resumed": sum(len(r.attempts) for r in trials),
        "failed_by_cause": {k: n for k, n in _failed_by_cause(trials).items() if n},
        "best": None
        if best is None
        else {
            "trial": best.trial,
            "val_accuracy": best.val_accuracy,
            "test_accuracy": best.test_accuracy,
            "epochs": best.epochs,
            "config": best.config,
            "params": best.params,
        },
        "leaderboard": [r.to_dict() for r in rows],
    }


# --------------------------------------------------------------------------------------------
# Leaderboard over a whole storage (dashboard, reports): a fast SQL path for RDB storages.
# --------------------------------------------------------------------------------------------

FAIL_CAUSES = ("preempted", "oom", "nan", "timeout", "exception")
_ATTR_KEYS = (
    attr_names.TEST_ACCURACY,
    attr_names.EPOCHS,
    attr_names.WALL_TIME_S,
    attr_names.N_PARAMS,
    attr_names.CONFIG,
    attr_names.FAIL_REASON,
    attr_names.SLURM_JOB_ID,
    attr_names.SLURM_ARRAY_TASK_ID,
    attr_names.GPU,
)
UNKNOWN_DATASET = "unknown"


@dataclass(frozen=True)
class StudyInfo:
    """A study on the storage: its id (optuna-dashboard's URLs use it), name, dataset, size."""

    study_id: int
    name: str
    dataset: str
    n_trials: int


@dataclass
class _Trial:
    study_id: int
    row: Row
    started: datetime | None
    finished: datetime | None


def list_studies(storage: optuna.storages.BaseStorage) -> list[StudyInfo]:
    """All studies on ``storage`` with their dataset (user attr ``hpsearch:dataset``)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return _sql_studies(storage)
    return [
        StudyInfo(
            s._study_id,
            s.study_name,
            str(s.user_attrs.get(attr_names.DATASET) or UNKNOWN_DATASET),
            len(storage.get_all_trials(s._study_id, deepcopy=False)),
        )
        for s in storage.get_all_studies()
    ]


def leaderboard(
    storage: optuna.storages.BaseStorage,
    baselines: list[Baseline],
    *,
    dataset: str | None = None,
    study: str | None = None,
    states: Iterable[str] | None = None,
    include_params: bool = False,
    cache: LeaderboardRowCache | None = None,
) -> dict[str, Any]:
    """Trials of all studies of one dataset ranked by validation accuracy, with baselines.

    This is what ``/api/leaderboard`` returns and what reports render. On an RDB storage it reads
    optuna's tables with a few aggregate queries (a 20,000-trial study answers in well under a
    second) instead of loading every :class:`~optuna.trial.FrozenTrial`; other storages go through
    :func:`trial_row`, with the same result.

    Args:
        storage: An optuna storage (``hpsearch.storage.get_storage(url, heartbeat=False)``).
        baselines: From :func:`hpsearch.baselines.load_baselines`.
        dataset: Rank the studies of this dataset. Defaults to the dataset of ``study``, else the
            dataset with the most trials.
        study: Only this study's trials.
        states: Only rows of trials in these states (``complete``, ``pruned``, ``fail``,
            ``running``, ``waiting``); ranks stay those of the unfiltered ranking. Baselines are
            always included.
        include_params: Fill each row's ``params`` (the Optuna parameters). Defaults to empty
            (``config`` already summarizes the architecture and optimizer), which keeps a
            20,000-trial answer small.
        cache: A :class:`LeaderboardRowCache` kept between calls (the dashboard keeps one), so that
            finished trials are read once.
    Returns:
        A JSON-ready dict: ``dataset``, ``datasets``, ``studies``, ``rows`` (ranked, baselines
        marked ``kind="baseline"``), ``counts``, ``failed_by_cause``, ``slurm_jobs``,
        ``history`` (best-so-far validation accuracy and the test accuracy of that trial; see
        :func:`best_so_far`) and ``baselines``.
    Raises:
        StorageError: If ``study`` or ``dataset`` is not on the storage.

    Example:
        >>> board = leaderboard(get_storage("sqlite:///hpsearch.db", heartbeat=False),
        ...                     load_baselines(), dataset="fashion_mnist")  # doctest: +SKIP
    """
    # Tens of thousands of small objects: the cyclic GC would otherwise run many times per call.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _leaderboard(storage, baselines, dataset, study, states, include_params, cache)
    finally:
        if enabled:
            gc.enable()


def _leaderboard(
    storage: optuna.storages.BaseStorage,
    baselines: list[Baseline],
    dataset: str | None,
    study: str | None,
    states: Iterable[str] | None,
    include_params: bool,
    cache: LeaderboardRowCache | None,
) -> dict[str, Any]:
    infos = list_studies(storage)
    datasets = sorted({s.dataset for s in infos})
    if study is not None:
        match = [s for s in infos if s.name == study]
        if not match:
            known = ", ".join(sorted(s.name for s in infos)) or "none"
            raise StorageError(f"no study named {study!r} (studies: {known})")
        if dataset is not None and match[0].dataset != dataset:
            raise StorageError(
                f"study {study!r} is on dataset {match[0].dataset!r}, not {dataset!r}"
            )
        dataset = match[0].dataset
        chosen = match
    else:
        if dataset is None and infos:
            sizes = Counter[str]()
            for s in infos:
                sizes[s.dataset] += s.n_trials
            dataset = max(datasets, key=lambda d: (sizes[d], d != UNKNOWN_DATASET, d))
        if dataset is not None and infos and dataset not in datasets:
            raise StorageError(
                f"no study on dataset {dataset!r} (datasets: {', '.join(datasets) or 'none'})"
            )
        chosen = [s for s in infos if s.dataset == dataset]
    if isinstance(storage, optuna.storages.RDBStorage):
        trials = _sql_trials(storage, chosen, params=include_params, cache=cache)
    else:
        trials = _generic_trials(storage, chosen)
        if not include_params:
            for t in trials:
                t.row.params = {}
    _attach_retrain(storage, chosen, trials)
    direction = (
        _direction(storage.get_study_directions(chosen[0].study_id)[0]) if chosen else "maximize"
    )
    metric = objective_metric(storage, chosen[0].name) if chosen else DEFAULT_METRIC
    ranked = rank([t.row for t in trials], baselines, dataset, direction)
    listed = [r for r in ranked if r.kind == "trial"]
    extra = {(t.row.study, t.row.trial): t for t in trials}
    wanted = None if states is None else {s.lower() for s in states}
    rows = []
    for r in ranked:
        if r.kind == "trial" and wanted is not None and r.state not in wanted:
            continue
        d = _row_dict(r)
        if r.kind == "trial":
            t = extra[(r.study, r.trial)]
            d["study_id"] = t.study_id
            d["finished"] = _iso(t.finished)
            d["dashboard_url"] = trial_url(t.study_id, r.trial or 0)
        rows.append(d)
    counts = Counter(r.state for r in listed)
    return {
        "dataset": dataset,
        "datasets": datasets,
        "study": study,
        "studies": [
            {
                "name": s.name,
                "id": s.study_id,
                "dataset": s.dataset,
                "n_trials": s.n_trials,
                "dashboard_url": f"/dashboard/studies/{s.study_id}",
            }
            for s in sorted(infos, key=lambda s: s.name)
        ],
        "n_trials": len(listed),
        "counts": {s.name.lower(): counts.get(s.name.lower(), 0) for s in TrialState},
        "resumed": sum(len(r.attempts) for r in listed),
        "failed_by_cause": _failed_by_cause(listed),
        "slurm_jobs": _slurm_jobs(trials),
        "direction": direction,
        "metric": metric,
        "history": best_so_far(trials, direction=direction),
        "baselines": [
            asdict(b)
            for b in (for_dataset(baselines, dataset) if dataset else [])
            if math.isfinite(b.accuracy)
        ],
        "rows": rows,
    }


def best_complete_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials with a finite value, in the study's direction (the
    highest accuracy, the lowest loss; ties: the lower number). Pruned trials never trained
    for the full budget, so their last value is not comparable and they are not candidates."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    return sorted(complete, key=lambda t: (sign * (t.value or 0.0), t.number))[:n]


def objective_metric(storage: optuna.storages.BaseStorage, study_name: str) -> str:
    """The study's objective metric (``val_loss``, ...): the metric name hpsearch gives its
    studies; ``val_accuracy`` for a study that has none (plain Optuna, older hpsearch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = optuna.load_study(study_name=study_name, storage=storage).metric_names
    return names[0] if names else DEFAULT_METRIC


def trial_url(study_id: int, number: int) -> str:
    """optuna-dashboard's page for one trial (relative to the server root)."""
    return f"/dashboard/studies/{study_id}/trials?numbers={number}"


def best_so_far(
    trials: list[_Trial], max_points: int = 2000, direction: str = "maximize"
) -> list[dict[str, Any]]:
    """Complete trials in order of completion, each with the best validation accuracy so far.

    ``best_test_accuracy`` is the test accuracy of the trial that is best on validation at that
    point (the honest number), not the best test accuracy seen. Every improvement and the last
    trial are kept; with more than ``max_points`` complete trials the others are thinned evenly.
    """
    done = sorted(
        (t for t in trials if t.row.state == "complete" and t.row.val_accuracy is not None),
        key=lambda t: (t.finished or datetime.max.replace(tzinfo=timezone.utc), t.row.trial or 0),
    )
    starts = [t.started for t in trials if t.started is not None]
    t0 = min(starts) if starts else None
    out: list[dict[str, Any]] = []
    best: _Trial | None = None
    stride = max(1, math.ceil(len(done) / max_points))
    for i, t in enumerate(done, start=1):
        sign = -1.0 if direction == "minimize" else 1.0
        improved = best is None or sign * (t.row.val_accuracy or 0.0) > sign * (
            best.row.val_accuracy or 0.0
        )
        if improved:
            best = t
        if not improved and i % stride and i != len(done):
            continue
        assert best is not None
        hours = None
        if t0 is not None and t.finished is not None:
            hours = (t.finished - t0).total_seconds() / 3600.0
        out.append(
            {
                "n": i,
                "hours": hours,
                "study": t.row.study,
                "trial": t.row.trial,
                "val_accuracy": t.row.val_accuracy,
                "best_val_accuracy": best.row.val_accuracy,
                "best_test_accuracy": best.row.test_accuracy,
                "best_trial": f"{best.row.study}#{best.row.trial}",
            }
        )
    return out


def _failed_by_cause(rows: list[Row]) -> dict[str, int]:
    causes = Counter(str(r.fail_reason or "exception") for r in rows if r.state == "fail")
    out = {c: causes.pop(c, 0) for c in FAIL_CAUSES}
    out.update(causes)
    return out


def _slurm_jobs(trials: list[_Trial]) -> list[dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for t in trials:
        job_task = t.row.slurm_job or ""
        job = job_task.split("_")[0] or "local"
        entry = jobs.setdefault(
            job, {"job": job, "tasks": set(), "trials": 0, **{s: 0 for s in _STATES}}
        )
        if "_" in job_task:
            entry["tasks"].add(job_task.split("_", 1)[1])
        entry["trials"] += 1
        if t.row.state in _STATES:
            entry[t.row.state] += 1
    return [
        {**e, "tasks": len(e["tasks"])}
        for e in sorted(jobs.values(), key=lambda e: (e["job"] == "local", e["job"]))
    ]


_STATES = ("complete", "pruned", "fail", "running", "waiting")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _generic_trials(storage: optuna.storages.BaseStorage, chosen: list[StudyInfo]) -> list[_Trial]:
    out = []
    for s in chosen:
        for t in storage.get_all_trials(s.study_id, deepcopy=False):
            out.append(
                _Trial(
                    s.study_id,
                    trial_row(s.name, t),
                    _utc(t.datetime_start),
                    _utc(t.datetime_complete),
                )
            )
    return out


def _utc(when: datetime | str | None) -> datetime | None:
    if when is None:
        return None
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _sql_studies(storage: optuna.storages.RDBStorage) -> list[StudyInfo]:
    return [
        StudyInfo(s.study_id, s.name, str(s.attr or UNKNOWN_DATASET), s.n_trials)
        for s in read_studies(storage, attr_names.DATASET)
    ]


class LeaderboardRowCache:
    """Rows of finished trials by trial id, reused across :func:`leaderboard` calls.

    A complete, pruned or failed trial never changes its state, value or epochs, so a live
    dashboard only reads the new and the running trials on each refresh. An entry is checked
    against the trial's study, number, state and completion time; the whole cache is dropped
    every ``max_age_s`` seconds so that later edits of user attributes show up.
    """

    def __init__(self, max_age_s: float = 300.0) -> None:
        self.max_age_s = max_age_s
        self._rows: dict[int, tuple[tuple[Any, ...], _Trial]] = {}
        self._born = time.monotonic()
        self._lock = threading.Lock()

    def get(self, trial_id: int, stamp: tuple[Any, ...]) -> _Trial | None:
        """The cached trial if ``stamp`` (study, number, state, completion) still matches."""
        if time.monotonic() - self._born > self.max_age_s:
            with self._lock:
                self._rows.clear()
                self._born = time.monotonic()
        hit = self._rows.get(trial_id)
        if hit is None or hit[0] != stamp:
            return None
        return hit[1]

    def put(self, trial_id: int, stamp: tuple[Any, ...], trial: _Trial) -> None:
        """Remember a finished trial."""
        with self._lock:
            self._rows[trial_id] = (stamp, trial)


_FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def _needs_steps(r: TrialRecord) -> bool:
    """Epoch reports are read for trials whose epoch count is not recorded as a count."""
    return r.state != "COMPLETE" or coerce((r.attrs or {}).get(attr_names.EPOCHS), "count") is None


def _sql_trials(
    storage: optuna.storages.RDBStorage,
    chosen: list[StudyInfo],
    *,
    params: bool = False,
    cache: LeaderboardRowCache | None = None,
) -> list[_Trial]:
    names = {s.study_id: s.name for s in chosen}
    hits: dict[int, _Trial] = {}

    def known(r: TrialRecord) -> bool:
        hit = cache.get(r.trial_id, r.stamp) if cache is not None else None
        if hit is not None:
            hits[r.trial_id] = hit
        return hit is not None

    records = read_trials(
        storage, list(names), _ATTR_KEYS, known=known, needs_steps=_needs_steps, with_params=params
    )
    out = []
    for r in records:
        hit = hits.get(r.trial_id)
        if hit is not None:
            trial = _Trial(hit.study_id, _copy_row(hit.row), hit.started, hit.finished)
        else:
            name = names[r.study_id]
            row = _sql_row(name, r.number, r.state, r.value, r.attrs or {}, r.steps)
            row.retry_of = _retry_of(r.retry_of, name, r.number)
            trial = _Trial(r.study_id, row, _utc(r.started), _utc(r.finished))
            if cache is not None and r.state in _FINISHED:
                cache.put(r.trial_id, r.stamp, trial)
                trial = _Trial(r.study_id, _copy_row(row), trial.started, trial.finished)
        if r.params is not None:
            trial.row.params = r.params
        out.append(trial)
    return out


def _sql_row(
    study: str,
    number: int,
    state: str,
    value: float | None,
    attrs: dict[str, Any],
    steps: tuple[int, float] | None,
) -> Row:
    """A trial's leaderboard row from its columns (as :func:`_sql_trials` reads them).

    Every attribute goes through :func:`coerce`: a malformed one becomes missing data.
    """
    n_steps, last = steps or (0, None)
    val = None
    if state == "COMPLETE" and value is not None:
        val = _checked(value, "float", study, number, "value")
    if val is None and n_steps:
        val = coerce(last, "float")  # NaN: a diverged epoch, already reported by the trial
    get = attrs.get
    wall = _checked(get(attr_names.WALL_TIME_S), "seconds", study, number, "wall_time_s")
    gpu = _checked(get(attr_names.GPU), "text", study, number, "gpu")
    n_gpus = len([g for g in gpu.split(",") if g]) if gpu else 0
    job = _checked(get(attr_names.SLURM_JOB_ID), "text", study, number, "slurm_job_id")
    task = _checked(
        get(attr_names.SLURM_ARRAY_TASK_ID), "text", study, number, "slurm_array_task_id"
    )
    if job and task is not None:
        job = f"{job}_{task}"
    epochs = _checked(get(attr_names.EPOCHS), "count", study, number, "epochs")
    return Row(
        kind="trial",
        rank=None,
        val_accuracy=val,
        test_accuracy=_checked(
            get(attr_names.TEST_ACCURACY), "float", study, number, "test_accuracy"
        ),
        study=study,
        trial=number,
        state=state.lower(),
        epochs=epochs or (n_steps or None),
        wall_minutes=None if wall is None else wall / 60.0,
        gpu_minutes=None if wall is None or not n_gpus else wall * n_gpus / 60.0,
        n_params=_checked(get(attr_names.N_PARAMS), "count", study, number, "n_params"),
        config=_checked(get(attr_names.CONFIG), "text", study, number, "config"),
        fail_reason=_checked(get(attr_names.FAIL_REASON), "text", study, number, "fail_reason")
        if state == "FAIL"
        else None,
        slurm_job=job,
    )


_KINDS = {
    "float": "a finite number",
    "seconds": "a finite number >= 0",
    "count": "a whole number >= 0",
    "text": "a string",
}
_LOGGED: set[tuple[str, str]] = set()


def coerce(value: Any, kind: str) -> Any:
    """A trial attribute as the leaderboard's type, or None when it is missing or malformed.

    Args:
        value: The stored value (decoded JSON: any type).
        kind: ``float`` (finite), ``seconds`` (finite, >= 0), ``count`` (whole number >= 0,
            ``2.0`` accepted) or ``text`` (a string; numbers are written out).
    Returns:
        A ``float``, ``int`` or ``str``, or None. ``True``/``False``, NaN, infinities, numeric
        strings and nested values are malformed for the number kinds.

    Example:
        >>> coerce(61.5, "seconds"), coerce("60s", "seconds"), coerce(3.0, "count")
        (61.5, None, 3)
    """
    t = type(value)  # exact types: JSON decodes to these, and bool is not a number here
    if kind == "text":
        if t is str:
            return value
        return str(value) if t is int or t is float else None
    if (t is float or t is int) and math.isfinite(value):
        if kind == "float":
            return float(value)
        if kind == "seconds":
            return float(value) if value >= 0 else None
        if kind == "count" and value >= 0 and float(value).is_integer():
            return int(value)
    return None


def _checked(value: Any, kind: str, study: str, number: int, name: str) -> Any:
    """:func:`coerce`, logging a malformed value once per study and attribute."""
    if value is None:
        return None
    out = coerce(value, kind)
    if out is None and (study, name) not in _LOGGED:
        _LOGGED.add((study, name))
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        _logger.warning(
            "study %s, trial %d: %s is malformed (%s; expected %s): shown as missing data "
            "(further malformed values of %s in this study are not logged)",
            study,
            number,
            name,
            shown,
            _KINDS.get(kind, kind),
            name,
        )
    return out


def _copy_row(row: Row) -> Row:
    new = object.__new__(Row)
    new.__dict__.update(row.__dict__)
    return new


def _row_dict(row: Row) -> dict[str, Any]:
    """``row.to_dict()`` without ``asdict``'s deep copies (20,000 rows per request)."""
    d = dict(row.__dict__)
    d["params"] = dict(row.params)
    d["beats"] = list(row.beats)
    d["attempts"] = list(row.attempts)
    for k in ("val_accuracy", "test_accuracy", "wall_minutes", "gpu_minutes"):
        v = d[k]
        if isinstance(v, float) and math.isnan(v):
            d[k] = None
    return d


def _direction(direction: optuna.study.StudyDirection) -> str:
    """``maximize`` or ``minimize`` (hpsearch studies minimize when their metric is a loss)."""
    return "minimize" if direction == optuna.study.StudyDirection.MINIMIZE else "maximize"


# --------------------------------------------------------------------------------------------
# Re-training figures (`hpsearch best --seeds K --top N`, see hpsearch.export)
# --------------------------------------------------------------------------------------------

RETRAIN_ATTR_PREFIX = attr_names.RETRAIN_PREFIX
"""Study user attribute ``hpsearch:retrain:<trial number>``: that trial's re-training figures.

Optuna refuses to change a finished trial's attributes, so they are stored on the study."""


def retrain_records(user_attrs: dict[str, Any]) -> dict[int, Any]:
    """The re-training figures in a study's user attributes, by trial number."""
    out: dict[int, Any] = {}
    for key, value in user_attrs.items():
        number = key[len(RETRAIN_ATTR_PREFIX) :] if key.startswith(RETRAIN_ATTR_PREFIX) else ""
        if number.isdigit():
            out[int(number)] = value
    return out


def apply_retrain(row: Row, record: Any) -> None:
    """Copy a :func:`retrain_records` entry onto a row; malformed values become missing."""
    if not isinstance(record, dict):
        return
    row.retrain_val_mean = _finite(record.get("val_mean"))
    row.retrain_val_std = _finite(record.get("val_std"))
    row.retrain_test_mean = _finite(record.get("test_mean"))
    row.retrain_test_std = _finite(record.get("test_std"))
    seeds = record.get("seeds")
    row.retrain_seeds = len(seeds) if isinstance(seeds, list) and seeds else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _attach_retrain(
    storage: optuna.storages.BaseStorage, chosen: list[StudyInfo], trials: list[_Trial]
) -> None:
    """Put the stored re-training figures on the rows (after the cache: they change later)."""
    by_study: dict[int, dict[int, Any]] = {}
    if isinstance(storage, optuna.storages.RDBStorage):
        found = read_study_attrs(storage, [s.study_id for s in chosen], RETRAIN_ATTR_PREFIX)
        by_study = {study_id: retrain_records(attrs) for study_id, attrs in found.items()}
    else:
        for s in chosen:
            by_study[s.study_id] = retrain_records(storage.get_study_user_attrs(s.study_id))
    for t in trials:
        record = by_study.get(t.study_id, {}).get(t.row.trial or 0)
        if record is not None:
            apply_retrain(t.row, record)
