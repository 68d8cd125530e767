"""Optuna's own storage conformance suite (``optuna.testing.pytest_storages.StorageTestCase``)
against hpsearch's storage: bare (``get_storage``) and as workers use it (``cached``), on SQLite,
PostgreSQL and MariaDB.

Every test of Optuna's suite must pass. A deliberate deviation would be listed in
``DEVIATIONS`` as ``xfail(strict=True)`` with its reason (and in the README's storage
section); today there is none. ``BACKEND_LIMITS`` lists what a database itself cannot do with
Optuna's schema, where plain ``RDBStorage`` fails the same way (``test_backend_limits_are_
optunas_own`` checks that, so a limit can never hide a deviation of ours).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.storages._rdb import models
from optuna.testing.pytest_storages import StorageTestCase

from hpsearch.storage import cached, get_storage, parse_url
from tests.conftest import MARIADB_ADMIN, MARIADB_START, PG_START, POSTGRES_ADMIN, _ensure_server

DEVIATIONS: dict[str, str] = {}
"""Test name -> why hpsearch's storage deliberately behaves otherwise (none today)."""

_WHOLE_SECONDS = (
    "MariaDB: Optuna's schema stores trial start and end times as DATETIME, which keeps whole "
    "seconds, so a trial read back differs from the one written by its microseconds (plain "
    "RDBStorage too)"
)
BACKEND_LIMITS: dict[str, dict[str, str]] = {
    "mariadb": {
        r"test_create_new_trial\[": _WHOLE_SECONDS,
        r"test_create_new_trial_with_template_trial\[.*start_time0-complete_time0": _WHOLE_SECONDS,
        r"test_get_trial\[": _WHOLE_SECONDS,
        r"test_get_all_trials\[": _WHOLE_SECONDS,
    }
}
"""Backend -> test-name pattern -> reason: xfail(strict=True) on that backend only."""

_SERVERS = {"postgresql": (POSTGRES_ADMIN, PG_START), "mariadb": (MARIADB_ADMIN, MARIADB_START)}


@pytest.fixture(scope="module")
def _server_databases() -> Iterator[dict[str, str]]:
    """One database per server for this module, created on first use, dropped at the end."""
    made: dict[str, str] = {}
    yield made
    for backend, url in made.items():
        admin, _ = _SERVERS[backend]
        engine = sqlalchemy.create_engine(admin, poolclass=sqlalchemy.pool.NullPool)
        name = url.rsplit("/", 1)[1]
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            extra = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{extra}")
        engine.dispose()


def _server_url(backend: str, made: dict[str, str]) -> str:
    if backend in made:
        return made[backend]
    admin, start = _SERVERS[backend]
    pytest.importorskip("psycopg2" if backend == "postgresql" else "pymysql")
    _ensure_server(admin, start, backend)
    name = f"hpsearch_optuna_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    scheme = "postgresql://postgres" if backend == "postgresql" else "mysql://root"
    port = 5432 if backend == "postgresql" else 3306
    made[backend] = f"{scheme}@127.0.0.1:{port}/{name}"
    return made[backend]


def _empty(url: str) -> None:
    """Delete every row of Optuna's tables (a fresh database, without creating one per test)."""
    engine = sqlalchemy.create_engine(parse_url(url), poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        if not sqlalchemy.inspect(conn).has_table("studies"):  # new: get_storage makes them
            return
        for table in reversed(models.BaseModel.metadata.sorted_tables):
            if table.name not in ("version_info", "alembic_version"):
                conn.execute(table.delete())
    engine.dispose()


@pytest.fixture(
    params=[
        pytest.param(("sqlite", False), id="sqlite-bare"),
        pytest.param(("sqlite", True), id="sqlite-cached"),
        pytest.param(("postgresql", False), id="postgresql-bare", marks=pytest.mark.postgres),
        pytest.param(("postgresql", True), id="postgresql-cached", marks=pytest.mark.postgres),
        pytest.param(("mariadb", False), id="mariadb-bare", marks=pytest.mark.mysql),
        pytest.param(("mariadb", True), id="mariadb-cached", marks=pytest.mark.mysql),
    ]
)
def storage(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _server_databases: dict[str, str],
) -> Iterator[BaseStorage]:
    """hpsearch's storage on an empty database, bare or behind the worker cache."""
    backend, behind_cache = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'storage.db'}"
    else:
        url = _server_url(backend, _server_databases)
        _empty(url)
    bare = get_storage(url, heartbeat=False)
    yield cached(bare) if behind_cache else bare
    bare.engine.dispose()


def _backend_limit(backend: str, test_name: str) -> str | None:
    for pattern, reason in BACKEND_LIMITS.get(backend, {}).items():
        if re.search(pattern, test_name):
            return reason
    return None


@pytest.fixture(autouse=True)
def _deviation(request: pytest.FixtureRequest) -> None:
    reason = DEVIATIONS.get(request.function.__name__)
    callspec = getattr(request.node, "callspec", None)
    if reason is None and callspec is not None and "storage" in callspec.params:
        reason = _backend_limit(callspec.params["storage"][0], request.node.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.slow
class TestOptunaStorageSuite(StorageTestCase):
    """Every test of Optuna's StorageTestCase, on hpsearch's storage."""


@pytest.mark.slow
@pytest.mark.mysql
def test_backend_limits_are_optunas_own(_server_databases: dict[str, str]) -> None:
    """What BACKEND_LIMITS excuses on MariaDB fails with plain Optuna there too."""
    import optuna
    from optuna.testing.pytest_storages import _setup_studies

    url = _server_url("mariadb", _server_databases)
    _empty(url)
    plain = optuna.storages.RDBStorage(parse_url(url).render_as_string(hide_password=False))
    _, study_to_trials = _setup_studies(plain, n_study=1, n_trial=3, seed=1)
    (trials,) = study_to_trials.values()
    for expected in trials.values():
        read = plain.get_trial(expected._trial_id)
        assert read != expected and read.datetime_start == expected.datetime_start.replace(
            microsecond=0
        )
    plain.engine.dispose()
