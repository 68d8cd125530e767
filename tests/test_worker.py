"""Workers on real data: what a trial records, NaN handling, preemption and dead workers.

These train small CNNs on a real 1,000-image slice of Fashion-MNIST (seconds per trial).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.errors import HpsearchError
from hpsearch.spec import load_spec
from hpsearch.study import launch_study, load_study
from hpsearch.worker import run_worker
from tests.conftest import ROOT, STUDIES, run_cli, slow_trial_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_available")]


def launch(path: Path, url: str) -> optuna.Study:
    return launch_study(load_spec(path), path.read_text(), url).study


def test_trial_records_history_metrics_and_cleans_up(sqlite_url: str) -> None:
    launch(STUDIES / "smoke.toml", sqlite_url)
    result = run_worker("smoke", sqlite_url, n_trials=3, worker_index=0)
    assert result.trials_run == 3
    study, spec = load_study("smoke", sqlite_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert study.trials[0].user_attrs.get("hpsearch:warm_start") is True
    for t in finished:
        epochs = t.user_attrs["hpsearch:epochs"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert all(0.0 < v <= 1.0 for v in t.intermediate_values.values())
        assert t.user_attrs["hpsearch:wall_time_s"] > 0
        assert t.user_attrs["hpsearch:n_params"] > 1000
        assert t.user_attrs["hpsearch:config"].startswith("conv ")
        assert t.user_attrs["hpsearch:keras_backend"] == "tensorflow"
        if t.state == TrialState.COMPLETE:
            assert epochs == spec.budget.max_epochs
            assert t.value == t.intermediate_values[epochs]
            assert 0.5 < t.user_attrs["hpsearch:test_accuracy"] <= 1.0
        else:
            assert "hpsearch:test_accuracy" not in t.user_attrs
    assert not any((Path(os.environ["HPSEARCH_RUNS_DIR"]) / "smoke" / "checkpoints").glob("*"))


def test_nan_trial_fails_with_reason_and_worker_goes_on(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', 'name = "nan"')
    path = tmp_path / "nan.toml"
    path.write_text(text)
    launch(path, sqlite_url)
    monkeypatch.setenv("HPSEARCH_INJECT_FAULT", "nan@0")  # the first trial's loss diverges
    run_worker("nan", sqlite_url, n_trials=2, worker_index=0)
    study, _ = load_study("nan", sqlite_url)
    first, second = study.trials[:2]
    assert first.state == TrialState.FAIL
    assert first.user_attrs["hpsearch:fail_reason"] == "nan"
    assert "loss became nan" in first.user_attrs["hpsearch:error"]
    assert second.state in (TrialState.COMPLETE, TrialState.PRUNED)


def start_worker(name: str, url: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "worker", "--study", name, "--storage", url],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epochs(name: str, trial: int, at_least: int, timeout: float = 120) -> int:
    """Epochs in the trial's checkpoint (the .npz a resume reads) once it has ``at_least``."""
    folder = Path(os.environ["HPSEARCH_RUNS_DIR"]) / name / "checkpoints" / f"trial_{trial}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with np.load(folder / "checkpoint.npz") as data:
                done = json.loads(str(data["state"]))["epochs_done"]
            if done >= at_least:
                return int(done)
        except (OSError, ValueError, KeyError, EOFError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint with {at_least} epochs within {timeout} s")


def epochs_logged(output: str) -> list[int]:
    return [
        int(line.split(" epoch ")[1].split()[0])
        for line in output.splitlines()
        if " epoch " in line and "val_acc=" in line
    ]


@pytest.mark.parametrize("how", ["sigterm", "sigusr1"])
def test_preempted_trial_resumes_from_its_checkpoint(
    tmp_path: Path, sqlite_url: str, how: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(slow_trial_spec("p"))
    launch(path, sqlite_url)
    worker = start_worker("p", sqlite_url)
    done = wait_for_epochs("p", 0, at_least=2)
    worker.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGUSR1)
    first_output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, first_output
    assert "preempted" in first_output
    study, _ = load_study("p", sqlite_url)
    interrupted, retry = study.trials
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["hpsearch:fail_reason"] == "preempted"
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    checkpointed = wait_for_epochs("p", 0, at_least=done)

    resumed = start_worker("p", sqlite_url)
    output, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, output
    assert f"resuming trial 0 after epoch {checkpointed}" in output
    assert epochs_logged(output) == list(range(checkpointed + 1, 8))  # no epoch trained twice
    study, _ = load_study("p", sqlite_url)
    final = study.trials[1]
    assert final.state == TrialState.COMPLETE
    assert sorted(final.intermediate_values) == list(range(1, 8))
    assert final.user_attrs["hpsearch:epochs"] == 7
    assert final.user_attrs.get("hpsearch:fail_reason") is None
    assert len(study.trials) == 2


def test_stop_signal_whose_exception_was_lost_still_requeues(
    tmp_path: Path, sqlite_url: str
) -> None:
    """As if SIGTERM arrived while Python ran a finalizer: no exception, only the request."""
    from hpsearch import preemption

    path = tmp_path / "lost.toml"
    path.write_text(slow_trial_spec("lost"))
    launch(path, sqlite_url)

    def request_stop_after_epoch_1() -> None:
        wait_for_epochs("lost", 0, at_least=1)
        preemption._requested.append("SIGTERM")

    requester = threading.Thread(target=request_stop_after_epoch_1, daemon=True)
    requester.start()
    result = run_worker("lost", sqlite_url, worker_index=0)
    requester.join(timeout=5)
    assert result.preempted and "SIGTERM" in result.stopped_because
    study, _ = load_study("lost", sqlite_url)
    interrupted, retry = study.trials
    assert interrupted.user_attrs["hpsearch:fail_reason"] == "preempted"
    assert retry.state == TrialState.WAITING
    # It stopped at the next epoch's end, after checkpointing it: nothing is lost.
    checkpointed = wait_for_epochs("lost", 0, at_least=2, timeout=1)
    assert checkpointed == len(interrupted.intermediate_values) < 7


def test_killed_worker_trial_is_retried_after_heartbeat_grace(
    tmp_path: Path, sqlite_url: str
) -> None:
    path = tmp_path / "k.toml"
    path.write_text(slow_trial_spec("k"))
    launch(path, sqlite_url)
    fast_heartbeat = {"HPSEARCH_HEARTBEAT_S": "1", "HPSEARCH_GRACE_S": "4"}
    worker = start_worker("k", sqlite_url, fast_heartbeat)
    wait_for_epochs("k", 0, at_least=3)
    worker.kill()  # SIGKILL: no chance to clean up
    worker.wait()
    checkpointed = wait_for_epochs("k", 0, at_least=3)
    time.sleep(5)
    second = start_worker("k", sqlite_url, fast_heartbeat)
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output
    assert f"resuming trial 0 after epoch {checkpointed}" in output
    study, _ = load_study("k", sqlite_url)
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert sorted(retry.intermediate_values) == list(range(1, 8))


def test_worker_stops_after_consecutive_failures(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', 'name = "allnan"')
    text = text.replace("[budget]\n", "[budget]\nmax_consecutive_failures = 2\n")
    path = tmp_path / "allnan.toml"
    path.write_text(text)
    launch(path, sqlite_url)
    monkeypatch.setenv("HPSEARCH_INJECT_FAULT", "nan@0,nan@1,nan@2")
    with pytest.raises(
        HpsearchError,
        match="stopping: 2 trials in a row failed; last: NanLossError: loss became nan",
    ):
        run_worker("allnan", sqlite_url, worker_index=0)
    study, _ = load_study("allnan", sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_requeues_and_rerun_finishes(
    tmp_path: Path, sqlite_url: str, sig: signal.Signals
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(slow_trial_spec("c", train_subset=6000))  # epochs of a second or more
    run = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(path), "--storage", sqlite_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_epochs("c", 0, at_least=2)
    run.send_signal(sig)
    output, _ = run.communicate(timeout=60)
    logs = "".join(f.read_text() for f in (tmp_path / "runs" / "c" / "logs").glob("*.log"))
    assert run.returncode == 130, output + "\nworker log:\n" + logs[-3000:]
    assert "interrupted: stopping workers" in output
    study, _ = load_study("c", sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    again = run_cli("run", str(path), "--storage", sqlite_url, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing study c" in again.stderr
    study, _ = load_study("c", sqlite_url)
    assert study.trials[1].state == TrialState.COMPLETE
    assert sorted(study.trials[1].intermediate_values) == list(range(1, 8))


def test_trial_past_its_time_limit_fails_with_reason_timeout(
    tmp_path: Path, sqlite_url: str
) -> None:
    path = tmp_path / "slow.toml"
    text = slow_trial_spec("slow", train_subset=300, max_epochs=3)
    path.write_text(text.replace("max_epochs = 3", "max_epochs = 3\ntrial_timeout_s = 0.001"))
    launch(path, sqlite_url)
    result = run_worker("slow", sqlite_url, n_trials=1, worker_index=0)
    assert result.trials_run == 1
    study, _ = load_study("slow", sqlite_url)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["hpsearch:fail_reason"] == "timeout"
    assert (
        "budget.trial_timeout_s = 0.001 s passed after epoch 1"
        in trial.user_attrs["hpsearch:error"]
    )
    assert trial.user_attrs["hpsearch:epochs"] == 1
