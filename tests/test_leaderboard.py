"""An honest leaderboard: only finished trials are ranked, a preempted trial and its retry are one
trial, malformed attributes are missing data, and every output (status, JSON API, CSV, Markdown,
HTML, the dashboard page) shows the same ranking. User text is escaped in Markdown."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from test_dashboard import BASELINES, api, launch
from typer.testing import CliRunner

from hpsearch.cli import app as cli_app
from hpsearch.dashboard import DashboardApp, note_markdown
from hpsearch.markdown import md_code, md_fence, md_text
from hpsearch.ranking import coerce, leaderboard, study_summary
from hpsearch.report import build_report, render_markdown
from hpsearch.space import sample_config
from hpsearch.spec import load_spec
from hpsearch.storage import get_storage
from hpsearch.study import launch_study, load_study
from hpsearch.worker import _requeue_interrupted
from tests.conftest import STUDIES

# (rank, trial, state) of every listed trial, in order: what every output must show.
EXPECTED = [
    (1, 4, "complete"),  # the retry of preempted trial 3, completed: ranked, one trial
    (2, 0, "complete"),
    (3, 5, "complete"),  # malformed attributes: still ranked, by its value
    (4, 1, "pruned"),  # ranked by its last epoch
    (None, 6, "running"),  # reported 0.98 at epoch 1: not ranked, it may still fail
    (None, 8, "waiting"),  # the queued retry of preempted trial 7 (0.96 at epoch 1)
    (None, 2, "fail"),  # reported 0.99 before it failed: never ranked
]
RETRIES = {4: [3], 8: [7]}


def build_honest_study(url: str) -> optuna.Study:
    """Study `smoke` with complete, pruned, failed, running, queued and preempted+retried
    trials, made through Optuna's ask/tell and hpsearch's own re-queueing of preempted trials."""
    spec = load_spec(STUDIES / "smoke.toml")
    study = launch_study(spec, (STUDIES / "smoke.toml").read_text(), url).study

    def start(*steps: float) -> optuna.Trial:
        trial = study.ask()  # a queued trial (warm start, retry) comes first
        sample_config(trial, spec.search)
        for epoch, value in enumerate(steps, start=1):
            trial.report(value, epoch)
        return trial

    def attrs(trial: optuna.Trial, **values: Any) -> None:
        for key, value in values.items():
            trial.set_user_attr(f"hpsearch:{key}", value)

    t0 = start(0.85, 0.90)  # 0: the warm start
    attrs(t0, test_accuracy=0.89, epochs=2, wall_time_s=60.0, n_params=1000, config="conv 16")
    study.tell(t0, 0.90)
    study.tell(start(0.80, 0.85), state=TrialState.PRUNED)  # 1
    t2 = start(0.99)  # 2
    attrs(t2, fail_reason="exception")
    study.tell(t2, state=TrialState.FAIL)
    t3 = start(0.93)  # 3: preempted; hpsearch re-queues it as 4
    _requeue_interrupted(study, t3._trial_id)
    t4 = start()  # 4: the retry resumes (epoch 1 inherited) and completes
    assert t4.number == 4
    t4.report(0.95, 2)
    attrs(t4, test_accuracy=0.94, epochs=2)
    study.tell(t4, 0.95)
    t5 = start(0.88)  # 5: malformed attributes
    attrs(t5, test_accuracy=float("inf"), wall_time_s="60s", n_params="many", epochs="two")
    study.tell(t5, 0.88)
    start(0.98)  # 6: still running
    t7 = start(0.96)  # 7: preempted; its retry 8 stays queued
    _requeue_interrupted(study, t7._trial_id)
    return study


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The study of :func:`build_honest_study`, shared by the tests that only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('honest') / 'study.db'}"
    build_honest_study(url)
    return url


def _trials(rows: list[dict[str, Any]]) -> list[tuple[int | None, int, str]]:
    return [(r["rank"], r["trial"], r["state"]) for r in rows if r["kind"] == "trial"]


def test_all_outputs_agree_on_an_honest_ranking(honest: str, tmp_path: Path) -> None:
    storage = get_storage(honest, heartbeat=False)
    # The dashboard's JSON (SQL path) and the same study in memory (FrozenTrial path).
    board = api(DashboardApp(storage, BASELINES), "?study=smoke")
    assert _trials(board["rows"]) == EXPECTED
    assert {r["trial"]: r["attempts"] for r in board["rows"] if r.get("attempts")} == RETRIES
    assert board["counts"] == {
        "running": 1, "complete": 3, "pruned": 1, "fail": 1, "waiting": 1,
    }  # fmt: skip
    assert (board["n_trials"], board["resumed"]) == (7, 2)
    causes = board["failed_by_cause"]
    assert (causes["exception"], causes["preempted"]) == (1, 0)  # 3 and 7 were resumed
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name="smoke", from_storage=storage, to_storage=memory)
    assert _trials(leaderboard(memory, BASELINES, study="smoke")["rows"]) == EXPECTED
    # `status --json` and `status`.
    study, spec = load_study("smoke", honest, heartbeat=False)
    summary = study_summary(study, BASELINES, spec.data.dataset)
    assert _trials(summary["leaderboard"]) == EXPECTED
    assert (summary["n_trials"], summary["resumed"], summary["best"]["trial"]) == (7, 2, 4)
    result = CliRunner().invoke(cli_app, ["status", "smoke", "--storage", honest])
    assert result.exit_code == 0, result.output
    ranked = re.findall(r"^│\s+(\d+) │\s+(\d+)(?: \((pruned))?", result.output, re.MULTILINE)
    assert [(int(r), int(t), s or "complete") for r, t, s in ranked] == EXPECTED[:4]
    assert "4 (retry of #3)" in result.output
    unranked = result.output[result.output.index("Not ranked") :]
    states = re.findall(r"(\d+) (running|queued|fail)", unranked)
    assert states == [("6", "running"), ("8", "queued"), ("2", "fail")]
    assert "8 queued (retry of #7)" in unranked and "2 fail (exception)" in unranked
    assert "7 trials" in result.output and "2 interrupted attempt(s) resumed" in result.output
    # CSV, with every trial's parameters.
    rows = list(csv.DictReader(io.StringIO(build_report("smoke", honest, "csv"))))
    trials = [r for r in rows if r["kind"] == "trial"]
    got = [(int(r["rank"]) if r["rank"] else None, int(r["trial"]), r["state"]) for r in trials]
    assert got == EXPECTED
    assert [r["attempts"] for r in trials] == ["3", "", "", "", "", "7", ""]
    for r in trials:
        params = json.loads(r["params"])
        assert params["optimizer.name"] in ("adam", "sgd") and "optimizer.lr" in params
    # Markdown.
    md = build_report("smoke", honest, "md")
    cells = [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in md.splitlines()
        if line.startswith("| ") and " | smoke | " in line
    ]
    assert [(int(c[0]) if c[0] else None, int(c[2]), c[11].split()[0]) for c in cells] == EXPECTED
    assert cells[0][11] == r"complete \(retry of \#3\)"
    # HTML: the same rows, the unranked ones under their own heading.
    html = build_report("smoke", honest, "html")
    found = []
    for cls, body in re.findall(r'<tr class="trial (\w+)[^"]*">(.*?)</tr>', html):
        tds = re.findall(r"<td[^>]*>(.*?)</td>", body)
        found.append((int(tds[0]) if tds[0] else None, int(tds[2]), cls))
    assert found == EXPECTED
    assert html.index("Not ranked: running, queued and failed") > html.index(">complete (retry")


def test_malformed_attributes_are_missing_data_logged_once(
    honest: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpsearch.ranking

    monkeypatch.setattr(hpsearch.ranking, "_LOGGED", set())  # other tests logged study smoke
    storage = get_storage(honest, heartbeat=False)
    caplog.set_level(logging.WARNING, logger="hpsearch.ranking")
    app = DashboardApp(storage, BASELINES)
    bad = next(r for r in api(app, "?study=smoke")["rows"] if r.get("trial") == 5)
    assert (bad["val_accuracy"], bad["test_accuracy"], bad["wall_minutes"]) == (0.88, None, None)
    assert (bad["n_params"], bad["epochs"], bad["rank"]) == (None, 1, 3)
    assert "'60s'" in caplog.text and "n_params is malformed" in caplog.text
    first = caplog.text
    api(app, "?study=smoke&fresh=1")
    leaderboard(storage, BASELINES, study="smoke")
    assert caplog.text == first  # logged once
    status, _ = _get(app, "/leaderboard/plot.svg?study=smoke")
    assert status == 200  # status, reports: test_all_outputs_agree_on_an_honest_ranking


def _get(app: Any, path: str) -> tuple[int, bytes]:
    from test_dashboard import call

    status, _, body = call(app, path)
    return status, body


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (0.5, "float", 0.5), (1, "float", 1.0), (float("inf"), "float", None),
        (float("nan"), "float", None), ("abc", "float", None), ("0.5", "float", None),
        (True, "float", None), ([1], "float", None), (-1.0, "seconds", None),
        (60, "seconds", 60.0), (3, "count", 3), (3.0, "count", 3), (3.5, "count", None),
        ("many", "count", None), (-2, "count", None), (False, "count", None),
        ("conv 8", "text", "conv 8"), (12, "text", "12"), ({"a": 1}, "text", None),
        (None, "float", None),
    ],
)  # fmt: skip
def test_coerce(value: Any, kind: str, expected: Any) -> None:
    got = coerce(value, kind)
    assert got == expected and type(got) is type(expected)


def test_non_finite_baseline_is_refused(tmp_path: Path) -> None:
    from hpsearch.baselines import load_baselines
    from hpsearch.errors import SpecError

    for value in ("nan", "inf", "-0.5", "250"):
        path = tmp_path / "b.toml"
        path.write_text(
            f'[[baseline]]\ndataset = "mnist"\nmodel = "x"\naccuracy = {value}\n',
            encoding="utf-8",
        )
        with pytest.raises(SpecError, match=r"b\.toml: `baseline\[0\]` .*accuracy"):
            load_baselines(path)


def test_report_default_name_stays_in_the_current_folder(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optuna.create_study(study_name="../../x", storage=get_storage(sqlite_url, heartbeat=False))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    result = CliRunner().invoke(
        cli_app, ["report", "../../x", "--format", "md", "--storage", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in work.iterdir()] == ["_.._x_report.md"]
    assert not (tmp_path / "x_report.md").exists()


# ------------------------------------------------------------------------------- Markdown


HOSTILE = "a`](http://evil.example)<img src=x onerror=alert(1)>|*b*\n# h"


def test_markdown_helpers_keep_user_text_literal() -> None:
    text = md_text(HOSTILE)
    assert "<" not in text and "](" not in text and "\n" not in text
    assert text.count(r"\|") == 1 and r"\`" in text and r"\*b\*" in text
    assert md_code("x ` y `` z") == "```x ` y `` z```"
    assert md_code("`a") == "`` `a ``"
    assert md_code("a|b", in_table=True) == r"`a\|b`"
    assert md_fence("```\nx", "toml").startswith("````toml\n")


def test_notes_and_markdown_reports_escape_user_text(honest: str) -> None:
    storage = get_storage(honest, heartbeat=False)
    board = leaderboard(storage, BASELINES, study="smoke")
    board["dataset"] = HOSTILE
    for row in board["rows"]:
        if row["kind"] == "trial":
            row["config"] = HOSTILE
            row["study"] = HOSTILE
        else:
            row["model"] = row["source"] = HOSTILE
    board["baselines"] = [{**b, "model": HOSTILE, "source": HOSTILE} for b in board["baselines"]]
    board["storage"] = "sqlite:///`x`.db"
    best = optuna.load_study(study_name="smoke", storage=storage).best_trial
    spec = "x = '```'\n```\n<b>"
    note = note_markdown(board)
    report = render_markdown(board, spec, best)
    # The configuration in the note is one code span (literal text) that a backtick cannot end.
    assert f"{md_code(HOSTILE)}\n" in note
    for text in (note.replace(md_code(HOSTILE), ""), report.replace(md_fence(spec, "toml"), "")):
        assert "<" not in text.replace("<br>", "") and "](http" not in text
    assert "````toml\nx = '```'\n```\n<b>\n````" in report  # the study file verbatim, fenced


# --------------------------------------------------------------------------- the browser


@pytest.mark.browser
def test_dashboard_page_agrees(honest: str, chromium: str) -> None:
    """leaderboard.js shows the same ranks, trials and states as the API."""
    from hpsearch.dashboard import make_dashboard_server

    server, link = make_dashboard_server(honest, port=0, write_notes=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    p, browser = launch(chromium)
    try:
        page = browser.new_page()
        page.goto(link + "?study=smoke")
        page.wait_for_selector("#leaderboard tbody tr.trial")
        shown = page.eval_on_selector_all(
            "#leaderboard tbody tr.trial",
            "rows => rows.map(r => [r.cells[0].textContent, r.dataset.trial,"
            " r.querySelector('.badge').textContent])",
        )
        assert [
            (int(rank) if rank else None, int(trial), label.split()[0])
            for rank, trial, label in shown
        ] == EXPECTED
        assert shown[0][2] == "complete (retry of #3)" and shown[5][2] == "waiting (retry of #7)"
        heads = page.locator("#leaderboard tbody tr.unranked-head")
        assert heads.count() == 1 and "Not ranked" in heads.inner_text()
        # Sorting by validation accuracy keeps unranked trials below the ranking.
        page.click("th[data-key=val_accuracy]")
        order = page.eval_on_selector_all(
            "#leaderboard tbody tr.trial", "rows => rows.map(r => r.dataset.trial)"
        )
        assert [int(t) for t in order[:4]] == [4, 0, 5, 1]
        assert "2 interrupted attempt(s) resumed" in page.locator("#summary").inner_text()
    finally:
        browser.close()
        p.stop()
        server.shutdown()
        server.server_close()


# ------------------------------------------------------- an objective that is not accuracy

LOSSES = {0: 0.45, 1: 0.40, 2: 0.52}  # trial -> val_loss; trial 1 is the best (lowest)


@pytest.fixture
def loss_study(tmp_path: Path) -> str:
    """Study `vl` minimizing val_loss (launched as a user would), three complete trials."""
    import hpsearch

    url = f"sqlite:///{tmp_path / 'vl.db'}"
    hpsearch.launch(
        {
            "name": "vl",
            "data": {"dataset": "fashion_mnist", "val_fraction": 0.1},
            "objective": {"metric": "val_loss", "direction": "minimize"},
            "budget": {"n_trials": 3, "max_epochs": 1},
            "pruner": {"kind": "none"},
            "search": {"activation": "relu", "optimizer": {"name": "adam", "lr": 0.003}},
        },
        storage=url,
    )
    study = optuna.load_study(study_name="vl", storage=url)
    for number, loss in LOSSES.items():
        attrs = {"hpsearch:test_accuracy": 0.8 + number / 100, "hpsearch:config": f"c{number}"}
        study.add_trial(
            optuna.trial.create_trial(value=loss, intermediate_values={1: loss}, user_attrs=attrs)
        )
    return url


def test_every_output_follows_a_minimized_loss(loss_study: str) -> None:
    """A val_loss study: ranked lowest first, labelled val_loss (not "val acc 40.00%") in
    status, the API, Markdown, CSV and HTML, and `best` re-trains the lowest-loss trials."""
    from hpsearch.export import top_trials
    from hpsearch.report import render_csv, render_html

    board = leaderboard(get_storage(loss_study, heartbeat=False), BASELINES, study="vl")
    assert board["metric"] == "val_loss" and board["direction"] == "minimize"
    ranked = [(r["rank"], r["trial"]) for r in board["rows"] if r["kind"] == "trial"]
    assert ranked == [(1, 1), (2, 0), (3, 2)]
    assert not [r for r in board["rows"] if r["kind"] == "baseline"]  # accuracy baselines

    md = build_report("vl", loss_study, "md")
    assert "Ranked by val\\_loss \\(lower is better\\)" in md
    assert "| rank | study | trial | val loss | test acc |" in md
    assert "| 1 | vl | 1 | 0.4000 | 81.00% |" in md and "40.00%" not in md
    best = md.split("## Best trial: full configuration")[1]
    assert "| trial | 1 |" in best and "| val\\_loss | 0.4000 |" in best

    header = render_csv(board["rows"], board["metric"]).splitlines()[0].split(",")
    assert "val_loss" in header and "val_accuracy" not in header

    board["storage"] = "sqlite"
    page = render_html(board, "", None)
    assert "best val_loss (0.4000)" in page and "Ranked by val_loss (lower is better)" in page
    assert "best validation accuracy" not in page and "test accuracy of that trial" not in page

    result = CliRunner().invoke(cli_app, ["status", "vl", "--storage", loss_study])
    assert result.exit_code == 0, result.output
    assert "val_loss (lower is better)" in result.output and "0.4000" in result.output

    study, _ = load_study("vl", loss_study, heartbeat=False)
    assert [t.number for t in top_trials(study, 2)] == [1, 0]


@pytest.mark.browser
def test_dashboard_page_labels_a_minimized_loss(loss_study: str, chromium: str) -> None:
    from hpsearch.dashboard import make_dashboard_server

    server, link = make_dashboard_server(loss_study, port=0, write_notes=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p, browser = launch(chromium)
    try:
        page = browser.new_page()
        page.goto(link)
        page.wait_for_selector("#leaderboard tbody tr.trial")
        assert page.locator("#metric-head").inner_text() == "val loss"
        assert page.locator("#ranked-by").inner_text() == "val_loss (lower is better)"
        first = page.locator("#leaderboard tbody tr.trial").first
        assert first.get_attribute("data-trial") == "1"
        assert first.locator("td").nth(3).inner_text() == "0.4000"
    finally:
        browser.close()
        p.stop()
        server.shutdown()
        server.server_close()
