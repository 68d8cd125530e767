"""The per-process trial cache a worker reads the study through.

Optuna wraps an RDBStorage in ``_CachedStorage`` for every study it loads; hpsearch's workers
get :class:`WorkerTrialCache` instead, which keeps the study's trials in number order and
sees this process's own writes at once.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.rdb import ResilientStorage


class WorkerTrialCache(_CachedStorage):
    """Optuna's per-process trial cache, with the study's trials kept in number order.

    Optuna's cache sorts every trial of the study by number on every read (with a Python key
    function), and the sampler, the pruner and the budget check read it several times per
    epoch: at 20,000 trials that was most of a worker's CPU. Here the ordered list is made
    once per change of the cache, and each read gets a copy of it (a new list, as before).

    The backend re-reads other workers' trials at most every ``refresh_s``; this process's own
    writes (parameters, attributes, epoch reports) show in the cached trial at once.
    """

    def __init__(self, backend: ResilientStorage) -> None:
        super().__init__(backend)
        self._backend: ResilientStorage = backend
        self._ordered: dict[tuple[int, frozenset[TrialState] | None], list[FrozenTrial]] = {}

    @property
    def backend(self) -> ResilientStorage:
        """The storage behind the cache."""
        return self._backend

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        super()._add_trials_to_cache(study_id, trials)
        if trials:
            self._forget_order(study_id)

    def _forget_order(self, study_id: int) -> None:
        self._ordered = {k: v for k, v in self._ordered.items() if k[0] != study_id}

    def delete_study(self, study_id: int) -> None:
        """Optuna's; the study's ordered trial lists go with it (its id may be reused)."""
        super().delete_study(study_id)
        with self._lock:
            self._forget_order(study_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """What Optuna's cache returns: the study's trials in number order, fresh within
        ``refresh_s``."""
        self._read_trials_from_remote_storage(study_id)
        key = (study_id, None if states is None else frozenset(states))  # type: ignore[call-overload]
        with self._lock:
            ordered = self._ordered.get(key)
            if ordered is None:
                by_number = self._studies[study_id].trials
                ordered = [by_number[n] for n in sorted(by_number)]
                if states is not None:
                    ordered = [t for t in ordered if t.state in states]
                self._ordered[key] = ordered
            return copy.deepcopy(ordered) if deepcopy else list(ordered)

    @contextmanager
    def deferred_writes(self, trial_id: int) -> Iterator[None]:
        """The backend's :meth:`ResilientStorage.deferred_writes`."""
        with self._backend.deferred_writes(trial_id):
            yield

    # -- this process's writes, shown in the cached trial --------------------------------------

    def _update_cached(self, trial_id: int, change: Callable[[FrozenTrial], None]) -> None:
        """Replace the cached trial by a changed copy (earlier readers keep the old one)."""
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            study_id, number = where
            trials = self._studies[study_id].trials
            old = trials.get(number)
            if old is None:
                return
            new = copy.copy(old)
            change(new)
            trials[number] = new
            for (study, _), ordered in self._ordered.items():
                if study != study_id:
                    continue
                i = bisect_left(ordered, number, key=lambda t: t.number)
                if i < len(ordered) and ordered[i].number == number:
                    ordered[i] = new

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        """Optuna's; the cached trial has the parameter at once."""
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)

        def change(t: FrozenTrial) -> None:
            external = distribution.to_external_repr(param_value_internal)
            t.params = {**t.params, param_name: external}
            t.distributions = {**t.distributions, param_name: distribution}

        self._update_cached(trial_id, change)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Optuna's; the cached trial has the attribute at once."""
        super().set_trial_user_attr(trial_id, key, value)

        def change(t: FrozenTrial) -> None:
            t.user_attrs = {**t.user_attrs, key: value}

        self._update_cached(trial_id, change)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Optuna's; the cached trial has the attribute at once."""
        super().set_trial_system_attr(trial_id, key, value)

        def change(t: FrozenTrial) -> None:
            t.system_attrs = {**t.system_attrs, key: value}

        self._update_cached(trial_id, change)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """Optuna's; the cached trial has the epoch report at once."""
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

        def change(t: FrozenTrial) -> None:
            t.intermediate_values = {**t.intermediate_values, step: intermediate_value}

        self._update_cached(trial_id, change)


def cached(storage: ResilientStorage) -> WorkerTrialCache:
    """The storage as workers use it: behind a per-process trial cache (what Optuna would wrap
    it in, with cheaper reads)."""
    return WorkerTrialCache(storage)
