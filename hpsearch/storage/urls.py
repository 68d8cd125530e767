"""Storage URLs: which database, how a URL is shown, and where its password comes from.

The URL comes from ``--storage``, else ``$HPSEARCH_STORAGE``, else ``sqlite:///hpsearch.db``.
Passwords never need to be in the URL: PostgreSQL reads ``~/.pgpass`` (or ``$PGPASSFILE``),
MariaDB reads ``~/.my.cnf`` (or ``$HPSEARCH_MYSQL_OPTION_FILE``), and for any backend
``$HPSEARCH_DB_PASSWORD`` is filled in at connect time. A secret can hide in two places of a
URL: ``user:password@`` and a query parameter (``?password=``, ``?passwd=``, ``?sslpassword=``,
a driver option carrying a token); :func:`mask_url` masks both wherever a URL is shown, and
:func:`without_secrets` removes both where a URL is written down (job scripts).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hpsearch.errors import StorageError

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
EXAMPLES = (
    "sqlite:///hpsearch.db, postgresql://user@host:5432/dbname or "
    "mysql+pymysql://user@host:3306/dbname"
)
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|credential|api_?key", re.IGNORECASE)
"""Query parameter names that carry a secret (``password``, ``passwd``, ``sslpassword``, ...)."""
_MASK = "***"
_SHOWN_CHARS = 200


def resolve_url(url: str | None = None) -> str:
    """``url`` if given, else ``$HPSEARCH_STORAGE``, else :data:`DEFAULT_STORAGE`.

    ``postgres://`` (Heroku's and many tools' spelling) is taken as ``postgresql://``.
    """
    url = url or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_STORAGE
    return re.sub(r"^postgres(?=[+:])", "postgresql", url.strip())


def is_secret_key(key: str) -> bool:
    """True for a URL query parameter that carries a secret (``password=``, ``token=``...)."""
    return bool(_SECRET_KEY.search(key))


def _secret_query_keys(parsed: URL) -> list[str]:
    return [k for k in parsed.query if is_secret_key(k)]


def mask_url(url: str) -> str:
    """The URL with every secret (password, secret query parameters) as ``***``: safe to show.

    A URL that cannot be parsed is shown as typed, with anything that looks like a secret
    masked and at most 200 characters.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        masked = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", rf"\1{_MASK}@", url)
        masked = re.sub(
            r"([?&;][^=&;#]*(?:pass|pwd|secret|token|credential|api_?key)[^=&;#]*=)[^&;#]*",
            rf"\1{_MASK}",
            masked,
            flags=re.IGNORECASE,
        )
        masked = "".join(c if c.isprintable() else "?" for c in masked)
        return masked if len(masked) <= _SHOWN_CHARS else masked[:_SHOWN_CHARS] + "…"
    secret = _secret_query_keys(parsed)
    if secret:
        parsed = parsed.update_query_dict({k: _MASK for k in secret})
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", _MASK)


def has_password(url: str) -> bool:
    """True if the URL itself carries a secret (``user:password@`` or a secret parameter)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return bool(re.search(r"://[^:/@?#]*:[^@/?#]*@|[?&;][^=&;#]*pass", url, re.IGNORECASE))
    return parsed.password is not None or bool(_secret_query_keys(parsed))


def without_secrets(url: str) -> str:
    """The URL without its password and secret query parameters (for job scripts)."""
    parsed = make_url(url)
    secret = _secret_query_keys(parsed)
    if secret:
        parsed = parsed.difference_update_query(secret)
    return parsed._replace(password=None).render_as_string(hide_password=False)


def url_password(url: URL) -> str | None:
    """The password a parsed URL carries, in ``user:password@`` or a secret parameter."""
    if url.password is not None:
        return str(url.password)
    for key in _secret_query_keys(url):
        value = url.query[key]
        return value if isinstance(value, str) else value[0]
    return None


def is_sqlite(url: str) -> bool:
    """True for ``sqlite://`` URLs (one machine only)."""
    return url.startswith("sqlite")


def parse_url(url: str) -> URL:
    """Parse a storage URL and pick the driver; fill in ``$HPSEARCH_DB_PASSWORD``.

    Raises:
        StorageError: One line if the URL is not a database URL or names another database.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(
            f"storage URL {mask_url(url)!r} is not a database URL. Example: {EXAMPLES}"
        ) from e
    if parsed.drivername.split("+")[0] not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database {parsed.drivername!r}. "
            f"Use {EXAMPLES}"
        )
    password = os.environ.get("HPSEARCH_DB_PASSWORD")
    if password and url_password(parsed) is None and not is_sqlite(url):
        parsed = parsed.set(password=password)
    # Bare schemes get the drivers that `pip install 'hpsearch[postgres]'` / `[mysql]` install
    # (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://; both are installed by the extra).
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for in-memory databases and other backends)."""
    if not is_sqlite(url):
        return None
    try:
        database = make_url(url).database
    except (ArgumentError, ValueError):
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def mysql_option_file() -> str | None:
    """The MariaDB/MySQL option file with the password (``$HPSEARCH_MYSQL_OPTION_FILE``, else
    ``~/.my.cnf``), or None if there is none."""
    path = os.environ.get("HPSEARCH_MYSQL_OPTION_FILE") or str(Path.home() / ".my.cnf")
    return path if Path(path).is_file() else None
