"""End to end through the CLI, as a user runs it: run, status, best --export; other backends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hpsearch.storage import get_storage
from tests.conftest import STUDIES
from tests.conftest import run_cli as hpsearch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_available")]


@pytest.fixture(scope="module")
def smoke_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, subprocess.CompletedProcess[str], Path]:
    folder = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{folder / 'hpsearch.db'}"
    result = hpsearch(
        "run",
        "studies/smoke.toml",
        "--workers",
        "2",
        "--storage",
        url,
        env={"HPSEARCH_RUNS_DIR": str(folder / "runs")},
    )
    return url, result, folder / "runs"


def test_run_two_workers_finishes_the_budget(smoke_run) -> None:  # type: ignore[no-untyped-def]
    url, result, runs = smoke_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "created study smoke" in result.stderr
    assert "Leaderboard: ranked by validation accuracy" in result.stdout
    assert "FC network (workshop base code)" in result.stdout  # baselines beside trials
    # The run ends saying why it stopped and what to type next.
    assert "done: the study's budget of 6 trials is reached" in result.stderr
    assert f"next: hpsearch status smoke --storage {url}" in result.stderr
    stop = json.loads((runs / "smoke" / "logs" / "worker_0.stop.json").read_text())
    assert stop["kind"] == "budget" and "budget of 6 trials reached" in stop["message"]
    summary = json.loads(hpsearch("status", "smoke", "--json", "--storage", url).stdout)
    counts = summary["counts"]
    assert counts["complete"] + counts["pruned"] >= 6 and counts["running"] == 0
    assert counts["complete"] + counts["pruned"] <= 7  # two workers overshoot by at most one
    assert 0.5 < summary["best"]["val_accuracy"] <= 1.0
    assert summary["best"]["test_accuracy"] is not None
    assert set(summary["best"]["params"]) >= {"optimizer.name", "optimizer.lr"}
    trials = [r for r in summary["leaderboard"] if r["kind"] == "trial"]
    assert [r["rank"] for r in trials if r["rank"]] == list(range(1, len(trials) + 1))
    logs = sorted(p.name for p in (runs / "smoke" / "logs").glob("*.log"))
    assert logs == ["worker_0.log", "worker_1.log"]
    assert "[pid " in (runs / "smoke" / "logs" / "worker_0.log").read_text()


def test_status_table(smoke_run) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = smoke_run
    result = hpsearch("status", "smoke", "--storage", url)
    assert result.returncode == 0
    first = result.stdout.splitlines()[0]
    assert first.startswith("smoke (fashion_mnist):") and "complete" in first and "pruned" in first
    assert "test acc" in result.stdout and "baseline" in result.stdout and "beats" in result.stdout
    # A study that never went through Slurm says nothing about Slurm, even where squeue exists.
    assert "Slurm" not in result.stdout + result.stderr


def test_relaunch_continues(smoke_run) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = smoke_run
    result = hpsearch("launch", "studies/smoke.toml", "--storage", url)
    assert result.returncode == 0 and result.stdout.strip() == "smoke"
    assert "continuing study smoke" in result.stderr


def test_best_export(smoke_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = smoke_run
    out = tmp_path / "best"
    result = hpsearch("best", "smoke", "--storage", url, "--export", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "hpsearch.json").read_text())
    assert record["metrics"]["retrained_test_accuracy"] > 0.5
    assert record["trained_on"].startswith("train+validation")
    assert record["versions"]["keras"] and record["seeds"]["split_seed"] == 0
    assert (out / "study.toml").read_text() == (STUDIES / "smoke.toml").read_text()
    import keras

    model = keras.saving.load_model(out / "model.keras")
    assert model.count_params() == record["n_params"]


def test_unknown_study_is_one_line(sqlite_url: str) -> None:
    result = hpsearch("status", "nope", "--storage", sqlite_url)  # no database at all
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "there is no such database" in result.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # and none was created
    get_storage(sqlite_url, heartbeat=False).engine.dispose()  # an empty study database
    result = hpsearch("status", "nope", "--storage", sqlite_url)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: no study named 'nope'")


def _run_on(url: str, name: str, folder: Path) -> dict:  # type: ignore[type-arg]
    text = (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', f'name = "{name}"')
    path = folder / f"{name}.toml"
    path.write_text(text.replace("n_trials = 6", "n_trials = 3"))
    result = hpsearch("run", str(path), "--workers", "2", "--storage", url)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(hpsearch("status", name, "--json", "--storage", url).stdout)


@pytest.mark.postgres
def test_postgresql_storage(postgres_url: str, tmp_path: Path) -> None:
    summary = _run_on(postgres_url, "pg_smoke", tmp_path)
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] >= 3


@pytest.mark.mysql
def test_mariadb_storage(mysql_url: str, tmp_path: Path) -> None:
    summary = _run_on(mysql_url, "mysql_smoke", tmp_path)
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] >= 3


@pytest.mark.jax
def test_jax_backend(sqlite_url: str) -> None:
    pytest.importorskip("jax", reason="jax missing: run `make install`")
    assert hpsearch("launch", "studies/smoke.toml", "--storage", sqlite_url).returncode == 0
    result = hpsearch(
        "worker",
        "--study",
        "smoke",
        "--n-trials",
        "2",
        "--storage",
        sqlite_url,
        env={"KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import optuna

    trials = optuna.load_study(study_name="smoke", storage=sqlite_url).trials
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 2
    assert all(t.user_attrs["hpsearch:keras_backend"] == "jax" for t in done)
