"""The dashboard: leaderboard API in-process through the WSGI app, security, notes, and a real
``hpsearch dashboard`` server in headless Chromium on a study made by real trials."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch.baselines import Baseline
from hpsearch.dashboard import DashboardApp, DashboardError, check_bind, write_study_notes
from hpsearch.ranking import leaderboard
from hpsearch.storage import get_storage

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HPSEARCH = str(Path(sys.executable).with_name("hpsearch"))
BASELINES = [
    Baseline("fashion_mnist", "B-test", 0.93, "test", "paper T"),
    Baseline("fashion_mnist", "B-val", 0.91, "val", "paper V"),
    Baseline("mnist", "M-test", 0.995, "test", "paper M"),
]
DISTS = {
    "optimizer.name": CategoricalDistribution(["adam", "sgd"]),
    "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
}


def _trial(
    state: TrialState,
    value: float | None = None,
    steps: dict[int, float] | None = None,
    **attrs: Any,
) -> optuna.trial.FrozenTrial:
    return optuna.create_trial(
        state=state,
        value=value,
        params={"optimizer.name": "sgd", "optimizer.lr": 0.01},
        distributions=DISTS,
        intermediate_values=steps or {},
        user_attrs={f"hpsearch:{k}": v for k, v in attrs.items()},
    )


def build_known_storage(url: str) -> optuna.storages.BaseStorage:
    """Studies alpha, beta (fashion_mnist) and gamma (mnist) with hand-made trials."""
    storage = get_storage(url, heartbeat=False)
    trials = {
        "alpha": [
            # 0: best validation accuracy.
            _trial(TrialState.COMPLETE, 0.95, {1: 0.9, 2: 0.95}, test_accuracy=0.935, epochs=2,
                   wall_time_s=120.0, n_params=1000, config="conv 32 | adam"),
            # 1: higher test accuracy but lower validation accuracy: must rank below 0 and beta 0.
            _trial(TrialState.COMPLETE, 0.90, {1: 0.9}, test_accuracy=0.97, epochs=1,
                   wall_time_s=60.0, config="conv 8 | sgd"),
            # 2: pruned; ranked by its last reported epoch.
            _trial(TrialState.PRUNED, None, {1: 0.8, 2: 0.85}, epochs=2, config="conv 16 | sgd"),
            _trial(TrialState.FAIL, None, {}, fail_reason="oom", slurm_job_id="77",
                   slurm_array_task_id=1),
        ],
        "beta": [
            _trial(TrialState.COMPLETE, 0.92, {1: 0.92}, test_accuracy=0.91, epochs=1,
                   wall_time_s=600.0, gpu="0,1", slurm_job_id="77", slurm_array_task_id=0,
                   config="conv 64 | adam"),
            _trial(TrialState.FAIL, None, {}, fail_reason="preempted", slurm_job_id="78",
                   slurm_array_task_id=0),
        ],
        "gamma": [_trial(TrialState.COMPLETE, 0.99, {1: 0.99}, test_accuracy=0.992, epochs=1)],
    }  # fmt: skip
    for name, frozen in trials.items():
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr("hpsearch:dataset", "mnist" if name == "gamma" else "fashion_mnist")
        study.set_user_attr("hpsearch:spec_toml", f'name = "{name}"\n')
        study.add_trials(frozen)
    return storage


@pytest.fixture
def storage(sqlite_url: str) -> optuna.storages.BaseStorage:
    return build_known_storage(sqlite_url)


@pytest.fixture
def app(storage: optuna.storages.BaseStorage) -> DashboardApp:
    return DashboardApp(storage, BASELINES, storage_label="sqlite:///x.db")


def call(
    app: Any,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI app: (status code, headers, body)."""
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(hdrs)

    data = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], data


def api(app: Any, query: str = "") -> dict[str, Any]:
    status, headers, body = call(app, "/api/leaderboard" + query)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    return [r["model"] if r["kind"] == "baseline" else f"{r['study']}#{r['trial']}" for r in rows]


# ---------------------------------------------------------------------------------- ranking


