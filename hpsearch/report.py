"""Rank trials against literature baselines: the data behind ``status``, the dashboard and reports.

Honest split: trials are ranked by **validation** accuracy (what the search optimized). Test
accuracy is shown beside it and is the number compared with a baseline's test accuracy to mark
a trial as beating it; it is never used to rank or select.
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from hpsearch.baselines import Baseline, for_dataset
from hpsearch.errors import StorageError

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
    """A leaderboard row for one trial: value if complete, else its last reported epoch.

    ``retrain`` is the trial's entry of :func:`retrain_records` (re-training figures), if any.
    """
    steps = trial.intermediate_values
    last = (len(steps), steps[max(steps)]) if steps else None
    row = _sql_row(study_name, trial.number, trial.state.name, trial.value, trial.user_attrs, last)
    row.params = dict(trial.params)
    apply_retrain(row, retrain)
    return row


def rank(trials: list[Row], baselines: list[Baseline], dataset: str | None = None) -> list[Row]:
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
    retrain = retrain_records(study.user_attrs)
    return [
        trial_row(study.study_name, t, retrain.get(t.number))
        for t in study.get_trials(deepcopy=False)
    ]


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
    retrain = retrain_records(study.user_attrs)
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
            for r in rank(
                [trial_row(study.study_name, t, retrain.get(t.number)) for t in trials],
                baselines,
                dataset,
            )
        ],
    }


# --------------------------------------------------------------------------------------------
# Leaderboard over a whole storage (dashboard, reports): a fast SQL path for RDB storages.
# --------------------------------------------------------------------------------------------

FAIL_CAUSES = ("preempted", "oom", "nan", "timeout", "exception")
_ATTR_KEYS = (
    "hpsearch:test_accuracy",
    "hpsearch:epochs",
    "hpsearch:wall_time_s",
    "hpsearch:n_params",
    "hpsearch:config",
    "hpsearch:fail_reason",
    "hpsearch:slurm_job_id",
    "hpsearch:slurm_array_task_id",
    "hpsearch:gpu",
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
            str(s.user_attrs.get("hpsearch:dataset") or UNKNOWN_DATASET),
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
    cache: TrialCache | None = None,
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
        cache: A :class:`TrialCache` kept between calls (the dashboard keeps one), so that
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
    cache: TrialCache | None,
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
    ranked = rank([t.row for t in trials], baselines, dataset)
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
    counts = Counter(t.row.state for t in trials)
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
        "n_trials": len(trials),
        "counts": {s.name.lower(): counts.get(s.name.lower(), 0) for s in TrialState},
        "failed_by_cause": _failed_by_cause(trials),
        "slurm_jobs": _slurm_jobs(trials),
        "history": best_so_far(trials),
        "baselines": [asdict(b) for b in (for_dataset(baselines, dataset) if dataset else [])],
        "rows": rows,
    }


def trial_url(study_id: int, number: int) -> str:
    """optuna-dashboard's page for one trial (relative to the server root)."""
    return f"/dashboard/studies/{study_id}/trials?numbers={number}"


def best_so_far(trials: list[_Trial], max_points: int = 2000) -> list[dict[str, Any]]:
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
        improved = best is None or (t.row.val_accuracy or 0.0) > (best.row.val_accuracy or 0.0)
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


def _failed_by_cause(trials: list[_Trial]) -> dict[str, int]:
    causes = Counter(
        str(t.row.fail_reason or "exception") for t in trials if t.row.state == "fail"
    )
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
    with storage.engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT s.study_id, s.study_name, a.value_json FROM studies s "
                "LEFT JOIN study_user_attributes a "
                "ON a.study_id = s.study_id AND a.key = 'hpsearch:dataset'"
            )
        ).all()
        counted = conn.execute(sa.text("SELECT study_id, COUNT(*) FROM trials GROUP BY study_id"))
        sizes: dict[int, int] = {int(i): int(n) for i, n in counted.all()}
    return [
        StudyInfo(int(i), str(n), str(_json(d) or UNKNOWN_DATASET), int(sizes.get(i, 0)))
        for i, n, d in names
    ]


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class TrialCache:
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
_CHUNK = 500


