"""Storage URLs: precedence, masking, clear errors that never show a password, and the
storage's own behaviour (one connection, retries across an outage, SQLite under contention).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpsearch.errors import StorageError
from hpsearch.storage import (
    DEFAULT_STORAGE,
    cached,
    get_storage,
    mask_url,
    parse_url,
    resolve_url,
)
from tests.conftest import MARIADB_ADMIN, POSTGRES_ADMIN, run_cli


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url(None) == DEFAULT_STORAGE == "sqlite:///hpsearch.db"
    monkeypatch.setenv("HPSEARCH_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_mask_url_hides_the_password() -> None:
    masked = mask_url("postgresql://alice:s3cret@db.example/optuna")
    assert "s3cret" not in masked and masked == "postgresql://alice:***@db.example/optuna"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_not_a_url() -> None:
    with pytest.raises(StorageError, match="is not a database URL. Example: sqlite:///"):
        get_storage("hpsearch.db")


def test_unreachable_database_error_hides_password() -> None:
    with pytest.raises(StorageError) as info:
        get_storage("postgresql://alice:s3cret@127.0.0.1:1/optuna")
    message = str(info.value)
    assert message.startswith(
        "storage postgresql://alice:***@127.0.0.1:1/optuna: cannot reach the database server "
        "at 127.0.0.1:1 ("
    )
    assert message.endswith("Fix: is the database server running and reachable at 127.0.0.1:1? "
                            "Check host and port")  # fmt: skip
    assert "s3cret" not in message and "\n" not in message
    # A bare postgresql:// URL uses the installed psycopg2 and gets as far as connecting.
    assert "connection refused" in message.lower() and "driver" not in message


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSEARCH_DB_PASSWORD", "from-env")
    with pytest.raises(StorageError) as info:
        get_storage("postgresql://alice@127.0.0.1:1/optuna")
    assert "from-env" not in str(info.value)


def test_missing_driver_says_what_to_install() -> None:
    with pytest.raises(StorageError) as info:
        get_storage("postgresql+pg8000://alice:s3cret@127.0.0.1:1/optuna")
    message = str(info.value)
    assert "database driver is not installed" in message
    assert "pip install 'hpsearch[postgres]'" in message
    assert "s3cret" not in message and "\n" not in message


def test_password_on_the_command_line_gets_a_warning() -> None:
    result = run_cli(
        "launch", "studies/smoke.toml", "--storage", "postgresql://a:s3cret@127.0.0.1:1/x"
    )
    assert result.returncode == 1
    assert "warning: the --storage URL carries a password, which other users" in result.stderr
    assert "s3cret" not in result.stderr


def test_unsupported_database_is_named() -> None:
    with pytest.raises(StorageError, match="unsupported database 'oracle'. Use sqlite:///"):
        get_storage("oracle://scott@db/orcl")


# --- against the real servers: one line, exit code 1, password masked, nothing written -----


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database name (dropped afterwards)."""
    from tests.conftest import PG_START, _ensure_server

    _ensure_server(POSTGRES_ADMIN, PG_START, "PostgreSQL at 127.0.0.1:5432")
    name = f"hpsearch_test_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield name
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    engine.dispose()


def launch_error(url: str) -> str:
    """The one stderr line of `hpsearch launch` with $HPSEARCH_STORAGE = url."""
    result = run_cli("launch", "studies/smoke.toml", env={"HPSEARCH_STORAGE": url}, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: storage "), result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    return lines[0]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "postgresql://postgres:s3cret@127.0.0.1:1/test",
            "cannot reach the database server at 127.0.0.1:1",
        ),
        (
            "postgresql+psycopg://nobody:s3cret@127.0.0.1:5432/test",
            "login refused for user 'nobody' (",
        ),
        (
            "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db",
            "database 'no_such_db' does not exist (",
        ),
    ],
    ids=["unreachable", "wrong-login", "missing-database"],
)
def test_postgresql_connection_errors_are_one_clear_line(url: str, expected: str) -> None:
    from tests.conftest import PG_START, _ensure_server

    _ensure_server(POSTGRES_ADMIN, PG_START, "PostgreSQL at 127.0.0.1:5432")
    line = launch_error(url)
    assert f"storage {mask_url(url)}: {expected}" in line
    assert "Fix: " in line


@pytest.mark.mysql
@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "mysql+pymysql://root:s3cret@127.0.0.1:1/test",
            "cannot reach the database server at 127.0.0.1:1",
        ),
        ("mysql://root:s3cret@127.0.0.1:3306/test", "login refused for user 'root' ("),
        ("mysql://root@127.0.0.1:3306/no_such_db", "database 'no_such_db' does not exist ("),
    ],
    ids=["unreachable", "wrong-password", "missing-database"],
)
def test_mariadb_connection_errors_are_one_clear_line(url: str, expected: str) -> None:
    from tests.conftest import MARIADB_START, _ensure_server

    _ensure_server(MARIADB_ADMIN, MARIADB_START, "MariaDB at 127.0.0.1:3306")
    line = launch_error(url)
    assert f"storage {mask_url(url)}: {expected}" in line