def test_api_ranks_by_validation_with_baselines_interleaved(app: DashboardApp) -> None:
    board = api(app, "?dataset=fashion_mnist")
    assert _labels(board["rows"]) == [
        "alpha#0", "B-test", "beta#0", "B-val", "alpha#1", "alpha#2", "alpha#3", "beta#1",
    ]  # fmt: skip
    by = {label: r for label, r in zip(_labels(board["rows"]), board["rows"])}
    assert [by[k]["rank"] for k in ("alpha#0", "beta#0", "alpha#1", "alpha#2")] == [1, 2, 3, 4]
    assert by["alpha#3"]["rank"] is None and by["alpha#3"]["state"] == "fail"
    # Baselines are marked as such and keep their source and metric.
    assert by["B-test"] == {**by["B-test"], "kind": "baseline", "source": "paper T", "rank": None}
    assert by["B-val"]["metric"] == "val" and by["B-val"]["test_accuracy"] == 0.91
    # Beats: test accuracy vs test baselines, validation accuracy vs val baselines.
    assert by["alpha#0"]["beats"] == ["B-test", "B-val"]
    assert by["beta#0"]["beats"] == ["B-val"]
    assert by["alpha#1"]["beats"] == ["B-test"]


def test_test_accuracy_is_never_used_to_rank(app: DashboardApp) -> None:
    rows = [r for r in api(app)["rows"] if r["kind"] == "trial" and r["rank"]]
    one = next(r for r in rows if (r["study"], r["trial"]) == ("alpha", 1))
    assert one["test_accuracy"] == max(r["test_accuracy"] or 0 for r in rows)
    assert one["rank"] == 3
    assert [r["val_accuracy"] for r in rows] == sorted(
        (r["val_accuracy"] for r in rows), reverse=True
    )


def test_honest_columns(app: DashboardApp) -> None:
    rows = {(r["study"], r["trial"]): r for r in api(app)["rows"] if r["kind"] == "trial"}
    best = rows[("alpha", 0)]
    assert (best["val_accuracy"], best["test_accuracy"], best["epochs"]) == (0.95, 0.935, 2)
    assert (best["wall_minutes"], best["n_params"], best["config"]) == (
        2.0,
        1000,
        "conv 32 | adam",
    )
    assert rows[("beta", 0)]["gpu_minutes"] == 20.0  # 10 min on 2 GPUs
    pruned = rows[("alpha", 2)]
    assert (pruned["val_accuracy"], pruned["test_accuracy"], pruned["state"]) == (
        0.85,
        None,
        "pruned",
    )
    assert rows[("alpha", 3)]["fail_reason"] == "oom"
    assert best["dashboard_url"] == f"/dashboard/studies/{best['study_id']}/trials?numbers=0"


def test_filters_study_state_dataset(app: DashboardApp) -> None:
    beta = api(app, "?study=beta")
    assert _labels(beta["rows"]) == ["B-test", "beta#0", "B-val", "beta#1"]
    assert beta["rows"][1]["rank"] == 1 and beta["dataset"] == "fashion_mnist"
    failed = api(app, "?dataset=fashion_mnist&state=fail")
    assert _labels(failed["rows"]) == ["B-test", "B-val", "alpha#3", "beta#1"]
    pruned_or_complete = api(app, "?state=complete,pruned")
    assert {r["state"] for r in pruned_or_complete["rows"] if r["kind"] == "trial"} == {
        "complete", "pruned",
    }  # fmt: skip
    mnist = api(app, "?dataset=mnist")
    assert _labels(mnist["rows"]) == ["M-test", "gamma#0"]
    assert mnist["datasets"] == ["fashion_mnist", "mnist"]
    assert {s["name"] for s in mnist["studies"]} == {"alpha", "beta", "gamma"}
    status, _, body = call(app, "/api/leaderboard?study=nope")
    assert status == 404 and "no study named 'nope'" in json.loads(body)["error"]