def _ids_sql(ids: Iterable[int]) -> str:
    return ", ".join(str(int(i)) for i in ids)


def _sql_trials(
    storage: optuna.storages.RDBStorage,
    chosen: list[StudyInfo],
    *,
    params: bool = False,
    cache: TrialCache | None = None,
) -> list[_Trial]:
    if not chosen:
        return []
    names = {s.study_id: s.name for s in chosen}
    # Study and trial ids are integers read from the database, so they are inlined: the same SQL
    # runs on SQLite, PostgreSQL and MySQL without driver-specific parameter lists.
    studies_in = _ids_sql(names)
    with storage.engine.connect() as conn:
        base = conn.exec_driver_sql(
            "SELECT t.trial_id, t.study_id, t.number, t.state, t.datetime_start, "
            "t.datetime_complete, v.value FROM trials t "
            "LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
            f"WHERE t.study_id IN ({studies_in})"
        ).all()
        out: list[_Trial] = []
        by_id: dict[int, _Trial] = {}
        todo = []
        for trial_id, study_id, number, state, start, complete, value in base:
            state = state.name if isinstance(state, TrialState) else str(state)
            stamp = (study_id, number, state, str(complete))
            hit = cache.get(trial_id, stamp) if cache is not None else None
            if hit is not None:
                by_id[trial_id] = _Trial(
                    hit.study_id, _copy_row(hit.row), hit.started, hit.finished
                )
            else:
                todo.append((trial_id, study_id, number, state, start, complete, value, stamp))
        if todo:
            ids = [t[0] for t in todo]
            attrs = _fetch_attrs(conn, ids)
            need_steps = [
                t[0] for t in todo if t[3] != "COMPLETE" or "hpsearch:epochs" not in attrs[t[0]]
            ]
            steps = _fetch_steps(conn, need_steps)
            for trial_id, study_id, number, state, start, complete, value, stamp in todo:
                row = _sql_row(
                    names[study_id], number, state, value, attrs[trial_id], steps.get(trial_id)
                )
                trial = _Trial(study_id, row, _utc(start), _utc(complete))
                if cache is not None and state in _FINISHED:
                    cache.put(trial_id, stamp, trial)
                    trial = _Trial(study_id, _copy_row(row), trial.started, trial.finished)
                by_id[trial_id] = trial
        if params:
            for trial_id, values in _fetch_params(conn, list(by_id)).items():
                by_id[trial_id].row.params = values
    out.extend(by_id[t[0]] for t in base)
    return out


