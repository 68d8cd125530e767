"""Read a study's trials with plain SQL rows instead of ORM objects.

Optuna's ``RDBStorage._get_trials`` loads every trial as an ORM object with five related
collections, then builds a :class:`~optuna.trial.FrozenTrial` from it. Every worker does that
for every trial of the study (its cache is per process), so with many workers it is most of
the client's CPU. :func:`load_trials` reads the same rows with two SQLAlchemy Core selects (the
trials, then one ``UNION ALL`` of the five related tables) and builds the same FrozenTrials
with several times less CPU; ``tests/test_storage.py`` checks that the results are identical
to Optuna's on every backend.
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


def _value(value: float | None, kind: str) -> float:
    """A stored value or intermediate value: infinities and NaN are stored as a type."""
    if kind == "INF_POS":
        return float("inf")
    if kind == "INF_NEG":
        return float("-inf")
    if kind == "NAN":
        return float("nan")
    assert value is not None
    return value


_PARAM, _VALUE, _USER_ATTR, _SYSTEM_ATTR, _INTERMEDIATE = range(5)


def _related_rows_query() -> sqlalchemy.CompoundSelect:
    """One query for the rows of five tables that belong to the trials ``:ids``.

    Optuna (and SQLAlchemy's ``selectinload``) runs one query per table; the round trips, not
    the rows, were most of a refresh's cost. Each table's columns are mapped onto one shape:
    ``(kind, trial_id, pos, name, number, text, value_type)``, params in ``param_id`` order.
    """
    ids: Any = sqlalchemy.bindparam("ids", expanding=True)
    none = sqlalchemy.null()  # every backend types a NULL from the union's other branches

    def rows(
        kind: int, table: Any, pos: Any, name: Any, number: Any, text: Any, vtype: Any
    ) -> Any:
        return sqlalchemy.select(
            sqlalchemy.literal(kind, sqlalchemy.Integer).label("kind"),
            table.c.trial_id.label("trial_id"),
            pos.label("pos"),
            name.label("name"),
            number.label("number"),
            text.label("text"),
            vtype.label("value_type"),
        ).where(table.c.trial_id.in_(ids))

    def as_text(column: Any) -> Any:
        return sqlalchemy.cast(column, sqlalchemy.String(16))

    p = models.TrialParamModel.__table__
    v = models.TrialValueModel.__table__
    u = models.TrialUserAttributeModel.__table__
    s = models.TrialSystemAttributeModel.__table__
    i = models.TrialIntermediateValueModel.__table__
    # fmt: off
    branches = [  # kind, table, pos, name, number, text, value_type
        (_PARAM, p, p.c.param_id, p.c.param_name, p.c.param_value, p.c.distribution_json, none),
        (_VALUE, v, v.c.objective, none, v.c.value, none, as_text(v.c.value_type)),
        (_USER_ATTR, u, none, u.c.key, none, u.c.value_json, none),
        (_SYSTEM_ATTR, s, none, s.c.key, none, s.c.value_json, none),
        (_INTERMEDIATE, i, i.c.step, none, i.c.intermediate_value, none,
         as_text(i.c.intermediate_value_type)),
    ]
    # fmt: on
    return sqlalchemy.union_all(*(rows(*branch) for branch in branches)).order_by(
        sqlalchemy.literal_column("kind"), sqlalchemy.literal_column("pos")
    )


_RELATED_ROWS = _related_rows_query()


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
            for kind, trial_id, pos, name, number, text, value_type in session.execute(
                _RELATED_ROWS, {"ids": chunk}
            ):
                if kind == _PARAM:
                    params[trial_id].append((name, number, text))
                elif kind == _VALUE:
                    values[trial_id].append((pos, _value(number, value_type)))
                elif kind == _USER_ATTR:
                    user_attrs[trial_id][name] = json.loads(text)
                elif kind == _SYSTEM_ATTR:
                    system_attrs[trial_id][name] = json.loads(text)
                else:
                    intermediate[trial_id][pos] = _value(number, value_type)
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
            for objective, value in values:
                objective_values[objective] = value
        dists: dict[str, distributions.BaseDistribution] = {}
        external: dict[str, Any] = {}
        for name, internal, distribution_json in params:
            dist = dists[name] = self._distribution(distribution_json)
            external[name] = dist.to_external_repr(internal)
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