def test_failures_by_cause_and_trials_per_slurm_job(app: DashboardApp) -> None:
    board = api(app, "?dataset=fashion_mnist")
    assert board["failed_by_cause"] == {
        "preempted": 1, "oom": 1, "nan": 0, "timeout": 0, "exception": 0,
    }  # fmt: skip
    jobs = {j["job"]: j for j in board["slurm_jobs"]}
    assert (jobs["77"]["trials"], jobs["77"]["tasks"], jobs["77"]["complete"]) == (2, 2, 1)
    assert (jobs["78"]["fail"], jobs["local"]["trials"]) == (1, 3)
    assert board["counts"]["complete"] == 3 and board["n_trials"] == 6
    history = board["history"]
    assert [h["best_val_accuracy"] for h in history][-1] == 0.95
    assert history[-1]["best_test_accuracy"] == 0.935  # the val-best trial's, not the max test


def test_sql_path_matches_frozen_trial_path(storage: optuna.storages.BaseStorage) -> None:
    memory = optuna.storages.InMemoryStorage()
    for name in ("alpha", "beta", "gamma"):
        optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=memory)
    for kwargs in ({"dataset": "fashion_mnist"}, {"study": "beta"}, {"dataset": "mnist"}):
        fast = leaderboard(storage, BASELINES, include_params=True, **kwargs)
        slow = leaderboard(memory, BASELINES, include_params=True, **kwargs)
        drop = ("study_id", "dashboard_url", "finished")
        strip = [{k: v for k, v in r.items() if k not in drop} for r in fast["rows"]]
        assert strip == [{k: v for k, v in r.items() if k not in drop} for r in slow["rows"]]
        assert fast["failed_by_cause"] == slow["failed_by_cause"]
    assert fast["rows"][1]["params"] == {"optimizer.name": "sgd", "optimizer.lr": 0.01}


def test_cached_rows_follow_new_and_running_trials(sqlite_url: str) -> None:
    from hpsearch.ranking import LeaderboardRowCache

    storage = build_known_storage(sqlite_url)
    cache = LeaderboardRowCache()
    first = leaderboard(storage, BASELINES, study="beta", cache=cache)
    study = optuna.load_study(study_name="beta", storage=storage)
    running = study.ask()
    running.report(0.97, 1)
    again = leaderboard(storage, BASELINES, study="beta", cache=cache)
    assert len(again["rows"]) == len(first["rows"]) + 1
    trials = [r for r in again["rows"] if r["kind"] == "trial"]
    # A running trial is listed, with its last epoch, but not ranked (it may still fail).
    assert (trials[0]["trial"], trials[0]["rank"]) == (0, 1)
    last = trials[1]  # running trials come first among the unranked
    assert (last["trial"], last["state"], last["val_accuracy"], last["rank"]) == (
        2,
        "running",
        0.97,
        None,
    )
    study.tell(running, 0.96)
    done = leaderboard(storage, BASELINES, study="beta", cache=cache)
    top = [r for r in done["rows"] if r["kind"] == "trial"][0]
    assert (top["state"], top["val_accuracy"]) == ("complete", 0.96)


# --------------------------------------------------------------------------- pages and links


def test_pages_assets_plot_and_optuna_dashboard(app: DashboardApp) -> None:
    status, headers, body = call(app, "/leaderboard")
    assert status == 200 and b"/api/leaderboard" in call(app, "/hpsearch/static/leaderboard.js")[2]
    assert b'id="leaderboard"' in body and headers["Content-Type"].startswith("text/html")
    assert call(app, "/")[1]["Location"] == "/leaderboard"
    assert call(app, "/hpsearch/static/../pyproject.toml")[0] == 404
    status, headers, svg = call(app, "/leaderboard/plot.svg?dataset=fashion_mnist&x=time")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert svg.startswith(b"<svg") and b"B-test" in svg and b"best_val_accuracy" in svg
    # Every trial row links to optuna-dashboard's page, served by the same app.
    url = api(app)["rows"][0]["dashboard_url"]
    status, _, page = call(app, url.split("?")[0])
    assert status == 200 and b"<html" in page.lower()
    status, _, studies = call(app, "/api/studies")
    assert status == 200 and len(json.loads(studies)["study_summaries"]) == 3


