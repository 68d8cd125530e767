"""Storage URLs: precedence, masking, and clear errors that never show a password."""

from __future__ import annotations

import pytest

from hpsearch.errors import StorageError
from hpsearch.storage import DEFAULT_STORAGE, get_storage, mask_url, resolve_url


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
    assert message.startswith("cannot open storage postgresql://alice:***@127.0.0.1:1/optuna")
    assert "s3cret" not in message and "\n" not in message
    # A bare postgresql:// URL uses the installed psycopg2 and gets as far as connecting.
    assert "connection" in message.lower() and "driver" not in message


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
