"""`hpsearch submit/cancel` without a cluster: rendering, golden scripts, validation, parsing.

`sbatch`, `squeue` and `scancel` are fake scripts put first on PATH that record their calls
(submitit's MockedSubprocess idea); the real proof is tests/test_slurm.py on a real Slurm.
Set HPSEARCH_UPDATE_GOLDEN=1 to rewrite tests/golden/*.sbatch after an intended change.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.errors import SubmissionError
from hpsearch.slurm import (
    ArraySpec,
    SubmitOptions,
    available_profiles,
    parse_array,
    render_script,
    status_for_study,
    time_seconds,
)
from hpsearch.spec import load_spec
from hpsearch.study import launch_study
from tests.conftest import STUDIES

GOLDEN = Path(__file__).resolve().parent / "golden"
SECRET = "s3cr3t-Pa55"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point in-process: exit code, stdout, stderr."""
    argv = sys.argv
    sys.argv = ["hpsearch", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake sbatch/squeue/scancel first on PATH; each call appends a line to calls.log."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("sbatch", "squeue", "scancel"):
        script = bin_dir / tool
        script.write_text(
            "#!/bin/bash\n"
            f'echo "{tool} $*" >> {calls}\n'
            f'if [ -n "${{FAKE_{tool.upper()}_ERR:-}}" ]; then '
            f'echo "$FAKE_{tool.upper()}_ERR" >&2; exit 1; fi\n'
            f'printf "%b" "${{FAKE_{tool.upper()}_OUT:-}}"\n'
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_OUT", "4242\\n")
    calls.touch()
    return calls


@pytest.fixture
def smoke_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The smoke study launched in a SQLite file; cwd is the test's tmp folder."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    path = STUDIES / "smoke.toml"
    launch_study(load_spec(path), path.read_text(), url)
    monkeypatch.chdir(tmp_path)
    return url


def normalize(text: str, tmp_path: Path) -> str:
    text = text.replace(sys.executable, "<python>").replace(str(tmp_path), "<tmp>")
    return re.sub(r"rendered \S+\.", "rendered <timestamp>.", text)


GOLDEN_CASES = {
    "generic": ["--partition", "gpu", "--array", "0-31%8"],
    "bridges2": ["--array", "0-15%4", "--workers-per-gpu", "2", "--container", "tf.sif"],
    "expanse": ["--array", "0-7%2", "--account", "abc123", "--time", "12:00:00"],
}


@pytest.mark.parametrize("profile", sorted(GOLDEN_CASES))
def test_dry_run_matches_golden_file(
    profile: str,
    smoke_db: str,
    fake_slurm: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "tf.sif").write_text("")
    args = GOLDEN_CASES[profile]
    args = [str(tmp_path / a) if a == "tf.sif" else a for a in args]
    code, out, err = cli(
        capsys, "submit", "smoke", "--storage", smoke_db, "--profile", profile, *args, "--dry-run"
    )
    assert code == 0, err
    script = normalize(out, tmp_path)
    golden = GOLDEN / f"{profile}.sbatch"
    if os.environ.get("HPSEARCH_UPDATE_GOLDEN"):
        golden.write_text(script)
    assert script == golden.read_text()
    assert fake_slurm.read_text() == ""  # nothing submitted
    assert not (tmp_path / "runs" / "smoke" / "sbatch").exists()  # nothing written


def test_golden_scripts_have_what_the_issue_asks_for() -> None:
    generic = (GOLDEN / "generic.sbatch").read_text()
    for line in (
        "#SBATCH --job-name=hpsearch-smoke",
        "#SBATCH --array=0-31%8",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=<tmp>/runs/smoke/logs/%A_%a.out",
        "cd <tmp>",
        "trap on_usr1 USR1",
        'scontrol requeue "$task"',
        "<python> -m hpsearch worker --study smoke &",
        "export TF_NUM_INTRAOP_THREADS=4",
    ):
        assert line in generic
    bridges2 = (GOLDEN / "bridges2.sbatch").read_text()
    assert "#SBATCH --partition=GPU-shared" in bridges2
    assert "#SBATCH --gpus=v100-32:1" in bridges2
    assert "--mem" not in bridges2
    assert "singularity exec --nv <tmp>/tf.sif python3 -m hpsearch worker" in bridges2
    assert "$(seq 0 $((2 - 1)))" in bridges2  # two workers share the GPU
    assert "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45" in bridges2
    assert "export TF_FORCE_GPU_ALLOW_GROWTH=true" in bridges2
    expanse = (GOLDEN / "expanse.sbatch").read_text()
    for line in (
        "#SBATCH --partition=gpu-shared",
        "#SBATCH --account=abc123",
        "#SBATCH --gpus=1",
        "#SBATCH --time=12:00:00",
        "module load singularitypro",
    ):
        assert line in expanse


def test_password_never_reaches_script_or_output(
    fake_slurm: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checked: list[str] = []

    def fake_load_study(name: str, url: str | None, **kwargs: object) -> tuple[None, object]:
        checked.append(url or "")
        return None, load_spec(STUDIES / "smoke.toml")

    monkeypatch.setattr("hpsearch.study.load_study", fake_load_study)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPSEARCH_DB_PASSWORD", SECRET)
    url = f"postgresql://alice:{SECRET}@db.example.org:5432/hp"
    common = ["submit", "smoke", "--storage", url, "--partition", "gpu", "--array", "0-3%2"]

    code, out, err = cli(capsys, *common, "--dry-run")
    assert code == 0, err
    assert SECRET not in out + err
    assert "export HPSEARCH_STORAGE=postgresql://alice@db.example.org:5432/hp\n" in out
    assert "password removed from the storage URL" in err and "HPSEARCH_DB_PASSWORD" in err
    assert checked == [url]  # the submitter itself may use the password to check the study

    monkeypatch.setenv("HPSEARCH_STORAGE", url)  # sbatch must not pass it on to the jobs
    (tmp_path / "env.log").touch()
    sbatch = fake_slurm.parent / "fakebin" / "sbatch"
    sbatch.write_text(sbatch.read_text() + f"env | grep HPSEARCH_STORAGE >> {tmp_path}/env.log\n")
    code, out, err = cli(capsys, "submit", "smoke", "--partition", "gpu", "--array", "0-3%2")
    assert code == 0, err
    assert out.strip() == "4242"
    scripts = list((tmp_path / "runs" / "smoke" / "sbatch").glob("*.sbatch"))
    assert len(scripts) == 1
    assert SECRET not in scripts[0].read_text() + out + err
    assert SECRET not in (tmp_path / "env.log").read_text()
    assert "HPSEARCH_STORAGE=postgresql://alice@db" in (tmp_path / "env.log").read_text()


def test_password_without_another_way_in_is_refused(
    fake_slurm: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("HPSEARCH_DB_PASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    url = f"postgresql://alice:{SECRET}@db.example.org/hp"
    code, out, err = cli(
        capsys, "submit", "smoke", "--storage", url, "--partition", "gpu", "--array", "0-3"
    )
    assert code == 1
    assert err.startswith("error: the storage URL carries a password") and "~/.pgpass" in err
    assert len(err.strip().splitlines()) == 1
    assert SECRET not in out + err
    assert fake_slurm.read_text() == ""


BAD_OPTIONS = {
    "bad array": (["--partition", "gpu", "--array", "0-31%"], "`--array` is not Slurm array"),
    "empty range": (["--partition", "gpu", "--array", "5-2"], '`--array` range "5-2" is empty'),
    "throttle 0": (["--partition", "gpu", "--array", "0-3%0"], "throttle %0"),
    "no array": (["--partition", "gpu"], "`--array` is required"),
    "unknown profile": (
        ["--profile", "summit", "--array", "0-3"],
        "unknown Slurm profile. Received: --profile summit. Valid choices: bridges2, expanse",
    ),
    "missing partition": (["--array", "0-3"], "no partition: profile 'generic' sets none"),
    "missing account": (
        ["--profile", "expanse", "--array", "0-3"],
        "profile 'expanse' requires an account",
    ),
    "bad time": (["--partition", "gpu", "--array", "0", "--time", "90min"], "`--time` must be"),
    "time below signal": (
        ["--partition", "gpu", "--array", "0", "--time", "00:04:00"],
        "`--time` must be longer than the pre-termination signal (300 s",
    ),
    "bad mem": (["--partition", "gpu", "--array", "0", "--mem", "lots"], "`--mem` must be"),
    "negative gpus": (
        ["--partition", "gpu", "--array", "0", "--gpus-per-task", "-1"],
        "`--gpus-per-task` Input should be greater than or equal to 0",
    ),
    "zero workers": (
        ["--partition", "gpu", "--array", "0", "--workers-per-gpu", "0"],
        "`--workers-per-gpu` Input should be greater than or equal to 1",
    ),
    "missing image": (
        ["--partition", "gpu", "--array", "0", "--container", "/nope/tf.sif"],
        "`--container` image not found",
    ),
    "unknown study": (["--partition", "gpu", "--array", "0-3"], "no study named 'nosuch'"),
    "bad study name": (["--partition", "gpu", "--array", "0"], "study name must be letters"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options_are_one_line_and_submit_nothing(
    case: str, smoke_db: str, fake_slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, message = BAD_OPTIONS[case]
    study = {"unknown study": "nosuch", "bad study name": "a;rm -rf ~"}.get(case, "smoke")
    code, out, err = cli(capsys, "submit", study, "--storage", smoke_db, *args)
    assert code == 1, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert fake_slurm.read_text() == ""  # sbatch never called


def test_submit_writes_script_and_prints_job_id(
    smoke_db: str, fake_slurm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys, "submit", "smoke", "--storage", smoke_db, "--partition", "gpu", "--array", "0-3%2"
    )
    assert code == 0, err
    assert out == "4242\n"
    (script,) = (tmp_path / "runs" / "smoke" / "sbatch").glob("*.sbatch")
    assert re.fullmatch(r"\d{8}-\d{6}\.sbatch", script.name)
    assert fake_slurm.read_text() == f"sbatch --parsable {script}\n"
    assert (tmp_path / "runs" / "smoke" / "logs").is_dir()  # Slurm needs it to exist
    assert "submitted array job 4242 (0-3%2, profile generic)" in err


def test_sbatch_failure_is_quoted(
    smoke_db: str,
    fake_slurm: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = "sbatch: error: Batch job submission failed: Invalid account or partition"
    monkeypatch.setenv("FAKE_SBATCH_ERR", message)
    code, out, err = cli(
        capsys, "submit", "smoke", "--storage", smoke_db, "--partition", "gpux", "--array", "0"
    )
    assert code == 1
    (line,) = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert line.startswith("error: ")
    assert f"sbatch refused the job (exit 1): {message!r}" in err


def test_sbatch_missing_is_one_line(
    smoke_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = cli(
        capsys, "submit", "smoke", "--storage", smoke_db, "--partition", "gpu", "--array", "0"
    )
    assert code == 1 and "`sbatch` not found on PATH" in err and "--dry-run" in err


@pytest.mark.parametrize(
    ("text", "indices", "throttle"),
    [
        ("0-31%8", tuple(range(32)), 8),
        ("0-9:3", (0, 3, 6, 9), None),
        ("1,3,5-6%2", (1, 3, 5, 6), 2),
        ("7", (7,), None),
    ],
)
def test_parse_array(text: str, indices: tuple[int, ...], throttle: int | None) -> None:
    assert parse_array(text) == ArraySpec(text, indices, throttle)


def test_time_seconds() -> None:
    assert time_seconds("08:00:00") == 8 * 3600
    assert time_seconds("1-02:03:04") == 93784
    with pytest.raises(SubmissionError, match='Received: "8h"'):
        time_seconds("8h")


def test_profiles_shipped() -> None:
    assert {"bridges2", "expanse", "generic"} <= set(available_profiles())


def test_render_without_study_check_uses_profile_and_flags(tmp_path: Path) -> None:
    job = render_script(
        "x",
        "postgresql://me@db/hp",
        SubmitOptions("0-3", profile="expanse", account="abc", gpus_per_task=2, mem="40G"),
        check_study=False,
        workdir=tmp_path,
    )
    assert job.settings.partition == "gpu-shared"  # profile
    assert "#SBATCH --gpus=2" in job.script and "#SBATCH --mem=40G" in job.script  # flags
    assert "\n\n\n" not in job.script  # empty optional blocks leave no holes


def test_unknown_profile_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text('partition = "gpu"\ngpus = 2\n')
    with pytest.raises(SubmissionError, match=r"site.toml: `gpus`: Extra inputs"):
        render_script("x", None, SubmitOptions("0", profile=str(bad)), check_study=False)


SQUEUE_OUT = "77|0|RUNNING\\n77|1|RUNNING\\n77|2|PENDING\\n77|3|PENDING\\n80|N/A|PENDING\\n"


def test_status_for_study_counts_tasks(fake_slurm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_OUT", SQUEUE_OUT)
    result = status_for_study("smoke")
    assert result["slurm_jobs"] == "77: 2 pending, 2 running; 80: 1 pending"
    assert result["slurm_arrays"][0] == {
        "job_id": "77",
        "tasks": {"RUNNING": ["0", "1"], "PENDING": ["2", "3"]},
    }
    assert "--name=hpsearch-smoke" in fake_slurm.read_text()


def test_status_without_squeue_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert status_for_study("smoke") == {}


def test_cancel_reports_what_it_cancelled(
    fake_slurm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_OUT", SQUEUE_OUT)
    code, out, err = cli(capsys, "cancel", "smoke")
    assert code == 0, err
    assert out.splitlines() == ["cancelled 77: 2 pending, 2 running", "cancelled 80: 1 pending"]
    assert fake_slurm.read_text().splitlines()[-1] == "scancel 77 80"
    monkeypatch.setenv("FAKE_SQUEUE_OUT", "")
    code, out, _ = cli(capsys, "cancel", "smoke")
    assert code == 0 and out == "no jobs named hpsearch-smoke in the queue\n"


def test_workers_of_one_task_get_different_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.worker import default_worker_index

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert default_worker_index() == 1003
    monkeypatch.setenv("HPSEARCH_WORKER_SLOT", "2")
    assert default_worker_index() == 2_001_003


def test_status_table_shows_the_slurm_jobs(
    smoke_db: str,
    fake_slurm: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKE_SQUEUE_OUT", SQUEUE_OUT)
    code, out, err = cli(capsys, "status", "smoke", "--storage", smoke_db)
    assert code == 0, err
    assert "Slurm" not in out  # never submitted from here, no trial ran under Slurm
    (Path(os.environ["HPSEARCH_RUNS_DIR"]) / "smoke" / "sbatch").mkdir(parents=True)
    code, out, err = cli(capsys, "status", "smoke", "--storage", smoke_db)
    assert code == 0, err
    assert "Slurm: 77: 2 pending, 2 running; 80: 1 pending" in out


@pytest.mark.slow  # two Python subprocesses import the builder
def test_custom_builder_is_import_checked_and_its_path_goes_into_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "slurm_models.py").write_text(
        "def build(hp, input_shape, num_classes):\n    pass\n"
    )
    path = project / "study.toml"
    path.write_text(
        'name = "custom"\n[model]\nbuilder = "slurm_models:build"\n[data]\n'
        'dataset = "fashion_mnist"\n[budget]\nn_trials = 2\nmax_epochs = 1\n'
        "[search.model]\nwidth = {choices = [8, 16]}\n"
    )
    url = f"sqlite:///{tmp_path / 'study.db'}"
    launch_study(load_spec(path), path.read_text(), url, check=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    common = ["submit", "custom", "--storage", url, "--partition", "gpu", "--array", "0-1"]
    code, script, err = cli(capsys, *common, "--dry-run")
    assert code == 0, err
    exports = [line for line in script.splitlines() if line.startswith("export PYTHONPATH=")]
    assert exports == [f"export PYTHONPATH={project}:{Path(__file__).resolve().parent.parent}"]
    assert f"cd {tmp_path} " in script

    (project / "slurm_models.py").unlink()
    code, out, err = cli(capsys, *common)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "the job could not import slurm_models:build" in lines[0]
    assert f"PYTHONPATH={project}:" in lines[0] and "no module 'slurm_models'" in lines[0]
    assert not (tmp_path / "runs" / "custom" / "sbatch").exists()


# --- issue 16: nothing a user types becomes a line of the job script ---------------------------

INJECTED = {
    "partition": ["--partition", "gpu\ntouch /tmp/pwned"],
    "account": ["--partition", "gpu", "--account", "abc\ntouch /tmp/pwned"],
    "time": ["--partition", "gpu", "--time", "04:00:00\ntouch /tmp/pwned"],
    "mem": ["--partition", "gpu", "--mem", "16G\ntouch /tmp/pwned"],
    "container": ["--partition", "gpu", "--container", "x\ntouch /tmp/pwned"],
    "partition with a space": ["--partition", "gpu --wrap=id"],
}


@pytest.mark.parametrize("case", sorted(INJECTED))
def test_control_characters_in_flags_are_refused(
    case: str,
    fake_slurm: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'never.db'}"  # refused before the study is looked up
    code, out, err = cli(
        capsys, "submit", "smoke", "--storage", url, "--array", "0", *INJECTED[case]
    )
    assert code == 1, (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: `--"), err
    assert "Example: --" in err
    assert fake_slurm.read_text() == "" and not (tmp_path / "never.db").exists()
    assert not (tmp_path / "runs").exists()


def test_a_newline_in_the_runs_or_submit_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = SubmitOptions("0", partition="gpu")
    monkeypatch.setenv("HPSEARCH_RUNS_DIR", str(tmp_path / "runs\ntouch pwned"))
    with pytest.raises(SubmissionError, match=r"the runs directory .* control character"):
        render_script("smoke", "sqlite:///x.db", options, check_study=False, workdir=tmp_path)
    monkeypatch.setenv("HPSEARCH_RUNS_DIR", str(tmp_path / "runs"))
    weird = tmp_path / "a\nb"
    weird.mkdir()
    with pytest.raises(SubmissionError, match=r"the submit directory .* Received: .*a\\nb"):
        render_script("smoke", "sqlite:///x.db", options, check_study=False, workdir=weird)


@pytest.mark.parametrize("name", ["smoke\n", "smoke\nid", "x" * 101, "../x"])
def test_study_names_are_matched_whole(name: str) -> None:
    with pytest.raises(SubmissionError, match="study name must be"):
        render_script(name, None, SubmitOptions("0", partition="gpu"), check_study=False)


def test_a_trailing_newline_does_not_pass_a_format_check() -> None:
    with pytest.raises(SubmissionError, match=r"`--time` must be .* Received: \"04:00:00\\n\""):
        time_seconds("04:00:00\n")


PROFILE_ERRORS = {
    "env name": ('env = {"A B" = "1"}', "`env`: Value error, names must be shell variable names"),
    "env value": ('env = {A = "1\\nid"}', "`env`: Value error, holds a control character"),
    "module": ('modules = ["cuda; id"]', "each item must be a module name"),
    "module newline": ('modules = ["cuda\\nid"]', "holds a control character"),
    "sbatch_extra": ('sbatch_extra = ["x --wrap=id"]', "each item must be one sbatch option"),
    "sbatch_extra newline": ('sbatch_extra = ["--x\\nid"]', "holds a control character"),
    "gpu_request {0}": ('gpu_request = "--gres=gpu:{0}"', "not a valid request template"),
    "gpu_request {": ('gpu_request = "--gres=gpu:{"', "not a valid request template"),
    "gpu_request attr": ('gpu_request = "{gpus.x}"', "not a valid request template"),
    "gpu_request two": ('gpu_request = "--gpus={gpus} --wrap=id"', "one sbatch option"),
    "setup newline": ('setup = ["module purge\\nid"]', "holds a control character"),
    "hpsearch_cmd": ('hpsearch_cmd = "python\\rid"', "holds a control character"),
    "bool as int": ("gpus_per_task = true", "`gpus_per_task`: Input should be a valid integer"),
    "not utf-8": (b"partition = '\xff'", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_ERRORS))
def test_profile_values_are_checked_with_one_line(tmp_path: Path, case: str) -> None:
    line, message = PROFILE_ERRORS[case]
    profile = tmp_path / "site.toml"
    raw = line if isinstance(line, bytes) else line.encode()
    profile.write_bytes(b'partition = "gpu"\n' + raw)
    with pytest.raises(SubmissionError) as info:
        render_script("x", None, SubmitOptions("0", profile=str(profile)), check_study=False)
    text = str(info.value)
    assert message in text and "\n" not in text and len(text) < 500, text


def sbatch_argument(line: str) -> str:
    """The first argument of an ``#SBATCH`` line as sbatch reads it (quotes, `\\`, `#`)."""
    rest, arg, quote, i = line.removeprefix("#SBATCH").lstrip(), [], "", 0
    while i < len(rest) and (quote or not rest[i].isspace()):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            arg.append(rest[i + 1])
            i += 2
            continue
        if quote and c == quote:
            quote = ""
        elif not quote and c in "\"'":
            quote = c
        elif not quote and c == "#":
            break
        else:
            arg.append(c)
        i += 1
    return "".join(arg)


def test_paths_are_quoted_for_sbatch_and_for_bash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weird but legal folder names: the job script runs (bash) and sbatch reads --output."""
    workdir = tmp_path / "my runs $(touch pwned) `id` ; #x 'q\" 50%"
    workdir.mkdir()
    monkeypatch.setenv("HPSEARCH_RUNS_DIR", "runs")
    profile = tmp_path / "site.toml"
    profile.write_text('partition = "gpu"\nhpsearch_cmd = "echo"\nenv = {X_Y = "a b $(id)"}\n')
    job = render_script(
        "smoke",
        "sqlite:///x.db",
        SubmitOptions("0", profile=str(profile), time="01:00:00"),
        check_study=False,
        workdir=workdir,
    )
    (output,) = [line for line in job.script.splitlines() if line.startswith("#SBATCH --output")]
    logs = str(workdir / "runs" / "smoke" / "logs").replace("%", "%%")
    assert sbatch_argument(output) == f"--output={logs}/%A_%a.out"
    script = tmp_path / "job.sh"
    script.write_text(job.script)
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "0"}
    import subprocess

    result = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("pwned")) and "uid=" not in result.stdout
    assert "worker --study smoke" in result.stdout  # `echo` stands in for hpsearch