def test_optuna_dashboard_is_read_only_unless_allowed(
    storage: optuna.storages.BaseStorage,
) -> None:
    app = DashboardApp(storage, BASELINES)
    new = json.dumps({"study_name": "x", "directions": ["maximize"]}).encode()
    status, _, body = call(app, "/api/studies", "POST", body=new)
    assert status == 403 and b"--allow-writes" in body
    assert call(app, "/api/studies/1/note", "PUT", body=b"{}")[0] == 403
    assert call(app, "/api/studies/1", "DELETE")[0] == 403
    assert len(storage.get_all_studies()) == 3
    writable = DashboardApp(storage, BASELINES, allow_writes=True)
    same_origin = {"Origin": "http://127.0.0.1"}
    assert call(writable, "/api/studies", "POST", same_origin, body=new)[0] == 201


# ------------------------------------------------------------------------------- security


def test_loopback_dashboard_refuses_other_host_names(
    storage: optuna.storages.BaseStorage,
) -> None:
    """DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1 sends
    `Host: attacker.example:PORT`; without a token, only loopback names are let in (on any port:
    `ssh -L 8080:localhost:8765` makes the browser name port 8080)."""
    app = DashboardApp(storage, BASELINES, allow_writes=True, port=8765)
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765",
                 "127.0.0.2:8765", "localhost:8080", "localhost"):  # fmt: skip
        assert call(app, "/api/leaderboard", headers={"Host": host})[0] == 200, host
    refused = ("attacker.example:8765", "127.0.0.1.nip.io:8765", "localhost.attacker.example",
               "u@127.0.0.1:8765", "127.0.0.1:8765/x", "127.0.0.1:x", "10.0.0.1:8765",
               "")  # fmt: skip
    for host in refused:
        status, headers, body = call(app, "/api/leaderboard", headers={"Host": host})
        assert status == 421 and b"127.0.0.1:8765" in body, host
        assert headers["Content-Type"].startswith("text/plain")
    rebound = {"Host": "attacker.example:8765", "Origin": "http://attacker.example:8765"}
    assert call(app, "/api/studies/1", "DELETE", rebound)[0] == 421
    assert call(app, "/dashboard", headers=rebound)[0] == 421
    assert len(storage.get_all_studies()) == 3
    # The configured host is accepted too (e.g. --host localhost).
    named = DashboardApp(storage, BASELINES, host="localhost", port=8765)
    assert call(named, "/api/leaderboard", headers={"Host": "localhost:8765"})[0] == 200


def test_writes_need_the_dashboards_own_origin(storage: optuna.storages.BaseStorage) -> None:
    app = DashboardApp(storage, BASELINES, allow_writes=True, port=8765)
    host = {"Host": "127.0.0.1:8765"}
    for origin in (None, "http://attacker.example", "http://127.0.0.1:9999", "null"):
        headers = host if origin is None else {**host, "Origin": origin}
        status, _, body = call(app, "/api/studies/1", "DELETE", headers)
        assert status == 403 and b"Origin" in body, origin
    assert len(storage.get_all_studies()) == 3
    same = {**host, "Origin": "http://127.0.0.1:8765"}
    assert call(app, "/api/studies/1", "DELETE", same)[0] == 204
    assert len(storage.get_all_studies()) == 2
    # With a token, a script sends it as a Bearer header and needs no Origin.
    token = "t" * 16
    tokened = DashboardApp(storage, BASELINES, allow_writes=True, token=token)
    bearer = {"Host": "any.example", "Authorization": f"Bearer {token}"}
    assert call(tokened, "/api/studies/2", "DELETE", bearer)[0] == 204
    cookie = {"Host": "any.example", "Cookie": f"hpsearch_dashboard_token={token}"}
    assert call(tokened, "/api/studies/3", "DELETE", cookie)[0] == 403


def test_token_redirect_cannot_inject_headers_or_leave_the_server(
    storage: optuna.storages.BaseStorage,
) -> None:
    token = "s3cret-s3cret-s3cret"
    app = DashboardApp(storage, BASELINES, token=token)
    for path, location in (
        ("/leaderboard\r\nSet-Cookie: evil=1", "/leaderboard%0D%0ASet-Cookie%3A%20evil%3D1"),
        ("//attacker.example/x", "/attacker.example/x"),
        ("/\\attacker.example", "/attacker.example"),
    ):
        status, headers, _ = call(app, f"{path}?token={token}&a=%0d%0ab")
        assert status == 303 and headers["Location"] == location + "?a=%0D%0Ab", path
        assert "evil" not in headers["Set-Cookie"]