def _fetch_attrs(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The ``hpsearch:*`` columns of these trials: an index range scan, filtered here."""
    wanted = set(ids)
    keys = ", ".join(f"'{k}'" for k in _ATTR_KEYS)
    attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if len(ids) > 10 * _CHUNK:  # most of the study: one index range scan
        parts = [f"trial_id BETWEEN {min(ids)} AND {max(ids)}"]
    else:
        parts = [
            f"trial_id IN ({_ids_sql(ids[k : k + _CHUNK])})" for k in range(0, len(ids), _CHUNK)
        ]
    for where in parts:
        rows = conn.exec_driver_sql(
            # `a.key`: KEY is a reserved word in MySQL/MariaDB, allowed after a table alias.
            f"SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
            f"WHERE {where} AND a.key IN ({keys})"
        ).all()
        for trial_id, key, value in rows:
            if trial_id in wanted and value is not None:
                attrs[trial_id][key] = value
    # One JSON parse per trial instead of one per attribute.
    for trial_id, raw in attrs.items():
        if raw:
            decoded = json.loads("[" + ",".join(raw.values()) + "]")
            attrs[trial_id] = {k: v for k, v in zip(raw, decoded) if v is not None}
    return attrs


def _fetch_steps(conn: sa.Connection, ids: list[int]) -> dict[int, tuple[int, float]]:
    """Epoch count and last reported validation accuracy of these trials."""
    out: dict[int, tuple[int, float]] = {}
    for k in range(0, len(ids), _CHUNK):
        chunk = _ids_sql(ids[k : k + _CHUNK])
        rows = conn.exec_driver_sql(
            "SELECT m.trial_id, m.n, iv.intermediate_value FROM ("
            " SELECT trial_id, COUNT(*) AS n, MAX(step) AS last_step"
            f" FROM trial_intermediate_values WHERE trial_id IN ({chunk}) GROUP BY trial_id) m "
            "JOIN trial_intermediate_values iv "
            "ON iv.trial_id = m.trial_id AND iv.step = m.last_step"
        ).all()
        for trial_id, n, value in rows:
            out[trial_id] = (int(n), math.nan if value is None else float(value))
    return out


def _fetch_params(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Parameters (external representation) of these trials."""
    if not ids:
        return {}
    wanted = set(ids)
    rows = conn.exec_driver_sql(
        "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
        f"WHERE trial_id BETWEEN {min(ids)} AND {max(ids)} ORDER BY param_id"
    ).all()
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    out: dict[int, dict[str, Any]] = {}
    for trial_id, name, value, dist_json in rows:
        if trial_id not in wanted:
            continue
        dist = dists.get(dist_json)
        if dist is None:
            dist = dists[dist_json] = optuna.distributions.json_to_distribution(dist_json)
        out.setdefault(trial_id, {})[name] = dist.to_external_repr(value)
    return out


def _sql_row(
    study: str,
    number: int,
    state: str,
    value: float | None,
    attrs: dict[str, Any],
    steps: tuple[int, float] | None,
) -> Row:
    """A trial's leaderboard row from its columns (as :func:`_sql_trials` reads them)."""
    n_steps, last = steps or (0, None)
    val = value if state == "COMPLETE" else None
    if val is None and n_steps:
        val = last
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
        study=study,
        trial=number,
        state=state.lower(),
        epochs=attrs.get("hpsearch:epochs") or (n_steps or None),
        wall_minutes=None if wall is None else wall / 60.0,
        gpu_minutes=None if wall is None or not gpus else wall * len(gpus) / 60.0,
        n_params=attrs.get("hpsearch:n_params"),
        config=attrs.get("hpsearch:config"),
        fail_reason=attrs.get("hpsearch:fail_reason"),
        slurm_job=job,
    )


def _copy_row(row: Row) -> Row:
    new = object.__new__(Row)
    new.__dict__.update(row.__dict__)
    return new


def _row_dict(row: Row) -> dict[str, Any]:
    """``row.to_dict()`` without ``asdict``'s deep copies (20,000 rows per request)."""
    d = dict(row.__dict__)
    d["params"] = dict(row.params)
    d["beats"] = list(row.beats)
    for k in ("val_accuracy", "test_accuracy", "wall_minutes", "gpu_minutes"):
        v = d[k]
        if isinstance(v, float) and math.isnan(v):
            d[k] = None
    return d


# --------------------------------------------------------------------------------------------
# Re-training figures (`hpsearch best --seeds K --top N`, see hpsearch.export)
# --------------------------------------------------------------------------------------------

RETRAIN_ATTR_PREFIX = "hpsearch:retrain:"
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
        if not chosen:
            return
        with storage.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.study_id, a.key, a.value_json FROM study_user_attributes a "
                    f"WHERE a.study_id IN ({_ids_sql(s.study_id for s in chosen)}) "
                    "AND a.key LIKE :prefix"
                ),
                {"prefix": RETRAIN_ATTR_PREFIX + "%"},
            ).all()
        for study_id, key, value in rows:
            try:
                decoded = json.loads(value)
            except (TypeError, ValueError):
                continue
            by_study.setdefault(int(study_id), {}).update(retrain_records({key: decoded}))
    else:
        for s in chosen:
            by_study[s.study_id] = retrain_records(storage.get_study_user_attrs(s.study_id))
    for t in trials:
        record = by_study.get(t.study_id, {}).get(t.row.trial or 0)
        if record is not None:
            apply_retrain(t.row, record)
