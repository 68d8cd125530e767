"""Read a study's trials with plain SQL rows instead of ORM objects.

Optuna's ``RDBStorage._get_trials`` loads every trial as an ORM object with five related
collections, then builds a :class:`~optuna.trial.FrozenTrial` from it. Every worker does that
for every trial of the study (its cache is per process), so with many workers it is most of
the client's CPU. :func:`load_trials` runs the same six queries as SQLAlchemy Core selects and
builds the same FrozenTrials, about 4x faster; ``tests/test_storage.py`` checks that the
results are identical to Optuna's on every backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy
from optuna import distributions
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

_CHUNK = 500
"""Trial ids per ``IN (...)`` of the related tables (what SQLAlchemy's selectinload uses)."""

STORED_AS_UTC = hasattr(models.TrialModel, "_datetime_start_utc")
"""Optuna >= 5 stores naive UTC datetimes and shows them as local time (as here)."""


def _local(value: datetime | None) -> datetime | None:
    if value is None or not STORED_AS_UTC:
        return value
    return value.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def as_stored(local: datetime) -> datetime:
    """A naive local time as Optuna stores it in the trials table (the inverse of reading)."""
    return local.astimezone(timezone.utc).replace(tzinfo=None) if STORED_AS_UTC else local


def _value(value: float | None, kind: Any) -> float:
    """A stored value or intermediate value: infinities and NaN are stored as a type."""
    name = kind.name
    if name == "INF_POS":
        return float("inf")
    if name == "INF_NEG":
        return float("-inf")
    if name == "NAN":
        return float("nan")
    assert value is not None
    return value


class TrialLoader:
    """Builds FrozenTrials from rows; remembers parsed distributions (a study has few)."""

    def __init__(self) -> None:
        self._distributions: dict[str, distributions.BaseDistribution] = {}

    def _distribution(self, text: str) -> distributions.BaseDistribution:
        found = self._distributions.get(text)
        if found is None:
            found = self._distributions[text] = distributions.json_to_distribution(text)
        return found

    def load_trials(
        self,
        session: Any,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
        keep: Callable[[int, TrialState], bool] | None = None,
    ) -> list[FrozenTrial]:
        """What ``RDBStorage._get_trials`` returns for the same arguments, in trial id order.

        ``keep(trial_id, state)``: True for a trial that the caller already holds in that state
        and does not need again; it is left out of the result and its rows are not read.
        """
        trials = models.TrialModel.__table__
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        where = [trials.c.study_id == study_id]
        if states is not None:
            assert isinstance(states, Iterable)
            where.append(trials.c.state.in_(list(states)))
        if included and trial_id_greater_than > -1:
            where.append(
                sqlalchemy.or_(
                    trials.c.trial_id.in_(sorted(included)),
                    trials.c.trial_id > trial_id_greater_than,
                )
            )
        elif trial_id_greater_than > -1:
            where.append(trials.c.trial_id > trial_id_greater_than)
        return self._load(session, where, keep)

    def load_trial(self, session: Any, trial_id: int) -> FrozenTrial:
        """What ``RDBStorage.get_trial`` returns; KeyError if there is no such trial."""
        found = self._load(session, [models.TrialModel.__table__.c.trial_id == trial_id])
        if not found:
            raise KeyError(models.NOT_FOUND_MSG)
        return found[0]

    def _load(
        self,
        session: Any,
        where: list[Any],
        keep: Callable[[int, TrialState], bool] | None = None,
    ) -> list[FrozenTrial]:
        trials = models.TrialModel.__table__
        query = sqlalchemy.select(
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trials.c.datetime_start,
            trials.c.datetime_complete,
        ).where(*where)
        rows = session.execute(query.order_by(trials.c.trial_id)).all()
        if keep is not None:
            rows = [row for row in rows if not keep(row.trial_id, row.state)]
        if not rows:
            return []
        ids = [row.trial_id for row in rows]
        params: dict[int, list[Any]] = {i: [] for i in ids}
        values: dict[int, list[Any]] = {i: [] for i in ids}
        user_attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
        system_attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
        intermediate: dict[int, dict[int, float]] = {i: {} for i in ids}
        for chunk in (ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)):
            table = models.TrialParamModel.__table__
            for row in self._related(session, table, chunk, "param_id"):
                params[row.trial_id].append(row)
            table = models.TrialValueModel.__table__
            for row in self._related(session, table, chunk):
                values[row.trial_id].append(row)
            table = models.TrialUserAttributeModel.__table__
            for row in self._related(session, table, chunk):
                user_attrs[row.trial_id][row.key] = json.loads(row.value_json)
            table = models.TrialSystemAttributeModel.__table__
            for row in self._related(session, table, chunk):
                system_attrs[row.trial_id][row.key] = json.loads(row.value_json)
            table = models.TrialIntermediateValueModel.__table__
            for row in self._related(session, table, chunk):
                intermediate[row.trial_id][row.step] = _value(
                    row.intermediate_value, row.intermediate_value_type
                )
        return [
            self._frozen(
                row,
                params[row.trial_id],
                values[row.trial_id],
                user_attrs[row.trial_id],
                system_attrs[row.trial_id],
                intermediate[row.trial_id],
            )
            for row in rows
        ]

    @staticmethod
    def _related(
        session: Any, table: sqlalchemy.Table, ids: list[int], order_by: str | None = None
    ) -> Any:
        query = sqlalchemy.select(table).where(table.c.trial_id.in_(ids))
        if order_by:
            query = query.order_by(table.c[order_by])
        return session.execute(query).all()

    def _frozen(
        self,
        row: Any,
        params: list[Any],
        values: list[Any],
        user_attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        intermediate: dict[int, float],
    ) -> FrozenTrial:
        objective_values: list[float] | None = None
        if values:
            objective_values = [0.0] * len(values)
            for v in values:
                objective_values[v.objective] = _value(v.value, v.value_type)
        dists: dict[str, distributions.BaseDistribution] = {}
        external: dict[str, Any] = {}
        for p in params:
            dist = dists[p.param_name] = self._distribution(p.distribution_json)
            external[p.param_name] = dist.to_external_repr(p.param_value)
        return FrozenTrial(
            number=row.number,
            state=row.state,
            value=None,
            values=objective_values,
            datetime_start=_local(row.datetime_start),
            datetime_complete=_local(row.datetime_complete),
            params=external,
            distributions=dists,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
            intermediate_values=intermediate,
            trial_id=row.trial_id,
        )