def test_access_log_redacts_the_token(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from hpsearch.dashboard import _QuietHandler

    handler = object.__new__(_QuietHandler)
    handler.client_address = ("127.0.0.1", 5555)
    with caplog.at_level(logging.DEBUG, logger="hpsearch.dashboard"):
        request = "GET /leaderboard?x=1&token=s3cret-value HTTP/1.1"
        handler.log_message('"%s" %s %s', request, 303, 0)
    assert "s3cret-value" not in caplog.text and "token=***" in caplog.text


def test_tokens_are_long_enough_or_generated() -> None:
    from hpsearch.dashboard import resolve_token

    assert resolve_token(None) is None and resolve_token("") is None
    auto = resolve_token("auto")
    assert auto is not None and len(auto) >= 32 and auto != resolve_token("auto")
    assert resolve_token("x" * 16) == "x" * 16
    for short in ("a", " " * 20, "fifteen-chars-x"):
        with pytest.raises(DashboardError, match="at least 16 characters.*--token auto"):
            resolve_token(short)


def test_token_required_on_every_request(storage: optuna.storages.BaseStorage) -> None:
    app = DashboardApp(storage, BASELINES, token="s3cret")
    for path in ("/leaderboard", "/api/leaderboard", "/dashboard", "/api/studies"):
        assert call(app, path)[0] == 401
    assert call(app, "/api/leaderboard", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(app, "/api/leaderboard", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert call(app, "/leaderboard?token=wrong")[0] == 401
    status, headers, _ = call(app, "/leaderboard?token=s3cret&study=beta")
    assert status == 303 and headers["Location"] == "/leaderboard?study=beta"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert call(app, "/api/leaderboard", headers={"Cookie": cookie})[0] == 200
    assert call(app, "/dashboard", headers={"Cookie": cookie})[0] == 200


def test_public_bind_needs_a_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "a-token-of-16-chars")
    with pytest.raises(DashboardError, match="--host 0.0.0.0 .* needs an access token"):
        check_bind("0.0.0.0", None)


def test_cli_refuses_public_bind_without_token(sqlite_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_DASHBOARD_TOKEN"}
    done = subprocess.run(
        [HPSEARCH, "dashboard", "--host", "0.0.0.0", "--storage", sqlite_url],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0"), done.stderr


def test_cli_token_on_command_line_warns_and_short_one_is_refused(sqlite_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_DASHBOARD_TOKEN"}
    done = subprocess.run(
        [HPSEARCH, "dashboard", "--host", "0.0.0.0", "--token", "x", "--storage", sqlite_url],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "can be read by other users of this machine in `ps`" in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --token (or $HPSEARCH_DASHBOARD_TOKEN) must be at least 16 characters")
    )


def _start_dashboard(url: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [HPSEARCH, "dashboard", "--port", "0", "--storage", url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+/leaderboard\S*)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"no URL in {line!r}: {proc.stderr.read() if proc.stderr else ''}")
    return proc, match.group(1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_cli_binds_loopback_by_default_and_masks_password(storage: Any, sqlite_url: str) -> None:
    import urllib.request

    proc, link = _start_dashboard(sqlite_url)
    try:
        assert link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(link.replace("/leaderboard", "/api/leaderboard")) as resp:
            board = json.load(resp)
        assert board["storage"] == sqlite_url and board["read_only"] is True
    finally:
        _stop(proc)
    from hpsearch.storage import mask_url

    assert "hunter2" not in mask_url("postgresql://me:hunter2@db/x")


def test_study_notes_for_plain_optuna_dashboard(storage: optuna.storages.BaseStorage) -> None:
    import optuna_dashboard

    assert write_study_notes(storage, BASELINES) == 3
    note = optuna_dashboard.get_note(optuna.load_study(study_name="alpha", storage=storage))
    assert "Best trial #0" in note and "| B-test | test | 93.00% | **beats** (+0.50 pt)" in note
    assert "Beats 2 of 2 baselines." in note
    assert write_study_notes(storage, BASELINES) == 0  # unchanged: not rewritten


# ------------------------------------------------------------------- real server + browser


@pytest.fixture(scope="session")
def smoke_db(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_available: None) -> str:
    """A study database made by real trials: `hpsearch run studies/smoke.toml --workers 2`."""
    folder = tmp_path_factory.mktemp("smoke")
    url = f"sqlite:///{folder / 'smoke.db'}"
    env = {**os.environ, "HPSEARCH_RUNS_DIR": str(folder / "runs")}
    env.pop("HPSEARCH_STORAGE", None)
    done = subprocess.run(
        [HPSEARCH, "run", str(ROOT / "studies" / "smoke.toml"), "--workers", "2",
         "--storage", url],
        capture_output=True, text=True, timeout=600, env=env, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return url


@pytest.fixture
def dashboard_server(smoke_db: str) -> Iterator[str]:
    proc, link = _start_dashboard(smoke_db)
    yield link
    _stop(proc)


def launch(chromium: str) -> Any:
    """Headless Chromium through Playwright: (playwright, browser)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    p = sync_api.sync_playwright().start()
    browser = p.chromium.launch(
        executable_path=chromium,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"],
    )  # fmt: skip
    return p, browser


@pytest.mark.slow
@pytest.mark.browser
def test_leaderboard_in_chromium(dashboard_server: str, chromium: str) -> None:
    import urllib.request

    with urllib.request.urlopen(dashboard_server.replace("/leaderboard", "/api/leaderboard")) as r:
        board = json.load(r)
    expected = [r for r in board["rows"] if r["kind"] == "trial"]
    assert len(expected) == 6 and board["dataset"] == "fashion_mnist"
    p, browser = launch(chromium)
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1150})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(dashboard_server)
        page.wait_for_selector("#leaderboard tbody tr.trial")
        page.wait_for_function(
            "document.getElementById('plot-trial').complete && "
            "document.getElementById('plot-trial').naturalWidth > 0"
        )
        # Baselines with their sources, trials in validation-accuracy order.
        baselines = page.locator("#leaderboard tbody tr.baseline")
        assert baselines.count() == len(board["baselines"]) > 0
        assert "Gavrikov & Keuper" in page.locator("#leaderboard tbody").inner_text()
        trial_ids = page.eval_on_selector_all(
            "#leaderboard tbody tr.trial", "rows => rows.map(r => r.dataset.trial)"
        )
        assert [int(t) for t in trial_ids] == [r["trial"] for r in expected]
        shown = page.eval_on_selector_all(
            "#leaderboard tbody tr.trial td:nth-child(4)", "tds => tds.map(td => td.textContent)"
        )
        assert [float(v.rstrip("%")) for v in shown] == sorted(
            (float(v.rstrip("%")) for v in shown), reverse=True
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard_leaderboard.png"), full_page=True)
        # A filter: only pruned trials (baselines stay).
        page.select_option("#f-state", "pruned")
        states = page.eval_on_selector_all(
            "#leaderboard tbody tr.trial", "rows => rows.map(r => r.className)"
        )
        n_pruned = sum(r["state"] == "pruned" for r in expected)
        assert len(states) == n_pruned and all("pruned" in s for s in states)
        assert "state=pruned" in page.url
        page.select_option("#f-state", "")
        # A sort: by test accuracy, descending.
        page.click("th[data-key=test_accuracy]")
        assert "sort=test_accuracy" in page.url
        # The best trial links to its optuna-dashboard page, which loads.
        page.click("th[data-key=rank]")  # back to ascending rank
        assert "sort=" not in page.url
        link = page.locator("#leaderboard tbody tr.trial a.trial-link").first
        best = expected[0]
        assert link.get_attribute("href") == best["dashboard_url"]
        link.click()
        page.wait_for_url(re.compile(r".*/dashboard/studies/\d+/trials\?numbers=\d+"))
        page.wait_for_selector(f"text=Trial {best['trial']}", timeout=20000)
        page.screenshot(path=str(ARTIFACTS / "dashboard_optuna_trial.png"))
        assert not errors, errors
    finally:
        browser.close()
        p.stop()
