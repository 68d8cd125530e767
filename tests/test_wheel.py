"""The built wheel, installed into a fresh venv and used from a folder outside the checkout.

This is what a user on a cluster gets from ``pip install hpsearch``: no source tree on
``sys.path``, no ``studies/`` or ``slurm_array/`` in the current directory. The venv gets the
wheel only; its dependencies come from the project's venv through a ``.pth`` file (so nothing
is downloaded), which adds that venv's site-packages but never the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist_available")]

# What the build needs from the checkout; anything else it would need is a packaging bug.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "hpsearch", "slurm_array", "dashboard",
           "studies")  # fmt: skip


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # the user's folder: outside the checkout, empty at first
    build_log: str

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HPSEARCH_STORAGE")}
        return subprocess.run(
            [str(self.venv / "bin" / "hpsearch"), *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**env, "HPSEARCH_RUNS_DIR": str(self.work / "runs")},
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"hpsearch {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", str(src), "-w", str(base / "dist")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    wheel = next((base / "dist").glob("hpsearch-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(
        subprocess.check_output([str(venv / "bin" / "python"), "-c", code], text=True).strip()
    )
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    assert not any(Path(d).resolve() == ROOT.resolve() for d in deps)
    (purelib / "_project_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    work = base / "work"
    work.mkdir()
    yield Installed(venv, work, log)


def test_wheel_builds_without_deprecation_warnings(installed: Installed) -> None:
    log = installed.build_log
    assert not re.search(r"deprecat|BuildBackendWarning", log, re.IGNORECASE), log[-3000:]


def test_installed_package_is_used_not_the_checkout(installed: Installed) -> None:
    python = str(installed.venv / "bin" / "python")
    code = "import hpsearch, hpsearch.resources as r; print(hpsearch.__file__); print(r.shipped_dir('studies'))"  # noqa: E501
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [python, "-c", code], cwd=installed.work, capture_output=True, text=True, env=env
    )
    assert where.returncode == 0, where.stderr
    module, studies = (Path(line) for line in where.stdout.split())
    assert module.is_relative_to(installed.venv), module
    assert studies.is_relative_to(installed.venv) and (studies / "smoke.toml").is_file()
    assert installed.ok("--version").stdout.strip() == "hpsearch 0.1.0"


def test_every_user_path_from_a_folder_outside_the_checkout(installed: Installed) -> None:
    h = installed
    url = f"sqlite:///{h.work / 'hpsearch.db'}"
    # A starter study from the shipped ones, made tiny: 2 trials.
    assert "wrote smoke.toml" in h.ok("init", "--example", "smoke").stdout
    study = h.work / "smoke.toml"
    text = study.read_text()
    study.write_text(text.replace("n_trials = 6", "n_trials = 2\ntimeout_s = 1"))
    assert h.run("init", "--example", "smoke").returncode == 1  # never overwrites
    assert "smoke.toml: OK" in h.ok("validate", "smoke.toml").stdout
    assert h.ok("launch", "smoke.toml", "--storage", url).stdout.strip() == "smoke"
    # The worker stops after its first trial (timeout_s), and the run says so.
    run = h.ok("run", "smoke.toml", "--workers", "1", "--storage", url)
    assert (
        "stopped: each worker reached the study's budget.timeout_s (1 s). 1 of 2 trials "
        "remain: run the same command again to continue"
    ) in run.stderr
    assert "next: hpsearch status smoke" in run.stderr
    # More budget (no timeout) extends the study instead of refusing the changed file.
    study.write_text(text.replace("n_trials = 6", "n_trials = 2"))
    run = h.ok("run", "smoke.toml", "--workers", "1", "--storage", url)
    assert "extended (budget.timeout_s 1.0 → None), continuing study smoke" in run.stderr
    assert "done: the study's budget of 2 trials is reached" in run.stderr

    listed = json.loads(h.ok("studies", "--storage", url, "--json").stdout)
    assert [s["name"] for s in listed] == ["smoke"]
    assert listed[0]["counts"]["complete"] + listed[0]["counts"]["pruned"] >= 2
    assert "smoke" in h.ok("studies", "--storage", url).stdout

    # Every shipped Slurm profile renders its script (profiles and template from the wheel).
    shipped = sorted(p.stem for p in (ROOT / "slurm_array").glob("*.toml"))
    for profile in shipped:
        site = ["--partition", "gpu"] if profile == "generic" else []
        submit = h.ok(
            "submit", "smoke", "--profile", profile, "--array", "0-1", "--account", "abc123",
            *site, "--storage", url, "--dry-run",
        )  # fmt: skip
        assert "#SBATCH --array=0-1" in submit.stdout, submit.stdout
        assert "hpsearch worker" in submit.stdout or "-m hpsearch" in submit.stdout

    # Reports in every format; the HTML one inlines the shipped stylesheet.
    css = "--accent: #1f6fb4"  # a line of dashboard/style.css
    for name, marker in (("r.html", css), ("r.md", "| rank"), ("r.csv", "kind")):
        h.ok("report", "smoke", "--storage", url, "-o", name)
        assert marker in (h.work / name).read_text(), name

    # The dashboard serves its page, script and style from the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [str(h.venv / "bin" / "hpsearch"), "dashboard", "--port", "0", "--storage", url],
        cwd=h.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+)/leaderboard", line)
        assert match, f"{line!r} {proc.stderr.read() if proc.stderr else ''}"
        base = match.group(1)
        for path, marker in (
            ("/leaderboard", "/hpsearch/static/leaderboard.js"),
            ("/hpsearch/static/leaderboard.js", "function"),
            ("/hpsearch/static/style.css", css),
        ):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200 and marker in response.read().decode(), path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (h.work / "slurm_array").exists() and not (h.work / "studies").exists()