@pytest.mark.postgres
def test_psycopg3_url_works_and_a_worker_holds_one_connection(pg_db: str) -> None:
    storage = get_storage(f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}")
    study = optuna.create_study(storage=storage, study_name="one")
    for _ in range(5):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 0.5)
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN)
    with admin.connect() as conn:
        names = conn.exec_driver_sql(
            f"SELECT application_name FROM pg_stat_activity WHERE datname = '{pg_db}'"
        ).scalars()
        assert list(names) == [f"hpsearch {socket.gethostname()}:{os.getpid()}"]
    admin.dispose()
    storage.engine.dispose()


@pytest.mark.postgres
def test_operations_wait_out_dropped_connections(pg_db: str) -> None:
    """Every server-side connection is killed (as in a restart): the next operation retries."""
    storage = get_storage(f"postgresql://postgres@127.0.0.1:5432/{pg_db}")
    study = optuna.create_study(storage=storage, study_name="outage")
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{pg_db}'"
        ).scalar()
    admin.dispose()
    assert killed == 1
    trial = study.ask()
    study.tell(trial, 1.0)
    assert [t.value for t in study.trials] == [1.0]
    storage.engine.dispose()


def test_gives_up_after_the_retry_time_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSEARCH_DB_RETRY_S", "1")
    db = tmp_path / "gone.db"
    storage = get_storage(f"sqlite:///{db}")
    study = optuna.create_study(storage=storage, study_name="gone")
    storage.engine.dispose()
    db.unlink()
    (tmp_path / "gone.db").mkdir()  # the path can no longer be opened as a database
    with pytest.raises(StorageError) as info:
        study.ask()
    message = str(info.value)
    assert message.startswith(f"lost the connection to storage sqlite:///{db} for 1 s (")
    assert "Its trial resumes from its last checkpoint" in message and "\n" not in message
    with pytest.raises(StorageError):  # later calls fail at once instead of waiting again
        study.ask()


def _hammer(url: str, n: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="locks", storage=get_storage(url))
    for _ in range(n):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 1)
        study.tell(trial, 0.5)


