"""`hpsearch submit` on a real single-node Slurm (tests/slurm/slurm-single-node.sh, as root).

Array tasks train real smoke-study trials; the study database is PostgreSQL (what clusters
use) except for the cancel test. Timings: the node has 8 Slurm CPUs on 2 real cores, so every
task asks for 1 CPU and its workers use 1 thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch.spec import load_spec
from hpsearch.study import launch_study, load_study
from tests.conftest import STUDIES, run_cli, slow_trial_spec

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("fashion_mnist_available")]

JOBCOMP = Path("/var/tmp/slurm-single-node/log/jobcomp.txt")
SMALL_TASK = [
    "--partition", "debug", "--cpus-per-task", "1", "--mem", "2G",
    "--time", "00:10:00", "--signal-seconds", "60",
]  # fmt: skip


def hpsearch(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=timeout)


def launch(tmp_path: Path, text: str, name: str, url: str) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    launch_study(load_spec(path), text, url)


def smoke_as(name: str) -> str:
    return (STUDIES / "smoke.toml").read_text().replace('name = "smoke"', f'name = "{name}"')


def submit(tmp_path: Path, name: str, url: str, *args: str) -> str:
    result = hpsearch(tmp_path, "submit", name, "--storage", url, *SMALL_TASK, *args)
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    assert job.isdigit(), result.stdout
    return job


def squeue(job: str) -> list[str]:
    result = subprocess.run(
        ["squeue", "--noheader", "--array", "--jobs", job, "--format=%i %T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.split("\n")[:-1] if result.returncode == 0 else []


def wait_for_job(job: str, timeout: float) -> float:
    """Wait until no task of ``job`` is pending or running; return the seconds it took."""
    started = time.monotonic()
    while squeue(job):
        if time.monotonic() - started > timeout:
            subprocess.run(["scancel", job], timeout=30)
            raise AssertionError(f"job {job} still queued after {timeout} s: {squeue(job)}")
        time.sleep(1)
    return time.monotonic() - started


def jobcomp(job: str) -> dict[str, dict[str, str]]:
    """Slurm's completion record of each array task of ``job`` (last line per task)."""
    tasks = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("ArrayJobId") == job:
            tasks[fields["ArrayTaskId"]] = fields
    return tasks


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """Most intervals open at once (an interval ending when another starts does not overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in events:  # ends (-1) sort before starts (+1) at equal times
        open_now += step
        most = max(most, open_now)
    return most


def log_of(tmp_path: Path, name: str, job: str, task: int | str) -> str:
    return (tmp_path / "runs" / name / "logs" / f"{job}_{task}.out").read_text()


@pytest.mark.postgres
@pytest.mark.parametrize("gpus", [0, 1], ids=["cpu", "fake-gpu"])
def test_throttled_array_runs_the_study_to_its_budget(
    gpus: int, postgres_url: str, tmp_path: Path
) -> None:
    name = f"slurm_{'gpu' if gpus else 'cpu'}"
    launch(tmp_path, smoke_as(name), name, postgres_url)
    job = submit(tmp_path, name, postgres_url, "--array", "0-3%2", "--gpus-per-task", str(gpus))

    status = hpsearch(tmp_path, "status", name, "--storage", postgres_url, "--json")
    assert status.returncode == 0, status.stderr
    arrays = json.loads(status.stdout)["slurm_arrays"]
    assert [a["job_id"] for a in arrays] == [job]  # the array beside the trials
    assert sum(len(ids) for ids in arrays[0]["tasks"].values()) >= 1

    wait_for_job(job, timeout=180)
    record = jobcomp(job)
    assert sorted(record) == ["0", "1", "2", "3"]
    assert all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in record.values())
    parse = datetime.fromisoformat
    spans = [(parse(r["StartTime"]), parse(r["EndTime"])) for r in record.values()]
    assert max_overlap(spans) == 2  # the throttle: 2 at once, never more

    study, _ = load_study(name, postgres_url, heartbeat=False)
    states = [t.state for t in study.trials]
    finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    assert 6 <= finished <= 7 and finished == len(states)  # budget reached, nothing left over
    by_task: dict[str, list[tuple[datetime, datetime]]] = {}
    for t in study.trials:
        attrs = t.user_attrs
        assert attrs["hpsearch:slurm_job_id"] == job
        assert attrs["hpsearch:slurm_array_task_id"] in {"0", "1", "2", "3"}
        assert attrs["hpsearch:host"]
        if gpus:
            assert attrs["hpsearch:gpu"] in {"0", "1", "2", "3"}  # the fake GRES's ids
        else:
            assert "hpsearch:gpu" not in attrs
        assert t.datetime_start is not None and t.datetime_complete is not None
        by_task.setdefault(attrs["hpsearch:slurm_array_task_id"], []).append(
            (t.datetime_start, t.datetime_complete)
        )
    task_spans = [(min(s for s, _ in v), max(e for _, e in v)) for v in by_task.values()]
    assert max_overlap(task_spans) <= 2
    for task in range(4):
        assert re.search(r"\[hpsearch\] task \S+ end .* exit 0", log_of(tmp_path, name, job, task))

    if gpus:
        return
    # More tasks on a study whose budget is spent: each ends within seconds, no trial run.
    surplus = submit(tmp_path, name, postgres_url, "--array", "0-2")
    took = wait_for_job(surplus, timeout=60)
    for task, r in jobcomp(surplus).items():
        assert r["ExitCode"] == "0:0"
        assert (parse(r["EndTime"]) - parse(r["StartTime"])).total_seconds() <= 15
        assert "worker stopped after 0 trial(s): study budget of 6 trials reached" in log_of(
            tmp_path, name, surplus, task
        )
    assert took < 45
    assert len(load_study(name, postgres_url, heartbeat=False)[0].trials) == finished


def wait_for_epochs(name: str, trial: int, at_least: int, timeout: float) -> int:
    state = Path(os.environ["HPSEARCH_RUNS_DIR"]) / name / "checkpoints" / f"trial_{trial}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = int(json.loads((state / "state.json").read_text())["epochs_done"])
            if done >= at_least:
                return done
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint with {at_least} epochs within {timeout} s")


@pytest.mark.postgres
def test_usr1_before_time_limit_requeues_and_trial_resumes(
    postgres_url: str, tmp_path: Path
) -> None:
    name = "slurm_preempt"
    launch(tmp_path, slow_trial_spec(name, train_subset=6000, max_epochs=8), name, postgres_url)
    job = submit(tmp_path, name, postgres_url, "--array", "0", "--gpus-per-task", "0")
    wait_for_epochs(name, 0, at_least=2, timeout=120)
    # What Slurm does --signal-seconds before the time limit (--signal=B:USR1@60).
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True, timeout=30)
    wait_for_job(job, timeout=180)

    log = log_of(tmp_path, name, job, 0)
    assert "got USR1" in log and f"task {job}_0 requeueing itself" in log
    assert "restart 1 host" in log  # the requeued run of the same task (--open-mode=append)
    resumed_after = int(re.search(r"resuming trial 0 after epoch (\d+)", log).group(1))  # type: ignore[union-attr]
    second_run = log.split("restart 1 host", 1)[1]
    epochs = [int(e) for e in re.findall(r"trial 1\] epoch (\d+) ", second_run)]
    assert resumed_after >= 2 and epochs == list(range(resumed_after + 1, 9))  # none repeated

    study, _ = load_study(name, postgres_url, heartbeat=False)
    interrupted, retry = study.trials
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["hpsearch:fail_reason"] == "preempted"
    assert interrupted.user_attrs["hpsearch:slurm_job_id"] == job
    assert "hpsearch:slurm_restart_count" not in interrupted.user_attrs  # first run
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == interrupted.number
    assert retry.user_attrs["hpsearch:slurm_job_id"] == job
    assert retry.user_attrs["hpsearch:slurm_array_task_id"] == "0"
    assert retry.user_attrs["hpsearch:slurm_restart_count"] == "1"
    assert sorted(retry.intermediate_values) == list(range(1, 9))  # inherited 1..k, then k+1..8
    assert retry.user_attrs["hpsearch:epochs"] == 8
    record = jobcomp(job)["0"]
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0"


def test_cancel_cancels_the_study_jobs(tmp_path: Path) -> None:
    name = "slurm_cancel"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    launch(tmp_path, smoke_as(name), name, url)
    job = submit(tmp_path, name, url, "--array", "0-7%1", "--gpus-per-task", "0")
    result = hpsearch(tmp_path, "cancel", name)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"cancelled {job}: (\d+ (pending|running)(, )?)+\n", result.stdout)
    wait_for_job(job, timeout=30)
    again = hpsearch(tmp_path, "cancel", name)
    assert again.stdout == f"no jobs named hpsearch-{name} in the queue\n"


@pytest.mark.postgres
def test_workers_per_gpu_share_one_task_and_gpu(postgres_url: str, tmp_path: Path) -> None:
    name = "slurm_shared_gpu"
    launch(tmp_path, smoke_as(name), name, postgres_url)
    job = submit(
        tmp_path, name, postgres_url, "--array", "0", "--gpus-per-task", "1",
        "--workers-per-gpu", "2", "--cpus-per-task", "2",
    )  # fmt: skip
    wait_for_job(job, timeout=120)
    assert jobcomp(job)["0"]["ExitCode"] == "0:0"
    study, _ = load_study(name, postgres_url, heartbeat=False)
    trials = study.trials
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.user_attrs["hpsearch:pid"] for t in trials}) == 2  # both workers ran trials
    assert {t.user_attrs["hpsearch:slurm_array_task_id"] for t in trials} == {"0"}
    assert len({t.user_attrs["hpsearch:gpu"] for t in trials}) == 1  # on the task's one GPU
    log = log_of(tmp_path, name, job, 0)
    assert "worker 0 started" in log and "worker 1000000 started" in log  # distinct seeds
    assert log.count("worker stopped after") == 2


@pytest.mark.parametrize(
    ("args", "slurm_says"),
    [
        (["--partition", "nosuchpartition"], "invalid partition"),
        (["--gpus-per-task", "5"], "Requested node configuration is not available"),
    ],
    ids=["unknown-partition", "more-gpus-than-the-node"],
)
def test_real_sbatch_refusal_is_quoted_in_one_line(
    tmp_path: Path, args: list[str], slurm_says: str
) -> None:
    name = "slurm_refused"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    launch(tmp_path, smoke_as(name), name, url)
    result = hpsearch(
        tmp_path, "submit", name, "--storage", url, *SMALL_TASK, "--array", "0-1", *args
    )
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""  # no job id
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith("note: ")]  # SQLite advice
    assert len(errors) == 1 and errors[0].startswith("error: sbatch refused the job"), lines
    assert slurm_says.lower() in errors[0].lower()
    assert not subprocess.run(
        ["squeue", "--noheader", "--name", f"hpsearch-{name}"], capture_output=True, text=True
    ).stdout.strip()


SLURM_BUILDER = """
import keras
from keras import layers

