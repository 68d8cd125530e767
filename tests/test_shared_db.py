"""Many workers on one study database, under faults, on SQLite, PostgreSQL and MariaDB.

Every test gets a fresh database on each backend (``db_url`` in conftest.py) and trains real
small CNNs on a real slice of Fashion-MNIST. What they prove:

1. 16 concurrent workers reach a 100-trial budget exactly: every trial accounted for, no
   duplicate numbers, none left running, at most one connection per worker.
2. Workers killed with SIGKILL mid-trial: their trials fail with reason ``timeout`` after the
   heartbeat grace period, are retried and resume from their checkpoints.
3. The database server restarted mid-run: workers wait for it and no trial is lost.
4. (test_worker.py) SIGTERM/SIGUSR1 mid-epoch: the same trial resumes on the next worker.
5. A NaN loss and an (injected) out-of-memory error: reason recorded, the worker goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpsearch.study import load_study
from hpsearch.worker import run_worker
from tests.conftest import STUDIES, run_cli
from tests.test_worker import epochs_logged, launch, start_worker, wait_for_epochs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_available")]


def smoke_variant(tmp_path: Path, name: str, **budget: int) -> Path:
    """``studies/smoke.toml`` renamed, with a tiny data slice and the given budget."""
    text = (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', f'name = "{name}"')
    text = text.replace("train_subset = 1000", "train_subset = 300")
    text = text.replace("val_fraction = 0.05 ", "val_fraction = 0.01 ")
    for key, value in budget.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


class ConnectionSampler(threading.Thread):
    """Polls the server for the number of connections to the study's database."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = sqlalchemy.engine.make_url(url)
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        if self.url.drivername.startswith("sqlite"):
            return
        if self.url.drivername.startswith("postgresql"):
            admin = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"
        else:
            admin = "mysql+pymysql://root@127.0.0.1:3306/test"
            query = "SELECT count(*) FROM information_schema.processlist WHERE db = :db"
        engine = sqlalchemy.create_engine(admin)
        while not self.done.wait(0.25):
            try:
                with engine.connect() as conn:
                    count = conn.execute(sqlalchemy.text(query), {"db": self.url.database})
                    self.peak = max(self.peak, int(count.scalar() or 0))
                    self.samples += 1
            except sqlalchemy.exc.OperationalError:
                pass
        engine.dispose()


def test_16_workers_reach_a_100_trial_budget_exactly(tmp_path: Path, db_url: str) -> None:
    """16 workers race for the last trials of the budget (about 6 trials each: the race at the
    end, not the number of trials, is what can go wrong; 200 trials took 4-5 min a backend)."""
    path = smoke_variant(tmp_path, "fleet", n_trials=100, max_epochs=2)
    sampler = ConnectionSampler(db_url)
    sampler.start()
    result = run_cli("run", str(path), "--workers", "16", "--storage", db_url, timeout=1200)
    sampler.done.set()
    sampler.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    study, _ = load_study("fleet", db_url, heartbeat=False)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))  # no duplicates, no gaps
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 100
    for t in finished:
        assert len(t.intermediate_values) == t.user_attrs["hpsearch:epochs"] >= 1
    for t in trials:
        if t.state == TrialState.FAIL:  # only surplus trials, created as the budget filled up
            assert t.user_attrs["hpsearch:fail_reason"] == "budget", t.user_attrs
            assert not t.intermediate_values
    log_dir = Path(os.environ["HPSEARCH_RUNS_DIR"]) / "fleet" / "logs"
    logs = "".join(p.read_text() for p in log_dir.glob("worker_*.log"))
    assert "Traceback" not in logs and "database is locked" not in logs
    if not db_url.startswith("sqlite"):
        assert sampler.samples > 10
        # One connection per worker process, plus the launcher's and the progress display's.
        assert 1 <= sampler.peak <= 16 + 2, f"peak connections {sampler.peak}"


def test_killed_workers_trials_are_retried_and_resume(tmp_path: Path, db_url: str) -> None:
    path = smoke_variant(tmp_path, "killed", n_trials=6, max_epochs=6)
    text = path.read_text().replace('kind = "median"', 'kind = "none"')
    path.write_text(text.replace("train_subset = 300", "train_subset = 3000"))
    launch(path, db_url)
    fast_heartbeat = {"HPSEARCH_HEARTBEAT_S": "1", "HPSEARCH_GRACE_S": "5"}
    env = {**fast_heartbeat, "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    victims = [start_worker("killed", db_url, env) for _ in range(4)]
    for n in range(4):
        wait_for_epochs("killed", n, at_least=1, timeout=300)
    for worker in victims:
        worker.kill()  # SIGKILL: no chance to clean up
        worker.wait()
    # What was on disk when they died.
    checkpointed = {n: wait_for_epochs("killed", n, at_least=1, timeout=1) for n in range(4)}
    assert all(c < 6 for c in checkpointed.values())
    time.sleep(6)  # the grace period passes
    rescuers = [start_worker("killed", db_url, env) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in rescuers]
    for worker, out in zip(rescuers, outputs):
        assert worker.returncode == 0, out[out.find("Traceback") :][:4000] or out[-3000:]
    output = "".join(outputs)
    study, _ = load_study("killed", db_url, heartbeat=False)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert TrialState.RUNNING not in [t.state for t in trials]
    for n in range(4):
        dead = trials[n]
        assert dead.state == TrialState.FAIL
        assert dead.user_attrs["hpsearch:fail_reason"] == "timeout"
        assert "no heartbeat" in dead.user_attrs["hpsearch:error"]
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == n]
        assert retry.state == TrialState.COMPLETE and retry.params == dead.params
        assert sorted(retry.intermediate_values) == list(range(1, 7))
        assert f"resuming trial {n} after epoch {checkpointed[n]}" in output
    # Only the epochs after the checkpoints were trained again: 4 x 6 would be a fresh start.
    retrained = len(epochs_logged(output)) - 2 * 6
    assert retrained == sum(6 - c for c in checkpointed.values()) < 4 * 6


