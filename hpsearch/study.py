"""Study lifecycle: create or continue a study from a spec, rebuild sampler and pruner, budget.

The spec is stored with the study (system attrs ``hpsearch:spec`` and ``hpsearch:spec_toml``;
studies launched by earlier versions hold them as user attrs, which are still read), so workers
need only the study name and the storage URL. System attrs keep ``optuna studies``, which
prints every user attr, at one short line per study. Launching the same file again continues
the study; a file whose only changes are ``budget.n_trials``, ``budget.timeout_s`` or
``budget.max_epochs`` extends it (the stored spec is updated); launching any other change under
an existing name is refused.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch import __version__, attr_names
from hpsearch.display import clean, quoted
from hpsearch.errors import SpecError, StorageError
from hpsearch.space import searched_params
from hpsearch.spec import StudySpec, spec_from_dict
from hpsearch.storage import (
    cached,
    get_storage,
    mask_url,
    resolve_url,
    set_study_system_attr,
    study_system_attrs,
)
from hpsearch.storage.leaderboard_sql import read_state_counts, read_value_ranges
from hpsearch.transfer import is_transfer, transfer_warm_starts

_logger = logging.getLogger(__name__)

ATTR_SPEC = attr_names.SPEC
ATTR_SPEC_TOML = attr_names.SPEC_TOML
ATTR_FINGERPRINT = attr_names.FINGERPRINT
ATTR_DATASET = attr_names.DATASET


def make_sampler(spec: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. Each worker gets ``seed + worker_index`` so parallel workers differ.

    TPE is multivariate with grouped conditional parameters and a constant liar, so that
    parallel workers do not all sample next to the same running trial.
    """
    cfg = spec.sampler
    seed = None if cfg.seed is None else cfg.seed + worker_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if cfg.kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if cfg.kind == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed, n_startup_trials=cfg.n_startup_trials, warn_independent_sampling=False
            )
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=cfg.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; its resource/step unit is epochs run."""
    cfg = spec.pruner
    if cfg.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource,
            max_resource=spec.budget.max_epochs,
            reduction_factor=cfg.reduction_factor,
        )
    if cfg.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.min_resource, reduction_factor=cfg.reduction_factor
        )
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
        )
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Launched:
    """Result of :func:`launch_study`."""

    study: optuna.Study
    spec: StudySpec
    created: bool
    storage_url: str
    changes: list[str] = field(default_factory=list)
    """Budget changes applied to a continued study, e.g. ``["budget.n_trials 30 → 60"]``."""
    warm_started: list[str] = field(default_factory=list)
    """One line per ``[[warm_start]] from_study`` table of a new study: what it enqueued."""


BUDGET_FIELDS = ("n_trials", "timeout_s", "max_epochs")
"""Budget fields that may change when a study is launched again: the study is extended."""


def budget_changes(stored: object, spec: StudySpec) -> list[str]:
    """How ``spec`` differs from the stored spec if only :data:`BUDGET_FIELDS` changed, else [].

    Args:
        stored: The study's stored spec (user attr ``hpsearch:spec``).
        spec: The spec being launched.
    """
    if not isinstance(stored, dict):
        return []
    try:
        old = spec_from_dict(stored, source="stored spec").model_dump(mode="json")
    except SpecError:
        return []
    new = spec.model_dump(mode="json")
    old_budget, new_budget = old.pop("budget"), new.pop("budget")
    changes = [
        f"budget.{key} {old_budget.get(key)} → {new_budget.get(key)}"
        for key in BUDGET_FIELDS
        if old_budget.get(key) != new_budget.get(key)
    ]
    for key in BUDGET_FIELDS:
        old_budget.pop(key, None)
        new_budget.pop(key, None)
    return changes if old == new and old_budget == new_budget else []


def dataset_key(spec: StudySpec) -> str:
    """What the leaderboard groups studies by: the data, and the metric unless val_accuracy.

    Studies are ranked together (and next to literature baselines, which are validation or test
    accuracies on a built-in dataset) only when they share both.
    """
    metric = spec.objective.metric
    return spec.data.label + ("" if metric == "val_accuracy" else f" · {metric}")


def launch_study(
    spec: StudySpec, spec_toml: str, storage_url: str | None = None, *, check: bool = True
) -> Launched:
    """Create the study for ``spec`` (or continue it) and enqueue the warm-start trials.

    Args:
        spec: The validated spec (``load_spec`` resolves its paths).
        spec_toml: The study file's text, stored with the study.
        storage_url: Defaults to ``$HPSEARCH_STORAGE``, else SQLite.
        check: First check that the data and the model can be made
            (:func:`hpsearch.usercode.check_study_runs`); nothing is written if not.
    Raises:
        SpecError: If a study of that name exists with a different spec, or its builder,
            loader or data cannot be used.
        StorageError: If the storage cannot be opened.
    """
    if check:
        from hpsearch.usercode import check_study_runs

        check_study_runs(spec)
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=False)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if spec.name in existing:
        attrs = existing[spec.name].user_attrs
        stored = attrs.get(ATTR_FINGERPRINT)
        changes: list[str] = []
        if stored is not None and stored != spec.fingerprint():
            changes = budget_changes(stored_attr(existing[spec.name], ATTR_SPEC), spec)
            if not changes:
                raise SpecError(
                    f"study {spec.name!r} already exists in {mask_url(url)} with a different "
                    f"spec (stored {stored}, file {spec.fingerprint()}); only budget.n_trials, "
                    "budget.timeout_s and budget.max_epochs may change. Fix: give the changed "
                    f'study a new name, e.g. name = "{spec.name}_v2"'
                )
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
        )
        if changes:
            set_study_system_attr(study, ATTR_SPEC, spec.portable_dump())
            set_study_system_attr(study, ATTR_SPEC_TOML, spec_toml)
            study.set_user_attr(ATTR_FINGERPRINT, spec.fingerprint())
            _logger.info("extended study %s: %s", spec.name, ", ".join(changes))
        if stored is not None:
            _set_metric_name(study, spec)  # studies made before hpsearch set it
            _logger.info("continuing study %s in %s", spec.name, mask_url(url))
            return Launched(study, spec, created=False, storage_url=url, changes=changes)
    transferred = transfer_warm_starts(storage, spec)  # read (and refused) before any write
    if spec.name not in existing:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction=spec.objective.direction,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
        )
    _set_metric_name(study, spec)
    set_study_system_attr(study, ATTR_SPEC, spec.portable_dump())
    set_study_system_attr(study, ATTR_SPEC_TOML, spec_toml)
    study.set_user_attr(ATTR_DATASET, dataset_key(spec))
    study.set_user_attr(attr_names.VERSION, __version__)
    from_studies = {done.entry.index: done for done in transferred}
    for index, params in enumerate(spec.warm_start):  # in the study file's order
        if index in from_studies:
            done = from_studies[index]
            for number, mapped in done.enqueued:
                study.enqueue_trial(
                    mapped,
                    user_attrs={
                        attr_names.WARM_START: True,
                        attr_names.WARM_START_FROM: f"{done.entry.study}#{number}",
                    },
                    skip_if_exists=True,
                )
            _logger.info("%s", done.summary())
        elif not is_transfer(params):
            study.enqueue_trial(
                searched_params(spec.search, params, spec.model.builder),
                user_attrs={attr_names.WARM_START: True},
                skip_if_exists=True,
            )
    # Written last: a study with a fingerprint is complete; one without is finished on relaunch.
    study.set_user_attr(ATTR_FINGERPRINT, spec.fingerprint())
    _logger.info("created study %s in %s", spec.name, mask_url(url))
    return Launched(
        study,
        spec,
        created=True,
        storage_url=url,
        warm_started=[done.summary() for done in transferred],
    )


def load_study(
    name: str,
    storage_url: str | None = None,
    *,
    worker_index: int = 0,
    heartbeat: bool = True,
    read_only: bool = False,
) -> tuple[optuna.Study, StudySpec]:
    """Load a launched study and its stored spec.

    ``read_only``: a database that does not exist, or has no studies, is an error instead of
    being created (commands that only look at a study).

    Raises:
        StorageError: If the study does not exist (the message lists the studies that do).
    """
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=heartbeat, read_only=read_only)
    summaries = {s.study_name: s for s in storage.get_all_studies()}
    if name not in summaries:
        known = ", ".join(sorted(summaries)) or "none"
        raise StorageError(
            f"no study named {quoted(name)} in {mask_url(url)} (studies there: "
            f"{clean(known, 300)}). "
            "Fix: run `hpsearch launch STUDY.toml` first, or pass the right --storage"
        )
    raw = stored_attr(summaries[name], ATTR_SPEC)
    if raw is None:
        raise StorageError(
            f"study {quoted(name)} in {mask_url(url)} was not created by hpsearch launch (no "
            "stored spec). Fix: run `hpsearch launch` with its study file"
        )
    spec = spec_from_dict(raw, source=f"study {name} (stored spec)")
    study = optuna.load_study(
        study_name=name,
        storage=cached(storage),
        sampler=make_sampler(spec, worker_index),
        pruner=make_pruner(spec),
    )
    return study, spec


def stored_attr(study: Any, key: str) -> Any:
    """A stored study attr (``hpsearch:spec``, ``hpsearch:spec_toml``): system, else user attr.

    Studies launched by earlier versions of hpsearch hold them as user attrs.

    Args:
        study: An :class:`optuna.Study`, or a study of ``storage.get_all_studies()``.
        key: The attr's name.
    """
    if hasattr(study, "system_attrs"):  # optuna's FrozenStudy (get_all_studies)
        system, user = study.system_attrs, study.user_attrs
    else:
        system, user = study_system_attrs(study), study.user_attrs
    value = system.get(key)
    return user.get(key) if value is None else value


def _set_metric_name(study: optuna.Study, spec: StudySpec) -> None:
    """Name the objective (optuna-dashboard shows it instead of "Objective 0")."""
    names: list[str] = [spec.objective.metric]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


@dataclass(frozen=True)
class BudgetState:
    """How far a study is through its trial budget."""

    finished: int
    running: int
    waiting: int
    failed: int
    n_trials: int

    @property
    def exhausted(self) -> bool:
        """True when no worker should start another trial (queued retries still run)."""
        return self.waiting == 0 and self.finished + self.running >= self.n_trials


def budget_state(study: optuna.Study, spec: StudySpec) -> BudgetState:
    """Count trials against ``spec.budget.n_trials``; complete and pruned trials count."""
    trials = study.get_trials(deepcopy=False)
    count = {state: 0 for state in TrialState}
    for t in trials:
        count[t.state] += 1
    return BudgetState(
        finished=count[TrialState.COMPLETE] + count[TrialState.PRUNED],
        running=count[TrialState.RUNNING],
        waiting=count[TrialState.WAITING],
        failed=count[TrialState.FAIL],
        n_trials=spec.budget.n_trials,
    )


@dataclass(frozen=True)
class StudyOverview:
    """One line of ``hpsearch studies``: a study, its trials by state and its best value."""

    name: str
    dataset: str | None
    direction: str
    counts: dict[str, int]
    best_value: float | None

    @property
    def n_trials(self) -> int:
        """All trials of the study, whatever their state."""
        return sum(self.counts.values())


def list_study_overviews(storage_url: str | None = None) -> list[StudyOverview]:
    """Every study on a storage, with its trial counts by state and best value, by name.

    On an SQL storage this reads two aggregate queries, not the trials.

    Args:
        storage_url: Storage URL; see :func:`hpsearch.storage.resolve_url` for the default.
    Raises:
        StorageError: If the storage cannot be opened, or is an SQLite file that does not
            exist (a typo must not create an empty database).
    """
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=False, read_only=True)
    studies = storage.get_all_studies()
    zero = {state.name.lower(): 0 for state in TrialState}
    counts: dict[int, dict[str, int]] = {s._study_id: dict(zero) for s in studies}
    best: dict[int, tuple[float | None, float | None]] = {}
    if isinstance(storage, optuna.storages.RDBStorage):
        for study_id, by_state in read_state_counts(storage).items():
            counts.setdefault(study_id, dict(zero)).update(by_state)
        best.update(read_value_ranges(storage))
    else:
        for s in studies:
            trials = storage.get_all_trials(s._study_id, deepcopy=False)
            for t in trials:
                key = t.state.name.lower()
                counts[s._study_id][key] = counts[s._study_id].get(key, 0) + 1
            values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.values]
            best[s._study_id] = (max(values, default=None), min(values, default=None))
    overviews = []
    for s in studies:
        direction = s.directions[0].name.lower() if len(s.directions) == 1 else "multi"
        high, low = best.get(s._study_id, (None, None))
        value = low if direction == "minimize" else high
        dataset = s.user_attrs.get(ATTR_DATASET)
        overviews.append(
            StudyOverview(
                name=s.study_name,
                dataset=None if dataset is None else str(dataset),
                direction=direction,
                counts=counts.get(s._study_id, {}),
                best_value=None if value is None or direction == "multi" else float(value),
            )
        )
    return sorted(overviews, key=lambda o: o.name)