def build(hp, input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = layers.Dense(hp["units"], activation="relu")(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
"""


def test_custom_builder_on_pythonpath_runs_in_the_array_tasks(tmp_path: Path) -> None:
    """The builder lives in lib/, found only through PYTHONPATH: submit checks it, the script
    exports it, and the task (started in the submit directory) trains with it."""
    name = "slurm_custom"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "slurm_builders.py").write_text(SLURM_BUILDER)
    text = (
        f'name = "{name}"\n[model]\nbuilder = "slurm_builders:build"\n'
        '[data]\ndataset = "fashion_mnist"\ntrain_subset = 200\nval_fraction = 0.01\n'
        '[budget]\nn_trials = 2\nmax_epochs = 1\n[pruner]\nkind = "none"\n'
        "[search.model]\nunits = {choices = [16, 32]}\n"
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "study.toml").write_text(text)
    launch_study(load_spec(tmp_path / "study.toml"), text, url, check=False)
    pythonpath = f"{os.environ.get('PYTHONPATH', '')}:{tmp_path / 'lib'}".lstrip(":")
    args = ["submit", name, "--storage", url, *SMALL_TASK, "--array", "0", "--gpus-per-task", "0"]
    refused = run_cli(*args, cwd=tmp_path, timeout=300)  # lib/ is not on PYTHONPATH
    assert refused.returncode == 1 and "could not import slurm_builders:build" in refused.stderr
    result = run_cli(*args, cwd=tmp_path, env={"PYTHONPATH": pythonpath}, timeout=300)
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    script = next((tmp_path / "runs" / name / "sbatch").glob("*.sbatch")).read_text()
    assert f"{tmp_path / 'lib'}" in next(
        line for line in script.splitlines() if line.startswith("export PYTHONPATH=")
    )
    wait_for_job(job, timeout=600)
    study, _ = load_study(name, url, heartbeat=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, log_of(
        tmp_path, name, job, 0
    )
    assert all(t.user_attrs["hpsearch:config"].startswith("build units=") for t in study.trials)