def restart_server(url: str) -> None:
    """Restart the real database server (PostgreSQL or MariaDB) behind ``url``; needs root."""
    if os.geteuid() != 0:
        pytest.skip("restarting the database server needs root (pg_ctlcluster / mariadbd)")
    if url.startswith("postgresql"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        stop = [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            version,
            "main",
            "stop",
            "-m",
            "fast",
        ]
        start = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    else:
        admin = shutil.which("mariadb-admin") or "mysqladmin"
        stop = [admin, "-uroot", "shutdown"]
        start = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                 "/usr/sbin/mariadbd"]  # fmt: skip
    subprocess.run(stop, check=True, capture_output=True, timeout=60)
    time.sleep(4)  # the workers meet a server that is down
    subprocess.run(start, check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize(
    "db_url",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mysql),
    ],
    indirect=True,
)
def test_workers_wait_out_a_database_restart(tmp_path: Path, db_url: str) -> None:
    path = smoke_variant(tmp_path, "restart", n_trials=6, max_epochs=5)
    path.write_text(path.read_text().replace("train_subset = 300", "train_subset = 1000"))
    launch(path, db_url)
    env = {"HPSEARCH_HEARTBEAT_S": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    workers = [start_worker("restart", db_url, env) for _ in range(2)]
    wait_for_epochs("restart", 0, at_least=1, timeout=300)
    restart_server(db_url)
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, out in zip(workers, outputs):
        assert worker.returncode == 0, out[out.find("Traceback") :][:4000] or out[-3000:]
    output = "".join(outputs)
    assert "unreachable" in output and "reachable again" in output
    assert "Traceback" not in output
    study, _ = load_study("restart", db_url, heartbeat=False)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.FAIL) == 0  # no trial lost
    assert len(trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_nan_and_out_of_memory_trials_record_why_and_the_worker_goes_on(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = smoke_variant(tmp_path, "faults", n_trials=3, max_epochs=2)
    launch(path, db_url)
    # trial 0's loss diverges, trial 1 runs out of GPU memory (neither can be made on purpose
    # here: the spec refuses a learning rate above 10, and a CPU has no GPU memory)
    monkeypatch.setenv("HPSEARCH_INJECT_FAULT", "nan@0,oom@1")
    result = run_worker("faults", db_url, n_trials=3, worker_index=0)
    assert result.trials_run == 3
    study, _ = load_study("faults", db_url, heartbeat=False)
    nan, oom, fine = study.get_trials(deepcopy=False)[:3]
    assert nan.state == TrialState.FAIL and nan.user_attrs["hpsearch:fail_reason"] == "nan"
    assert "loss became nan" in nan.user_attrs["hpsearch:error"]
    assert oom.state == TrialState.FAIL and oom.user_attrs["hpsearch:fail_reason"] == "oom"
    assert "OOM when allocating" in oom.user_attrs["hpsearch:error"]
    assert fine.state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_sigterm_mid_epoch_then_the_same_trial_resumes(tmp_path: Path, db_url: str) -> None:
    path = smoke_variant(tmp_path, "term", n_trials=1, max_epochs=6)
    path.write_text(path.read_text().replace("train_subset = 300", "train_subset = 2000"))
    launch(path, db_url)
    worker = start_worker("term", db_url)
    done = wait_for_epochs("term", 0, at_least=2, timeout=300)
    worker.send_signal(signal.SIGTERM)
    first, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, first
    checkpointed = wait_for_epochs("term", 0, at_least=done, timeout=1)
    resumed = start_worker("term", db_url)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resuming trial 0 after epoch {checkpointed}" in output
    assert epochs_logged(output) == list(range(checkpointed + 1, 7))
    study, _ = load_study("term", db_url, heartbeat=False)
    interrupted, final = study.get_trials(deepcopy=False)
    assert interrupted.user_attrs["hpsearch:fail_reason"] == "preempted"
    assert final.state == TrialState.COMPLETE and final.params == interrupted.params
    assert sorted(final.intermediate_values) == list(range(1, 7))
