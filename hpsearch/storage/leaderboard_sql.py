"""The leaderboard's reads: Optuna's tables as a few aggregate SQL queries.

A 20,000-trial study answers in well under a second, where loading every
:class:`~optuna.trial.FrozenTrial` takes many. :mod:`hpsearch.ranking` turns these records into
leaderboard rows. Study and trial ids are integers read from the database, so they are
inlined: the same SQL runs on SQLite, PostgreSQL and MySQL without driver-specific lists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

_CHUNK = 500


@dataclass(frozen=True)
class StudyRecord:
    """A study as stored: its id, name, the JSON of one study attribute, its trial count."""

    study_id: int
    name: str
    attr: Any
    n_trials: int


@dataclass
class TrialRecord:
    """A trial as stored, with the columns the leaderboard needs.

    ``attrs`` is None for a trial the caller said it already has (``known``); ``steps`` is the
    number of epoch reports and the last one, where the caller asked for them; ``retry_of`` is
    Optuna's ``failed_trial`` system attribute of a retry (the first attempt's number).
    """

    trial_id: int
    study_id: int
    number: int
    state: str
    started: datetime | str | None
    finished: datetime | str | None
    value: float | None
    attrs: dict[str, Any] | None = None
    steps: tuple[int, float] | None = None
    retry_of: Any = None
    params: dict[str, Any] | None = None

    @property
    def stamp(self) -> tuple[Any, ...]:
        """What identifies this version of a finished trial (it never changes after)."""
        return (self.study_id, self.number, self.state, str(self.finished))


def _ids_sql(ids: Iterable[int]) -> str:
    return ", ".join(str(int(i)) for i in ids)


def read_studies(storage: optuna.storages.RDBStorage, attr_key: str) -> list[StudyRecord]:
    """Every study with its trial count and the (decoded) study user attribute ``attr_key``."""
    with storage.engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT s.study_id, s.study_name, a.value_json FROM studies s "
                "LEFT JOIN study_user_attributes a "
                "ON a.study_id = s.study_id AND a.key = :key"
            ),
            {"key": attr_key},
        ).all()
        counted = conn.execute(sa.text("SELECT study_id, COUNT(*) FROM trials GROUP BY study_id"))
        sizes: dict[int, int] = {int(i): int(n) for i, n in counted.all()}
    return [
        StudyRecord(int(i), str(n), None if d is None else json.loads(d), sizes.get(int(i), 0))
        for i, n, d in names
    ]


def read_study_attrs(
    storage: optuna.storages.RDBStorage, study_ids: Sequence[int], prefix: str
) -> dict[int, dict[str, Any]]:
    """The study user attributes whose key starts with ``prefix``, decoded, by study id
    (a value that is not JSON is left out)."""
    if not study_ids:
        return {}
    out: dict[int, dict[str, Any]] = {}
    with storage.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT a.study_id, a.key, a.value_json FROM study_user_attributes a "
                f"WHERE a.study_id IN ({_ids_sql(study_ids)}) AND a.key LIKE :pattern"
            ),
            {"pattern": prefix + "%"},  # a superset if prefix has wildcards: checked below
        ).all()
    for study_id, key, value in rows:
        if not str(key).startswith(prefix):
            continue
        try:
            out.setdefault(int(study_id), {})[str(key)] = json.loads(value)
        except (TypeError, ValueError):
            continue
    return out


def read_trials(
    storage: optuna.storages.RDBStorage,
    study_ids: Sequence[int],
    attr_keys: Sequence[str],
    *,
    known: Callable[[TrialRecord], bool] | None = None,
    needs_steps: Callable[[TrialRecord], bool] | None = None,
    with_params: bool = False,
) -> list[TrialRecord]:
    """The trials of these studies in storage order, with the user attributes ``attr_keys``.

    Args:
        storage: The study database.
        study_ids: Which studies.
        attr_keys: The user attributes to read (decoded from JSON; nulls left out).
        known: True for a trial the caller already has: its attributes are not read.
        needs_steps: True for a trial (its attributes read) whose epoch reports are wanted.
        with_params: Also read every trial's parameters (external representation).
    """
    if not study_ids:
        return []
    with storage.engine.connect() as conn:
        base = conn.exec_driver_sql(
            "SELECT t.trial_id, t.study_id, t.number, t.state, t.datetime_start, "
            "t.datetime_complete, v.value FROM trials t "
            "LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
            f"WHERE t.study_id IN ({_ids_sql(study_ids)})"
        ).all()
        records = [
            TrialRecord(
                int(trial_id),
                int(study_id),
                int(number),
                state.name if isinstance(state, TrialState) else str(state),
                start,
                complete,
                value,
            )
            for trial_id, study_id, number, state, start, complete, value in base
        ]
        todo = [r for r in records if known is None or not known(r)]
        if todo:
            attrs = _fetch_attrs(conn, [r.trial_id for r in todo], attr_keys)
            for r in todo:
                r.attrs = attrs[r.trial_id]
            wanted = [r.trial_id for r in todo if needs_steps is None or needs_steps(r)]
            steps = _fetch_steps(conn, wanted)
            retries = _fetch_retries(conn, [r.trial_id for r in todo])
            for r in todo:
                r.steps = steps.get(r.trial_id)
                r.retry_of = retries.get(r.trial_id)
        if with_params:
            params = _fetch_params(conn, [r.trial_id for r in records])
            for r in records:
                r.params = params.get(r.trial_id, {})
    return records


def _fetch_attrs(
    conn: sa.Connection, ids: list[int], attr_keys: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """These user attributes of these trials: an index range scan, filtered here."""
    wanted = set(ids)
    keys = ", ".join("'" + k.replace("'", "''") + "'" for k in attr_keys)
    attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if len(ids) > 10 * _CHUNK:  # most of the study: one index range scan
        parts = [f"trial_id BETWEEN {min(ids)} AND {max(ids)}"]
    else:
        parts = [
            f"trial_id IN ({_ids_sql(ids[k : k + _CHUNK])})" for k in range(0, len(ids), _CHUNK)
        ]
    for where in parts:
        rows = conn.exec_driver_sql(  # `key` is a reserved word in MariaDB: qualified
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


def _fetch_retries(conn: sa.Connection, ids: list[int]) -> dict[int, Any]:
    """``failed_trial`` (the first attempt's number) of the retries among these trials."""
    out: dict[int, Any] = {}
    for k in range(0, len(ids), _CHUNK):
        rows = conn.exec_driver_sql(
            "SELECT a.trial_id, a.value_json FROM trial_system_attributes a "
            f"WHERE a.trial_id IN ({_ids_sql(ids[k : k + _CHUNK])}) AND a.key = 'failed_trial'"
        ).all()
        for trial_id, value in rows:
            out[int(trial_id)] = None if value is None else json.loads(value)
    return out


def _fetch_steps(conn: sa.Connection, ids: list[int]) -> dict[int, tuple[int, float]]:
    """Epoch count and last reported value of these trials."""
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


def read_state_counts(storage: optuna.storages.RDBStorage) -> dict[int, dict[str, int]]:
    """Trials per study and state (``{study_id: {"complete": n, ...}}``), in one query."""
    out: dict[int, dict[str, int]] = {}
    with storage.engine.connect() as conn:
        for study_id, state, n in conn.execute(
            sa.text("SELECT study_id, state, COUNT(*) FROM trials GROUP BY study_id, state")
        ):
            out.setdefault(int(study_id), {})[str(state).lower()] = int(n)
    return out


def read_value_ranges(
    storage: optuna.storages.RDBStorage,
) -> dict[int, tuple[float | None, float | None]]:
    """The highest and lowest first objective value of each study's complete trials."""
    with storage.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.study_id, MAX(v.value), MIN(v.value) FROM trials t "
                "JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'COMPLETE' AND v.objective = 0 GROUP BY t.study_id"
            )
        )
        return {int(study_id): (high, low) for study_id, high, low in rows}
