"""Optuna's own storage conformance suite (``optuna.testing.pytest_storages.StorageTestCase``)
against hpsearch's storage: bare (``get_storage``) and as workers use it (``cached``), on SQLite,
PostgreSQL and MariaDB.

Every test of Optuna's suite must pass. A deliberate deviation would be listed in
``DEVIATIONS`` as ``xfail(strict=True)`` with its reason (and in the README's storage
section); today there is none.
"""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _deviation(request: pytest.FixtureRequest) -> None:
    reason = DEVIATIONS.get(request.function.__name__)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.slow
class TestOptunaStorageSuite(StorageTestCase):
    """Every test of Optuna's StorageTestCase, on hpsearch's storage."""
