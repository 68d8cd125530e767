"""What ships with hpsearch, and how it is found: package list, shipped folders, profiles, init."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import optuna
import pytest
import tomllib

from hpsearch import __version__
from hpsearch.errors import SpecError, StorageError, SubmissionError
from hpsearch.local import RunResult, WorkerStop, _read_stop, stop_summary
from hpsearch.resources import FOLDERS, example_studies, shipped_dir, write_example
from hpsearch.slurm import SubmitOptions, available_profiles, load_profile, render_script
from hpsearch.storage import get_storage
from hpsearch.study import BudgetState, list_study_overviews
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_and_shipped_file_is_in_the_wheel_config() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    packages = set(setuptools["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "hpsearch").rglob("__init__.py")
    }
    assert on_disk - packages == set(), "add these packages to pyproject.toml"
    mapping = setuptools["package-dir"]
    for folder in FOLDERS:  # each top-level folder ships as hpsearch._data.<folder>, in full
        package = f"hpsearch._data.{folder}"
        assert package in packages and mapping[package] == folder
        globs = setuptools["package-data"][package]
        files = [p.name for p in (ROOT / folder).iterdir() if p.is_file()]
        missed = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
        assert files and not missed, f"{folder}/ files the wheel would leave out: {missed}"


def test_pyproject_license_is_spdx_with_its_file() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    assert project["version"] == __version__


def test_shipped_folders_are_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing here: the checkout's folders are used, not the cwd
    assert shipped_dir("dashboard") == ROOT / "dashboard"
    assert (shipped_dir("slurm_array") / "array.sbatch").is_file()
    assert {"smoke", "fashion_mnist_quick", "fashion_mnist"} <= set(example_studies())
    assert {"bridges2", "expanse", "generic"} <= set(available_profiles())


def test_own_profile_folder_comes_first_and_keeps_the_shipped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "slurm_array"
    own.mkdir()
    (own / "mysite.toml").write_text('partition = "gpu-a100"\nmem = "64G"\n')
    (own / "generic.toml").write_text('partition = "mine"\n')  # overrides the shipped generic
    assert {"bridges2", "mysite", "generic"} <= set(available_profiles())
    assert load_profile("mysite")[1].partition == "gpu-a100"
    assert load_profile("generic")[1].partition == "mine"
    assert load_profile("bridges2")[1].partition  # still the shipped one
    # A profile without its own template gets the shipped array.sbatch.
    options = SubmitOptions("0-3", "mysite")
    job = render_script("demo", "sqlite:///x.db", options, check_study=False)
    assert "#SBATCH --partition=gpu-a100" in job.script
    with pytest.raises(SubmissionError, match=r"--profile summit\. Valid choices: .*mysite"):
        load_profile("summit")


def test_init_writes_a_shipped_study_and_never_overwrites(tmp_path: Path) -> None:
    path = write_example(tmp_path / "studies", "smoke")
    assert path == tmp_path / "studies" / "smoke.toml"
    assert path.read_text() == (ROOT / "studies" / "smoke.toml").read_text()
    path.write_text("# mine")
    with pytest.raises(SpecError, match=r"smoke.toml already exists; nothing written.*--force"):
        write_example(tmp_path / "studies", "smoke")
    assert path.read_text() == "# mine"
    write_example(tmp_path / "studies", "smoke", force=True)
    assert path.read_text().startswith("# A tiny study")
    with pytest.raises(SpecError, match=r"Received: 'cifar100'. Valid choices: cifar10, "):
        write_example(tmp_path, "cifar100")
    assert write_example(tmp_path).name == "fashion_mnist_quick.toml"
    assert write_example(tmp_path / "mine.toml", "mnist") == tmp_path / "mine.toml"


def test_studies_lists_counts_by_state_and_best(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    storage = get_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="b", storage=storage, direction="maximize")
    study.set_user_attr("hpsearch:dataset", "mnist")
    for value in (0.5, 0.9):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    study.enqueue_trial({})
    optuna.create_study(study_name="a", storage=storage, direction="minimize").add_trial(
        optuna.trial.create_trial(value=2.0)
    )
    a, b = list_study_overviews(url)
    assert (a.name, a.best_value, a.counts["complete"]) == ("a", 2.0, 1)
    assert (b.name, b.dataset, b.best_value, b.n_trials) == ("b", "mnist", 0.9, 4)
    assert (b.counts["complete"], b.counts["fail"], b.counts["waiting"]) == (2, 1, 1)
    typo = tmp_path / "hpserch.db"
    with pytest.raises(StorageError, match=r"sqlite:///.*hpserch.db: there is no such database"):
        list_study_overviews(f"sqlite:///{typo}")
    assert not typo.exists()


def _result(stops: list[WorkerStop], finished: int = 18, interrupted: bool = False) -> RunResult:
    budget = BudgetState(finished=finished, running=0, waiting=0, failed=0, n_trials=30)
    codes = [s.exit_code for s in stops]
    return RunResult(codes, interrupted, Path("logs"), stops, budget, 570.0)


def test_run_says_why_it_stopped_and_what_remains() -> None:
    timeout = [WorkerStop(i, "timeout", "timeout of 570 s reached", 0) for i in (0, 1)]
    assert stop_summary(_result(timeout)) == (
        "stopped: each worker reached the study's budget.timeout_s (570 s)",
        12,
    )
    budget = [WorkerStop(0, "budget", "study budget of 30 trials reached", 0)]
    assert stop_summary(_result(budget, finished=30))[1] == 0
    assert stop_summary(_result(budget, finished=30))[0].startswith("done: the study's budget")
    failed = [WorkerStop(1, "failures", "5 trials in a row failed; last: OOM", 1)]
    assert stop_summary(_result(timeout[:1] + failed))[0] == (
        "stopped: worker 1 5 trials in a row failed; last: OOM"
    )
    crashed = [WorkerStop(0, "exit", "error: storage sqlite:///x.db: gone", 1)]
    assert "worker 0 exited with code 1: error: storage" in stop_summary(_result(crashed))[0]
    assert stop_summary(_result(timeout, interrupted=True))[0].startswith("interrupted")


def test_worker_writes_why_it_stopped_where_run_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpsearch import worker

    monkeypatch.setenv(worker.STOP_FILE_ENV, str(tmp_path / "worker_3.stop.json"))
    result = worker._stopped(4, "timeout of 570 s reached", "timeout")
    assert (result.kind, result.trials_run) == ("timeout", 4)
    assert _read_stop(tmp_path, 3, 0) == WorkerStop(3, "timeout", "timeout of 570 s reached", 0)


def test_worker_stop_file_else_last_log_line(tmp_path: Path) -> None:
    (tmp_path / "worker_0.stop.json").write_text(
        json.dumps({"kind": "timeout", "message": "timeout of 5 s reached", "trials_run": 2})
    )
    (tmp_path / "worker_1.log").write_text("epoch 1\nerror: storage x: unreachable\n\n")
    assert _read_stop(tmp_path, 0, 0) == WorkerStop(0, "timeout", "timeout of 5 s reached", 0)
    assert _read_stop(tmp_path, 1, 1) == WorkerStop(1, "exit", "error: storage x: unreachable", 1)
    assert _read_stop(tmp_path, 2, -9).message == "no log output"


def test_version_and_init_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hpsearch.cli import app

    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"hpsearch {__version__}"
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", "--example", "smoke"]).exit_code == 0
    assert (tmp_path / "smoke.toml").read_text() == (ROOT / "studies" / "smoke.toml").read_text()
    again = CliRunner().invoke(app, ["init", "--example", "smoke"])
    assert again.exit_code == 1 and "smoke.toml already exists" in str(again.exception)


def test_public_api_names_are_not_shadowed_by_submodules() -> None:
    """``hpsearch.leaderboard(...)`` stays the API function after every submodule is imported.

    Importing ``hpsearch.X`` sets the package attribute ``X`` to the module; an API function of
    the same name then becomes a module (``TypeError: 'module' object is not callable``).
    """
    import importlib
    import inspect
    import pkgutil

    import hpsearch

    submodules = [m.name for m in pkgutil.walk_packages(hpsearch.__path__, "hpsearch.")]
    for name in submodules:
        if not name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(name)
    clashes = [n for n in hpsearch.__all__ if inspect.ismodule(getattr(hpsearch, n))]
    assert clashes == [], f"public names that became modules: {clashes}"
    assert all(callable(getattr(hpsearch, n)) for n in hpsearch._API)
