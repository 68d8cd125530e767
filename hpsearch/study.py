"""Study lifecycle: create or continue a study from a spec, rebuild sampler and pruner, budget.

The spec is stored with the study (user attr ``hpsearch:spec``), so workers need only the study
name and the storage URL. Launching the same file again continues the study; launching a changed
file under an existing name is refused.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from hpsearch import __version__
from hpsearch.display import clean, quoted
from hpsearch.errors import SpecError, StorageError
from hpsearch.space import searched_params
from hpsearch.spec import StudySpec, spec_from_dict
from hpsearch.storage import cached, get_storage, mask_url, resolve_url

_logger = logging.getLogger(__name__)

ATTR_SPEC = "hpsearch:spec"
ATTR_SPEC_TOML = "hpsearch:spec_toml"
ATTR_FINGERPRINT = "hpsearch:fingerprint"
ATTR_DATASET = "hpsearch:dataset"


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


def launch_study(spec: StudySpec, spec_toml: str, storage_url: str | None = None) -> Launched:
    """Create the study for ``spec`` (or continue it) and enqueue the warm-start trials.

    Raises:
        SpecError: If a study of that name exists with a different spec.
        StorageError: If the storage cannot be opened.
    """
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=False)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if spec.name in existing:
        stored = existing[spec.name].user_attrs.get(ATTR_FINGERPRINT)
        if stored is not None and stored != spec.fingerprint():
            raise SpecError(
                f"study {spec.name!r} already exists in {mask_url(url)} with a different spec "
                f"(stored {stored}, file {spec.fingerprint()}). Fix: give the changed study a "
                f'new name, e.g. name = "{spec.name}_v2"'
            )
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
        )
        if stored is not None:
            _logger.info("continuing study %s in %s", spec.name, mask_url(url))
            return Launched(study, spec, created=False, storage_url=url)
    else:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction=spec.objective.direction,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
        )
    study.set_user_attr(ATTR_SPEC, spec.model_dump(mode="json"))
    study.set_user_attr(ATTR_SPEC_TOML, spec_toml)
    study.set_user_attr(ATTR_DATASET, spec.data.dataset)
    study.set_user_attr("hpsearch:version", __version__)
    for params in spec.warm_start:
        study.enqueue_trial(
            searched_params(spec.search, params),
            user_attrs={"hpsearch:warm_start": True},
            skip_if_exists=True,
        )
    # Written last: a study with a fingerprint is complete; one without is finished on relaunch.
    study.set_user_attr(ATTR_FINGERPRINT, spec.fingerprint())
    _logger.info("created study %s in %s", spec.name, mask_url(url))
    return Launched(study, spec, created=True, storage_url=url)


def load_study(
    name: str, storage_url: str | None = None, *, worker_index: int = 0, heartbeat: bool = True
) -> tuple[optuna.Study, StudySpec]:
    """Load a launched study and its stored spec.

    Raises:
        StorageError: If the study does not exist (the message lists the studies that do).
    """
    url = resolve_url(storage_url)
    storage = get_storage(url, heartbeat=heartbeat)
    summaries = {s.study_name: s for s in storage.get_all_studies()}
    if name not in summaries:
        known = ", ".join(sorted(summaries)) or "none"
        raise StorageError(
            f"no study named {quoted(name)} in {mask_url(url)} (studies there: "
            f"{clean(known, 300)}). "
            "Fix: run `hpsearch launch STUDY.toml` first, or pass the right --storage"
        )
    raw = summaries[name].user_attrs.get(ATTR_SPEC)
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
