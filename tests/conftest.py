"""Shared fixtures and markers.

A plain ``pytest`` runs the fast tests only and says how many heavy ones it left out.
``pytest --all`` (what ``make test`` runs) also runs the tests marked slow, postgres, mysql,
slurm, browser and jax; those that need a service start it when they can, and otherwise skip
saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"
HEAVY_MARKERS = ("slow", "postgres", "mysql", "slurm", "browser", "jax")
ARTIFACTS = ROOT / "test-artifacts"

SLOW_TRIAL = """
name = "{name}"
[data]
dataset = "fashion_mnist"
val_fraction = 0.02
train_subset = {train_subset}
[budget]
n_trials = 1
max_epochs = {max_epochs}
[pruner]
kind = "none"
[search]
activation = "relu"
[search.conv]
n_blocks = 1
layers_per_block = 1
filters_base = 16
filters_growth = 1.0
batch_norm = false
dropout = 0.0
[search.dense]
n_layers = 1
units = 64
dropout = 0.0
[search.optimizer]
name = "adam"
lr = 0.002
weight_decay = 0.0
[search.training]
batch_size = 32
"""


def slow_trial_spec(name: str, train_subset: int = 3000, max_epochs: int = 7) -> str:
    """A one-trial study file with one fixed config that trains for seconds per epoch.

    Long enough for tests to interrupt it mid-trial (preemption, kill, Ctrl-C).
    """
    return SLOW_TRIAL.format(name=name, train_subset=train_subset, max_epochs=max_epochs)


def run_cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hpsearch ARGS`` as a user would, with output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
MARIADB_START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help="also run the tests marked " + ", ".join(HEAVY_MARKERS) + " (what `make test` does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slurm") and "slurm_cluster" not in item.fixturenames:
            item.fixturenames.insert(0, "slurm_cluster")  # type: ignore[attr-defined]
    if config.getoption("--all"):
        return
    heavy = [i for i in items if any(i.get_closest_marker(m) for m in HEAVY_MARKERS)]
    if heavy:  # not run, and said so once at the end (not one skip line per test)
        config.hook.pytest_deselected(items=heavy)
        left_out = set(heavy)
        items[:] = [i for i in items if i not in left_out]
        config.stash[_NOT_RUN] = len(heavy)
        if hasattr(config, "workeroutput"):  # a pytest-xdist worker: tell the controller
            config.workeroutput["heavy_not_run"] = len(heavy)


_NOT_RUN = pytest.StashKey[int]()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Under pytest-xdist, the workers collect; the controller prints their count."""
    n = getattr(node, "workeroutput", {}).get("heavy_not_run")
    if n:
        node.config.stash[_NOT_RUN] = n


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say why the heavy tests were deselected and how to run them."""
    n = config.stash.get(_NOT_RUN, 0)
    if n:
        terminalreporter.write_line(
            f"{n} heavy tests ({', '.join(HEAVY_MARKERS)}) not run: `pytest --all` or "
            "`make test` runs them"
        )


@pytest.fixture(autouse=True)
def _isolated_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints and logs of each test go to its own tmp folder; no study env leaks in."""
    monkeypatch.setenv("HPSEARCH_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite study database in the test's tmp folder."""
    return f"sqlite:///{tmp_path / 'study.db'}"


def _server_up(url: str) -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as e:  # noqa: BLE001 - any driver error means "not reachable"
        return str(e).splitlines()[0]


def _ensure_server(admin_url: str, start_cmd: str, name: str) -> None:
    problem = _server_up(admin_url)
    if problem is None:
        return
    if os.geteuid() == 0:
        subprocess.run(start_cmd, shell=True, capture_output=True, timeout=60)
        for _ in range(30):
            if _server_up(admin_url) is None:
                return
            import time

            time.sleep(1)
    pytest.skip(f"{name} is not reachable ({problem}) and could not be started with: {start_cmd}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database (created for this session, dropped after)."""
    pytest.importorskip("psycopg2", reason="psycopg2 missing: run `make install`")
    import sqlalchemy

    admin = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    _ensure_server(admin, PG_START, "PostgreSQL at 127.0.0.1:5432")
    name = f"hpsearch_test_{uuid.uuid4().hex[:8]}"
    # No pooled connection: the server may be restarted by a test in between.
    engine = sqlalchemy.create_engine(
        admin, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
    )
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"  # bare, as users write it
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a fresh MariaDB database (created for this session, dropped after)."""
    pytest.importorskip("pymysql", reason="pymysql missing: run `make install`")
    import sqlalchemy

    admin = "mysql+pymysql://root@127.0.0.1:3306/test"
    _ensure_server(admin, MARIADB_START, "MariaDB at 127.0.0.1:3306")
    name = f"hpsearch_test_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield f"mysql://root@127.0.0.1:3306/{name}"  # bare, as users write it
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    engine.dispose()


POSTGRES_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh study database for this test on each backend, removed afterwards.

    SQLite: a file in the test's tmp folder. PostgreSQL/MariaDB: a new database on the local
    server (started if it is down and we are root, else the test skips saying why).
    """
    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    import sqlalchemy

    name = f"hpsearch_test_{uuid.uuid4().hex[:8]}"
    if backend == "postgresql":
        pytest.importorskip("psycopg2", reason="psycopg2 missing: run `make install`")
        _ensure_server(POSTGRES_ADMIN, PG_START, "PostgreSQL at 127.0.0.1:5432")
        engine = sqlalchemy.create_engine(
            POSTGRES_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
        )
        url, drop = f"postgresql://postgres@127.0.0.1:5432/{name}", " WITH (FORCE)"
    else:
        pytest.importorskip("pymysql", reason="pymysql missing: run `make install`")
        _ensure_server(MARIADB_ADMIN, MARIADB_START, "MariaDB at 127.0.0.1:3306")
        engine = sqlalchemy.create_engine(
            MARIADB_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
        )
        url, drop = f"mysql://root@127.0.0.1:3306/{name}", ""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield url
    finally:
        _ensure_server(
            POSTGRES_ADMIN if backend == "postgresql" else MARIADB_ADMIN,
            PG_START if backend == "postgresql" else MARIADB_START,
            backend,
        )
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{drop}")
        engine.dispose()


SLURM_RECIPE = Path(__file__).resolve().parent / "slurm" / "slurm-single-node.sh"
SLURM_CONF = "/var/tmp/slurm-single-node/etc/slurm.conf"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A real single-node Slurm (tests/slurm/slurm-single-node.sh: 8 CPUs, 4 fake GPUs).

    Started for the session (seconds when already installed), stopped after it.
    """
    if os.geteuid() != 0:
        pytest.skip("slurm tests need root (apt-get install, munged, slurmd)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("slurm tests need Debian's apt-get or an installed slurm-wlm")
    result = subprocess.run(
        ["bash", str(SLURM_RECIPE), "start"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SLURM_CPUS": "8"},
    )
    if result.returncode != 0:
        pytest.fail("slurm recipe failed to start:\n" + (result.stdout + result.stderr)[-3000:])
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = SLURM_CONF
    yield
    subprocess.run(["bash", str(SLURM_RECIPE), "stop"], capture_output=True, timeout=120)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def fashion_mnist_available() -> None:
    """Skip (with the fix) when the real Fashion-MNIST files are not on this machine."""
    from hpsearch.data import candidate_dirs

    if not any(
        (d / "train-images-idx3-ubyte.gz").exists() for d in candidate_dirs("fashion_mnist")
    ):
        pytest.skip("Fashion-MNIST files not found: run `make install` (dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium for browser tests."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("chromium not installed: run `make install` (apt-get install chromium)")
    return path


def run_in_process(*args: str) -> tuple[int, str, str]:
    """``hpsearch ARGS`` through the real entry point, in this process: code, stdout, stderr."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from hpsearch.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["hpsearch", *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()
