"""Launching studies: idempotent, warm-started, refusing a changed spec, budget accounting."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from hpsearch.errors import SpecError, StorageError
from hpsearch.spec import load_spec
from hpsearch.study import budget_state, launch_study, load_study, stored_attr
from tests.conftest import STUDIES


def test_launch_is_idempotent_and_enqueues_warm_start_once(sqlite_url: str) -> None:
    spec = load_spec(STUDIES / "fashion_mnist.toml")
    first = launch_study(spec, "text", sqlite_url)
    second = launch_study(spec, "text", sqlite_url)
    assert first.created and not second.created
    # its third table names the CPU demo study, which has not run on this database
    assert first.warm_started == [
        "warm start from study fashion_mnist_quick: skipped, no such study on this storage yet "
        '(if_missing = "skip")'
    ]
    waiting = second.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 2
    fixed = waiting[0].system_attrs["fixed_params"]
    assert fixed["optimizer.name"] == "sgd" and fixed["conv.padding"] == "valid"
    study, stored = load_study("fashion_mnist", sqlite_url)
    assert stored == spec and study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_changed_spec_under_same_name_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    text = (STUDIES / "smoke.toml").read_text()
    launch_study(load_spec(STUDIES / "smoke.toml"), text, sqlite_url)
    changed = tmp_path / "smoke.toml"
    # A search-space change, even together with a budget change, is a different study.
    changed.write_text(
        text.replace("n_trials = 6", "n_trials = 7").replace("high = 0.3", "high = 0.4")
    )
    with pytest.raises(
        SpecError,
        match=r"study 'smoke' already exists .* with a different spec.*only budget.n_trials, "
        r"budget.timeout_s and budget.max_epochs may change.*name = \"smoke_v2\"",
    ):
        launch_study(load_spec(changed), changed.read_text(), sqlite_url)
    study, spec = load_study("smoke", sqlite_url)
    assert spec.budget.n_trials == 6 and len(study.trials) == 1  # nothing changed


def test_raising_the_budget_extends_the_study(sqlite_url: str, tmp_path: Path) -> None:
    text = (STUDIES / "smoke.toml").read_text()
    study = launch_study(load_spec(STUDIES / "smoke.toml"), text, sqlite_url).study
    trial = study.ask()
    study.tell(trial, 0.5)
    bigger = tmp_path / "smoke.toml"
    bigger.write_text(
        text.replace("n_trials = 6", "n_trials = 12\ntimeout_s = 600").replace(
            "max_epochs = 3", "max_epochs = 5"
        )
    )
    launched = launch_study(load_spec(bigger), bigger.read_text(), sqlite_url)
    assert not launched.created
    assert launched.changes == [
        "budget.n_trials 6 → 12",
        "budget.timeout_s None → 600.0",
        "budget.max_epochs 3 → 5",
    ]
    study, spec = load_study("smoke", sqlite_url)  # what workers read: the new budget
    assert (spec.budget.n_trials, spec.budget.max_epochs, spec.budget.timeout_s) == (12, 5, 600)
    assert [t.value for t in study.trials] == [0.5]  # the finished trial (the warm start) stays
    assert launch_study(load_spec(bigger), "", sqlite_url).changes == []  # same file: continue


def test_load_unknown_study_lists_known(sqlite_url: str) -> None:
    launch_study(load_spec(STUDIES / "smoke.toml"), "", sqlite_url)
    with pytest.raises(StorageError, match=r"no study named 'nope' .* \(studies there: smoke\)"):
        load_study("nope", sqlite_url)


def test_budget_counts_finished_and_running(sqlite_url: str) -> None:
    spec = load_spec(STUDIES / "smoke.toml")
    study = launch_study(spec, "", sqlite_url).study
    assert not budget_state(study, spec).exhausted  # the queued warm start must run
    for _ in range(spec.budget.n_trials):
        trial = study.ask()
        study.tell(trial, 0.5)
    state = budget_state(study, spec)
    assert state.finished == spec.budget.n_trials and state.exhausted


def test_optuna_tools_see_the_metric_name_and_short_user_attrs(sqlite_url: str) -> None:
    """optuna-dashboard shows "val_accuracy" (not "Objective 0"); `optuna studies` prints every
    user attr, so the study file is kept out of them."""
    text = (STUDIES / "smoke.toml").read_text()
    launch_study(load_spec(STUDIES / "smoke.toml"), text, sqlite_url)
    study = optuna.load_study(study_name="smoke", storage=sqlite_url)
    assert study.metric_names == ["val_accuracy"]
    assert set(study.user_attrs) == {
        "hpsearch:dataset", "hpsearch:version", "hpsearch:fingerprint",
    }  # fmt: skip
    assert len(repr(study.user_attrs)) < 150
    assert stored_attr(study, "hpsearch:spec_toml") == text


def test_studies_of_earlier_versions_still_load_and_get_the_metric_name(sqlite_url: str) -> None:
    """Earlier versions stored the spec as user attrs and set no metric name."""
    spec = load_spec(STUDIES / "smoke.toml")
    old = optuna.create_study(study_name="smoke", storage=sqlite_url, direction="maximize")
    old.set_user_attr("hpsearch:spec", spec.model_dump(mode="json"))
    old.set_user_attr("hpsearch:spec_toml", "old text")
    old.set_user_attr("hpsearch:dataset", spec.data.dataset)
    old.set_user_attr("hpsearch:fingerprint", spec.fingerprint())
    assert load_study("smoke", sqlite_url, heartbeat=False)[1] == spec
    assert stored_attr(old, "hpsearch:spec_toml") == "old text"
    assert not launch_study(spec, "new text", sqlite_url).created
    assert optuna.load_study(study_name="smoke", storage=sqlite_url).metric_names == [
        "val_accuracy"
    ]


def test_the_stored_spec_leaves_out_newer_fields_at_their_defaults(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A worker of an earlier hpsearch (queued before an upgrade) reads a newer study unless it
    uses a newer feature: unknown fields are errors in its spec, so a study that does not use
    ``objective.test_top`` must not store ``test_top = null``. One that uses it keeps it."""
    from hpsearch.spec import _NEWER_DEFAULTS

    launch_study(load_spec(STUDIES / "smoke.toml"), "text", sqlite_url)
    study = optuna.load_study(study_name="smoke", storage=sqlite_url)
    stored = stored_attr(study, "hpsearch:spec")
    for section, key, _ in _NEWER_DEFAULTS:
        assert key not in (stored.get(section, {}) if section else stored), (section, key)
    assert stored["objective"] == {"metric": "val_accuracy", "direction": "maximize"}

    path = tmp_path / "top.toml"
    path.write_text(
        (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', 'name = "top"')
        + "\n[objective]\ntest_top = 3\n"
    )
    launch_study(load_spec(path), path.read_text(), sqlite_url)
    _, spec = load_study("top", sqlite_url, heartbeat=False)
    assert spec.objective.test_top == 3 and spec == load_spec(path)
