"""``hpsearch dashboard``: optuna-dashboard and the hpsearch leaderboard in one server process.

One WSGI app routes ``/leaderboard``, ``/api/leaderboard``, ``/leaderboard/plot.svg`` and
``/hpsearch/static/...`` to hpsearch's pages and everything else to optuna-dashboard's own WSGI
app (``optuna_dashboard.wsgi(storage)``, unchanged), so every leaderboard row links straight to
optuna-dashboard's page for that trial.

Security defaults: the server binds 127.0.0.1; any other address needs an access token (at least
16 characters; ``--token auto`` makes one), sent as ``Authorization: Bearer TOKEN`` or once as
``?token=TOKEN`` (which sets a cookie so a browser works; the access log shows it as
``token=***``). Without a token, only requests whose ``Host`` names a loopback address,
``localhost`` or the bound host are answered, so a web page cannot reach the dashboard through
DNS rebinding (its requests name the page's own host). optuna-dashboard is read-only (only
GET/HEAD reach it) unless ``allow_writes``, and then a write must also come from the dashboard's
own origin (``Origin`` header) or carry the token as a Bearer header. Storage URLs are only
ever shown masked.

Example:
    >>> serve("sqlite:///hpsearch.db", port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import json
import logging
import mimetypes
import re
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from hpsearch.baselines import Baseline, load_baselines
from hpsearch.display import percent
from hpsearch.errors import HpsearchError
from hpsearch.markdown import md_code, md_text
from hpsearch.ranking import LeaderboardRowCache, leaderboard, list_studies
from hpsearch.storage import get_storage, mask_url, resolve_url

_logger = logging.getLogger(__name__)

TOKEN_ENV = "HPSEARCH_DASHBOARD_TOKEN"
TOKEN_COOKIE = "hpsearch_dashboard_token"
STATIC_PREFIX = "/hpsearch/static/"
MIN_TOKEN_LENGTH = 16
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class DashboardError(HpsearchError, ValueError):
    """The dashboard cannot start as asked (e.g. a public bind without an access token)."""


def assets_dir() -> Path:
    """The folder with the leaderboard's HTML/CSS/JS (``dashboard/`` of the repository).

    Raises:
        HpsearchError: If the installation lacks it (see :mod:`hpsearch.resources`).
    """
    from hpsearch.resources import DASHBOARD, shipped_dir

    return shipped_dir(DASHBOARD)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(token: str | None) -> str | None:
    """The access token to use: ``auto`` makes a random one; a short or blank one is refused.

    Raises:
        DashboardError: If ``token`` is shorter than :data:`MIN_TOKEN_LENGTH` characters (or
            blank).
    """
    if token is None or token == "":
        return None
    if token == "auto":
        return secrets.token_urlsafe(24)
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        raise DashboardError(
            f"--token (or ${TOKEN_ENV}) must be at least {MIN_TOKEN_LENGTH} characters. "
            f"Received: {len(token)} character(s). Fix: --token auto makes a random one, or "
            f"pick one like {secrets.token_urlsafe(24)}"
        )
    return token


def redact_tokens(text: str) -> str:
    """``text`` with every ``token=VALUE`` (a URL's query) shown as ``token=***``."""
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without an access token.

    Raises:
        DashboardError: If ``host`` is not a loopback address and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise DashboardError(
            f"--host {host} makes the dashboard reachable from other machines, so it needs an "
            f"access token. Fix: pass --token SECRET (or set ${TOKEN_ENV}), or keep the default "
            "--host 127.0.0.1 and use an SSH tunnel: ssh -L 8080:localhost:8080 user@login-node"
        )


class DashboardApp:
    """The WSGI app: hpsearch's leaderboard pages in front of optuna-dashboard.

    Args:
        storage: An optuna storage, e.g. ``get_storage(url, heartbeat=False)``.
        baselines: Literature baselines (:func:`hpsearch.baselines.load_baselines`).
        token: Access token; when set, every request must carry it. Defaults to none.
        allow_writes: Let optuna-dashboard's API change studies (notes, deletes, ...).
            Defaults to read-only.
        storage_label: What the pages show as the storage (already masked).
        host: The address the server binds; without a token, requests must name it, a
            loopback address or ``localhost`` in their ``Host`` header (with any port, as an SSH
            tunnel may map another one). Defaults to `127.0.0.1`.
        port: The port the server listens on, for the address shown in a refusal. Defaults to
            none (set it once the server is bound).
        response_cache_s: Reuse a computed leaderboard this long, so that a page load (table and
            two plots) reads the database once. Defaults to `2.0`.
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        baselines: list[Baseline],
        *,
        token: str | None = None,
        allow_writes: bool = False,
        storage_label: str = "",
        host: str = "127.0.0.1",
        port: int | None = None,
        response_cache_s: float = 2.0,
    ) -> None:
        import optuna_dashboard

        self.storage = storage
        self.baselines = baselines
        self.token = token or None
        self.allow_writes = allow_writes
        self.storage_label = storage_label
        self.host = host.strip("[]").lower()
        self.port = port
        self.assets = assets_dir()
        self.trial_cache = LeaderboardRowCache()
        self.response_cache_s = response_cache_s
        self._recent: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optuna_app: WSGIApp = optuna_dashboard.wsgi(storage)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Authenticate (token, else Host header), then route to hpsearch or optuna-dashboard."""
        if self.token is not None:
            denied = self._authenticate(environ, start_response)
        else:
            denied = self._check_host(environ, start_response)
        if denied is not None:
            return denied
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path in ("/", "/leaderboard", "/leaderboard/") or path.startswith(
            ("/api/leaderboard", "/leaderboard/", STATIC_PREFIX)
        ):
            if method not in ("GET", "HEAD"):
                return _respond(start_response, "405 Method Not Allowed", b"GET only\n")
            try:
                return self._own(path, environ, start_response)
            except HpsearchError as e:
                return _json_response(start_response, {"error": str(e)}, "404 Not Found")
        if method not in _SAFE_METHODS and not self.allow_writes:
            return _json_response(
                start_response,
                {"reason": "this dashboard is read-only; restart it with --allow-writes to edit"},
                "403 Forbidden",
            )
        if method not in _SAFE_METHODS and not (
            environ.get("hpsearch.bearer") or _same_origin(environ)
        ):
            return _json_response(
                start_response,
                {
                    "reason": "a write must come from this dashboard's own pages (its Origin "
                    "header must be this server's address) or carry the token as "
                    "'Authorization: Bearer TOKEN'"
                },
                "403 Forbidden",
            )
        return self.optuna_app(environ, start_response)

    def _check_host(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """Without a token: answer only requests addressed to this loopback server."""
        host = environ.get("HTTP_HOST")
        if host is None:  # HTTP/1.0 without Host: no browser, so no DNS rebinding
            return None
        try:
            parts = urlsplit("//" + host)
            name, port = parts.hostname, parts.port
        except ValueError:
            name = port = None
        # Any port: an SSH tunnel may map another local port to this one (ssh -L 8080:localhost:
        # 8765), and a browser names the port it connected to. DNS rebinding shows in the name.
        if (
            name is not None
            and (is_loopback(name) or name == self.host)
            and parts.username is None
            and parts.path == ""
            and (port is None or port > 0)
        ):
            return None
        shown = host if len(host) <= 80 else host[:77] + "..."
        served = f":{self.port}" if self.port else ""
        me = f"[{self.host}]" if ":" in self.host else self.host
        return _respond(
            start_response,
            "421 Misdirected Request",
            f"421 Misdirected Request: without an access token this dashboard answers only "
            f"requests addressed to {me} or localhost (this one named {shown!r}). "
            f"Open http://{me}{served}/leaderboard, through an SSH tunnel if the dashboard runs "
            "on another machine.\n".encode(errors="replace"),
        )

    def _own(
        self, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/":
            return _respond(start_response, "302 Found", b"", [("Location", "/leaderboard")])
        if path.rstrip("/") == "/leaderboard":
            return self._asset("leaderboard.html", start_response)
        if path.startswith(STATIC_PREFIX):
            return self._asset(path[len(STATIC_PREFIX) :], start_response)
        if path.rstrip("/") == "/api/leaderboard":
            return _json_response(start_response, self.board(query))
        if path == "/leaderboard/plot.svg":
            from hpsearch.report import svg_history

            board = self.board(query)
            svg = svg_history(
                board["history"],
                board["baselines"],
                x=query.get("x", "trial"),
                metric=board["metric"],
            )
            return _respond(
                start_response,
                "200 OK",
                svg.encode(),
                [("Content-Type", "image/svg+xml"), ("Cache-Control", "no-store")],
            )
        return _respond(start_response, "404 Not Found", b"not found\n")

    def board(self, query: dict[str, str]) -> dict[str, Any]:
        """The leaderboard for a query string (``dataset``, ``study``, ``state``, ``params``)."""
        key = (query.get("dataset") or None, query.get("study") or None, bool(query.get("params")))
        now = time.monotonic()
        with self._lock:
            hit = self._recent.get(key)
        if hit is not None and now - hit[0] < self.response_cache_s:
            board = hit[1]
        else:
            board = leaderboard(
                self.storage,
                self.baselines,
                dataset=key[0],
                study=key[1],
                include_params=key[2],
                cache=self.trial_cache,
            )
            board["storage"] = self.storage_label
            board["read_only"] = not self.allow_writes
            with self._lock:
                self._recent = {k: v for k, v in self._recent.items() if now - v[0] < 60}
                self._recent[key] = (now, board)
        states = {s for s in query.get("state", "").lower().split(",") if s}
        if states:
            rows = [r for r in board["rows"] if r["kind"] == "baseline" or r["state"] in states]
            board = {**board, "rows": rows}
        return board

    def _asset(self, name: str, start_response: StartResponse) -> Iterable[bytes]:
        path = (self.assets / name).resolve()
        if self.assets.resolve() not in path.parents or not path.is_file():
            return _respond(start_response, "404 Not Found", b"not found\n")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        return _respond(
            start_response,
            "200 OK",
            path.read_bytes(),
            [("Content-Type", ctype), ("Cache-Control", "no-cache")],
        )

    def _authenticate(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        assert self.token is not None
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("Bearer ") and _same(header[7:].strip(), self.token):
            environ["hpsearch.bearer"] = True
            return None
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if "token" in query:
            if not _same(query["token"][-1], self.token):
                return _unauthorized(start_response)
            rest = urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
            location = _local_path(environ.get("PATH_INFO") or "/") + (f"?{rest}" if rest else "")
            cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            return _respond(
                start_response,
                "303 See Other",
                b"",
                [("Location", location), ("Set-Cookie", cookie)],
            )
        cookies = SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just "no token"
            return _unauthorized(start_response)
        morsel = cookies.get(TOKEN_COOKIE)
        if morsel is not None and _same(morsel.value, self.token):
            return None
        return _unauthorized(start_response)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _local_path(path: str) -> str:
    """A redirect target on this server: one leading slash, every other byte re-encoded.

    ``PATH_INFO`` is decoded (PEP 3333: latin-1), so it can hold CR/LF or ``//host``.
    """
    raw = path.encode("latin-1", errors="replace")
    return "/" + quote(raw.lstrip(b"/\\"), safe="/")


def _same_origin(environ: dict[str, Any]) -> bool:
    origin = environ.get("HTTP_ORIGIN")
    host = environ.get("HTTP_HOST")
    if not origin or not host:
        return False
    return origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())


def _unauthorized(start_response: StartResponse) -> Iterable[bytes]:
    return _respond(
        start_response,
        "401 Unauthorized",
        b"401 Unauthorized: this dashboard needs its access token. Open the URL that "
        b"`hpsearch dashboard` printed (it ends in ?token=...), or send "
        b"'Authorization: Bearer TOKEN'.\n",
        [("WWW-Authenticate", 'Bearer realm="hpsearch"')],
    )


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    headers = list(headers or [])
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    headers.append(("Content-Length", str(len(body))))
    headers.append(("X-Content-Type-Options", "nosniff"))
    start_response(status, headers)
    return [body]


def _json_response(
    start_response: StartResponse, payload: dict[str, Any], status: str = "200 OK"
) -> Iterable[bytes]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str).encode()
    finally:
        if enabled:
            gc.enable()
    return _respond(
        start_response,
        status,
        body,
        [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
    )


# --------------------------------------------------------------------------------------------
# Notes for plain optuna-dashboard users
# --------------------------------------------------------------------------------------------


def note_markdown(board: dict[str, Any]) -> str:
    """A study's comparison with the baselines as Markdown (an optuna-dashboard note)."""
    trials = [r for r in board["rows"] if r["kind"] == "trial" and r["rank"] is not None]
    complete = [r for r in trials if r["state"] == "complete"]
    best = complete[0] if complete else None
    lines = [
        f"## hpsearch: comparison with baselines ({md_text(board['dataset'])})",
        "",
        "Trials are ranked by **validation** accuracy; test accuracy is reported, never used "
        "to select. Written by `hpsearch dashboard` / `hpsearch report`; the live leaderboard "
        f"is at {md_code('/leaderboard?study=' + quote(str(board['study']), safe=''))}.",
        "",
    ]
    if best is None:
        lines.append("No complete trial yet.")
    else:
        lines.append(
            f"**Best trial #{best['trial']}**: val {_percent(best['val_accuracy'])}, "
            f"test {_percent(best['test_accuracy'])}, {best['epochs']} epochs, "
            f"{md_code(best['config'] or '')}"
        )
    if board["baselines"]:
        beaten = set(best["beats"]) if best else set()
        lines += [
            "",
            "| baseline | metric | accuracy | best trial | source |",
            "|---|---|---|---|---|",
        ]
        for b in board["baselines"]:
            ours = None if best is None else best[f"{b['metric']}_accuracy"]
            verdict = "—" if ours is None else ("**beats**" if b["model"] in beaten else "below")
            delta = "" if ours is None else f" ({(ours - b['accuracy']) * 100:+.2f} pt)"
            lines.append(
                f"| {md_text(b['model'])} | {md_text(b['metric'])} | {_percent(b['accuracy'])} | "
                f"{verdict}{delta} | {md_text(b['source'])} |"
            )
        lines += ["", f"Beats {len(beaten)} of {len(board['baselines'])} baselines."]
    return "\n".join(lines) + "\n"


def write_study_notes(
    storage: optuna.storages.BaseStorage, baselines: list[Baseline], names: list[str] | None = None
) -> int:
    """Write each study's baseline comparison as its optuna-dashboard note.

    Cheap: one leaderboard query per study, and the note is only rewritten when its text
    changed. Failures (e.g. a read-only database) are logged, not raised. A worker may call this
    after each trial.

    Returns:
        The number of notes written.
    """
    import optuna_dashboard

    written = 0
    for info in list_studies(storage):
        if names is not None and info.name not in names:
            continue
        try:
            body = note_markdown(leaderboard(storage, baselines, study=info.name))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = optuna.load_study(study_name=info.name, storage=storage)
            if optuna_dashboard.get_note(study) != body:
                optuna_dashboard.save_note(study, body)
                written += 1
        except Exception as e:  # noqa: BLE001 - a note is a convenience, never fatal
            _logger.warning("could not write the note of study %s: %s", info.name, e)
    return written


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        _logger.debug("%s %s", self.address_string(), redact_tokens(format % args))


def make_dashboard_server(
    storage_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    baselines_file: str | Path | None = None,
    token: str | None = None,
    allow_writes: bool = False,
    write_notes: bool = True,
    response_cache_s: float = 2.0,
) -> tuple[WSGIServer, str]:
    """Build (not start) the dashboard server.

    Args:
        storage_url: Study database; see :func:`hpsearch.storage.resolve_url`.
        host: Address to bind. Defaults to `127.0.0.1`; others need ``token``.
        port: TCP port; 0 picks a free one. Defaults to `8080`.
        baselines_file: Extra baselines TOML added to the shipped ones.
        token: Access token required on every request when set (at least 16 characters;
            ``auto`` makes a random one, shown in the returned link).
        allow_writes: Let optuna-dashboard edit studies. Defaults to read-only.
        write_notes: Write each study's baseline comparison as its optuna-dashboard note.
        response_cache_s: See :class:`DashboardApp`.
    Returns:
        The server and the leaderboard URL to open (with ``?token=`` when a token is set).
    Raises:
        DashboardError: For a non-loopback ``host`` without a token, a token shorter than 16
            characters, or a port in use.
        StorageError: If the storage cannot be opened.
    """
    token = resolve_token(token)
    check_bind(host, token)
    url = resolve_url(storage_url)
    baselines = load_baselines(baselines_file)
    storage = get_storage(url, heartbeat=False, read_only=True)
    app = DashboardApp(
        storage,
        baselines,
        token=token,
        allow_writes=allow_writes,
        storage_label=mask_url(url),
        host=host,
        response_cache_s=response_cache_s,
    )
    if write_notes:
        started = time.perf_counter()
        n = write_study_notes(storage, baselines)
        _logger.info("wrote %d study note(s) in %.2f s", n, time.perf_counter() - started)

    server_class = _ThreadingServer
    if ":" in host.strip("[]"):

        class _V6(_ThreadingServer):
            address_family = socket.AF_INET6

        server_class = _V6
    try:
        server = make_server(
            host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as e:
        raise DashboardError(
            f"cannot listen on {host}:{port}: {e.strerror}. Fix: pick another --port, e.g. "
            "--port 8081 (or --port 0 for any free port)"
        ) from e
    app.port = server.server_port
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{server.server_port}/leaderboard"
    if token:
        link += f"?token={token}"
    return server, link


def _percent(value: float | None) -> str:
    return percent(value, missing="—")