@pytest.mark.slow
def test_sqlite_never_says_database_is_locked_with_several_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    optuna.create_study(storage=get_storage(url), study_name="locks")
    ctx = mp.get_context("spawn")  # not fork: TensorFlow may be loaded in this process
    procs = [ctx.Process(target=_hammer, args=(url, 40)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 6
    trials = optuna.load_study(study_name="locks", storage=url).trials
    assert len(trials) == 240 and sorted(t.number for t in trials) == list(range(240))


@pytest.mark.parametrize("deferred", [False, True], ids=["direct", "deferred"])
def test_a_failed_write_raises_at_its_call_and_leaves_the_storage_working(
    tmp_path: Path, deferred: bool
) -> None:
    """Optuna's errors, at the call that caused them, never at a later unrelated call.

    Regression: writes were buffered and flushed by the next operation, so an incompatible
    distribution or a write to a finished trial raised at some later call, and the failed
    write went back into the buffer, so every later operation raised it again.
    """
    from hpsearch.storage import trial_writes

    url = f"sqlite:///{tmp_path / 'race.db'}"
    mine, theirs = cached(get_storage(url)), get_storage(url)
    study = optuna.create_study(storage=mine, study_name="race")
    other = optuna.load_study(study_name="race", storage=theirs)
    first = other.ask()
    first.suggest_int("n", 1, 3)
    other.tell(first, 1.0)
    trial = study.ask()
    block = trial_writes(trial) if deferred else contextlib.nullcontext()
    with block:
        with pytest.raises(ValueError, match="Cannot set different distribution kind"):
            trial.suggest_float("n", 0.0, 1.0)  # another worker made "n" an integer
        with pytest.raises(TypeError):
            trial.set_user_attr("bad", object())
        trial.suggest_int("m", 1, 3)
    with pytest.raises(KeyError):
        mine.set_trial_user_attr(10_000, "k", 1)
    theirs.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # "its worker died"
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        mine.set_trial_user_attr(trial._trial_id, "hpsearch:fail_reason", "timeout")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        with trial_writes(trial):
            pass
    later = study.ask()  # and the storage goes on working
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # when the block ends
        with trial_writes(later):
            later.suggest_int("n", 1, 3)
            theirs.set_trial_state_values(later._trial_id, TrialState.FAIL)  # meanwhile
            later.set_user_attr("k", 1)
    assert "k" not in theirs.get_trial(later._trial_id).user_attrs
    study.tell(study.ask(), 2.0)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert study.trials[1].params == {"m": trial.params["m"]}  # what was valid was written
    assert study.trials[2].params == {}  # nothing of the failed block


def _comparable(trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    """FrozenTrials as dicts, NaN made comparable (NaN != NaN)."""
    return [{k: repr(v) if "intermediate" in k else v for k, v in vars(t).items()} for t in trials]


def test_trials_read_as_rows_equal_optunas_own_reading(db_url: str) -> None:
    """hpsearch reads trials with plain SQL (faster); the result must be what Optuna reads."""
    storage = get_storage(db_url)
    study = optuna.create_study(storage=storage, study_name="same", direction="maximize")
    for i in range(7):
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_int("filters", 16, 128, step=16)
        trial.suggest_categorical("opt", ["adam", "sgd", None])
        trial.set_user_attr("config", {"layers": [1, 2], "name": f"t{i}"})
        storage.set_trial_system_attr(trial._trial_id, "sys", i)
        for step, value in enumerate([0.5, float("nan"), float("inf"), -float("inf")][: i % 5]):
            trial.report(value, step)
        if i in (0, 1):
            study.tell(trial, 0.25 * i)
        elif i == 2:
            study.tell(trial, float("-inf"))
        elif i == 3:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 4:
            study.tell(trial, state=TrialState.FAIL)
        # 5 and 6 stay RUNNING
    multi = optuna.create_study(storage=storage, directions=["minimize", "maximize"])
    multi.tell(multi.ask(), [1.0, float("inf")])
    storage.get_trial(trial._trial_id)  # writes what is buffered
    optunas = optuna.storages.RDBStorage._get_trials
    for study_id in (study._study_id, multi._study_id):
        for states, included, greater_than in [
            (None, set(), -1),
            ((TrialState.COMPLETE, TrialState.PRUNED), set(), -1),
            (None, {1, 3}, 4),
            (None, set(), 5),
        ]:
            ours = storage._get_trials(study_id, states, included, greater_than, _from_cache=False)
            theirs = optunas(storage, study_id, states, included, greater_than)
            assert _comparable(ours) == _comparable(theirs)
            assert ours  # the comparison is not vacuous
    for t in study.trials + multi.trials:
        ours = storage.get_trial(t._trial_id)
        theirs = optuna.storages.RDBStorage.get_trial(storage, t._trial_id)
        assert _comparable([ours]) == _comparable([theirs])
    with pytest.raises(KeyError):
        storage.get_trial(10_000)


def test_other_workers_running_trials_are_reread_at_a_slower_pace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's running trial: read in full with its parameters when first seen (TPE's
    constant liar needs them), its epoch reports within RUNNING_REFRESH_S, its end at the next
    refresh (so finished trials are never late)."""
    import hpsearch.storage.rdb as rdb

    clock = [1000.0]
    monkeypatch.setattr(rdb.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("HPSEARCH_REFRESH_S", "1")
    monkeypatch.setenv("HPSEARCH_RUNNING_REFRESH_S", "10")
    url = f"sqlite:///{tmp_path / 'pace.db'}"
    optuna.create_study(storage=get_storage(url), study_name="pace")
    mine = optuna.load_study(study_name="pace", storage=cached(get_storage(url)))
    theirs = optuna.load_study(study_name="pace", storage=get_storage(url))

    def seen() -> optuna.trial.FrozenTrial:
        clock[0] += 1.5  # past REFRESH_S: every read below asks the database
        (trial,) = mine.get_trials(deepcopy=False)
        return trial

    running = theirs.ask()
    assert seen().params == {}  # seen before its parameters were written...
    running.suggest_float("x", 0.0, 1.0)
    running.report(0.5, 1)
    first = seen()  # ...so it is read again at the next refresh, not 10 s later
    assert first.state == TrialState.RUNNING and first.number == running.number
    assert first.params == running.params and first.intermediate_values == {1: 0.5}
    running.report(0.6, 2)
    assert seen().intermediate_values == {1: 0.5}  # read 1.5 s ago: kept
    clock[0] += 10
    assert seen().intermediate_values == {1: 0.5, 2: 0.6}  # due again
    running.report(0.7, 3)
    theirs.tell(running, 0.7)
    finished = seen()  # at once, not RUNNING_REFRESH_S later
    assert finished.state == TrialState.COMPLETE and finished.value == 0.7
    assert finished.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}


def test_a_worker_sees_its_own_writes_at_once(tmp_path: Path) -> None:
    """The cache throttles reads of other workers' news, never this process's own writes."""
    storage = cached(get_storage(f"sqlite:///{tmp_path / 'own.db'}"))
    study = optuna.create_study(storage=storage, study_name="own")
    study.get_trials()  # the refresh clock starts
    trial = study.ask()
    trial.suggest_int("n", 1, 3)
    trial.set_user_attr("k", "v")
    trial.report(0.5, 1)
    (seen,) = study.get_trials(deepcopy=False)
    assert seen.params == trial.params and seen.user_attrs == {"k": "v"}
    assert seen.intermediate_values == {1: 0.5}


def test_stale_trials_are_looked_for_once_per_heartbeat_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna looks for dead workers' trials before every trial; the database is asked once
    per heartbeat interval, unless the worker needs the answer now (its budget check). A
    trial that never sent a heartbeat (``study.ask()``) is not stale, as in Optuna."""
    import hpsearch.storage.rdb as rdb

    clock = [1000.0]
    monkeypatch.setattr(rdb.time, "monotonic", lambda: clock[0])
    storage = get_storage(f"sqlite:///{tmp_path / 'stale.db'}")
    study = optuna.create_study(storage=storage, study_name="stale")
    assert storage.heartbeat_interval == 60
    assert storage._get_stale_trial_ids(study._study_id) == []  # asked: none yet
    asked = study.ask()  # no heartbeat ever: not a worker's trial
    dead = study.ask()
    storage.record_heartbeat(dead._trial_id)  # its worker's last heartbeat, long ago
    beats = sqlalchemy.table("trial_heartbeats", sqlalchemy.column("heartbeat"))
    with storage.engine.begin() as conn:
        conn.execute(beats.update().values(heartbeat=datetime(2020, 1, 1)))
    clock[0] += 59
    assert storage._get_stale_trial_ids(study._study_id) == []  # not asked: checked 59 s ago
    clock[0] += 2
    assert storage._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    assert storage._get_stale_trial_ids(study._study_id) == []  # not asked
    storage.check_stale_trials_now()
    assert storage._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    assert asked._trial_id not in storage._get_stale_trial_ids(study._study_id)


def test_trial_numbers_continue_across_enqueued_added_and_new_trials(db_url: str) -> None:
    """New trials are numbered from the newest trial (O(1)), not by counting the study; mixed
    with Optuna's own paths (enqueued, added, retried) and a second study in the same
    database, numbers stay 0, 1, 2, ... per study."""
    storage = get_storage(db_url)
    one = optuna.create_study(storage=cached(storage), study_name="one")
    two = optuna.create_study(storage=cached(storage), study_name="two")
    one.tell(one.ask(), 1.0)
    one.enqueue_trial({"x": 0.5})
    two.tell(two.ask(), 1.0)
    one.add_trial(optuna.trial.create_trial(value=2.0))
    for study in (one, two, one, one):  # one's first ask runs the enqueued trial (number 1)
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 0.0)
    assert [t.number for t in one.get_trials()] == list(range(5))
    assert one.trials[1].params == {"x": 0.5}
    assert [t.number for t in two.get_trials()] == [0, 1]
    with pytest.raises(KeyError):
        storage._create_new_trial(10_000)


def test_cached_reads_match_optunas_cache(db_url: str) -> None:
    """WorkerTrialCache keeps the ordered trial list between changes; every read must still equal
    what Optuna's own cache returns, also after new trials and state changes."""
    ours = optuna.create_study(storage=cached(get_storage(db_url)), study_name="reads")
    plain_url = parse_url(db_url).render_as_string(hide_password=False)  # with its driver
    theirs = optuna.load_study(study_name="reads", storage=plain_url)  # Optuna's RDB + cache
    filters = [None, (TrialState.COMPLETE,), (TrialState.RUNNING, TrialState.WAITING)]

    def seconds(trials: list[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
        # A process keeps the start time of its own new trials to the microsecond, as Optuna
        # does; MariaDB's DATETIME stores whole seconds.
        return [
            {k: v.replace(microsecond=0) if isinstance(v, datetime) else v for k, v in d.items()}
            for d in _comparable(trials)
        ]

    def same() -> None:
        for states in filters:
            mine = ours.get_trials(deepcopy=False, states=states)
            assert seconds(mine) == seconds(theirs.get_trials(states=states))
            mine.clear()  # a caller changing its list must not change the cache
            assert len(ours.get_trials(deepcopy=False, states=states)) == len(
                theirs.get_trials(states=states)
            )

    running = [ours.ask() for _ in range(3)]
    same()
    ours.tell(running[1], 0.5)
    ours.enqueue_trial({})
    same()
    ours.tell(running[0], state=TrialState.PRUNED)
    ours.tell(ours.ask(), 1.0)  # the enqueued one
    same()
