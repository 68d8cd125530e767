"""``hpsearch report``: self-contained HTML (table, SVG plots, best trial, study file), Markdown
and CSV, from the CLI and opened in headless Chromium."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from test_dashboard import ARTIFACTS, BASELINES, build_known_storage, launch
from typer.testing import CliRunner

from hpsearch.cli import app
from hpsearch.errors import SpecError
from hpsearch.ranking import leaderboard
from hpsearch.report import build_report, svg_history


@pytest.fixture
def url(sqlite_url: str) -> str:
    build_known_storage(sqlite_url)
    return sqlite_url


def test_html_report_is_self_contained(url: str) -> None:
    text = build_report("alpha", url, "html")
    assert text.startswith("<!doctype html>") and 'id="leaderboard"' in text
    assert text.count("<svg") == 2 and "Best so far over time" in text
    # No network: no scripts, no external stylesheets/images/fonts.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "url(" not in text
    # Table order (validation accuracy), baselines with sources, best trial and study file.
    body = text[text.index('id="leaderboard"') :]
    assert body.index("conv 32 | adam") < body.index("conv 8 | sgd")
    assert "Fine-Tuning DARTS — Papers with Code" in body
    assert "param optimizer.lr" in text and "hpsearch:test_accuracy" in text
    assert "name = &quot;alpha&quot;" in text


def test_markdown_and_csv_reports(url: str) -> None:
    md = build_report("beta", url, "md")
    assert md.startswith("# hpsearch report: beta") and "| 1 | beta | 0 | 92.00% |" in md
    assert '```toml\nname = "beta"' in md and "| preempted | 1 |" in md
    rows = list(csv.DictReader(io.StringIO(build_report("beta", url, "csv"))))
    trials = [r for r in rows if r["kind"] == "trial"]
    assert [r["trial"] for r in trials] == ["0", "1"] and trials[0]["rank"] == "1"
    assert any(r["kind"] == "baseline" and r["source"] for r in rows)
    with pytest.raises(SpecError, match="--format must be one of html, md, csv"):
        build_report("beta", url, "pdf")


def test_cli_report_writes_file_and_note(url: str, tmp_path: Path) -> None:
    import optuna
    import optuna_dashboard

    target = tmp_path / "r.md"
    result = CliRunner().invoke(app, ["report", "alpha", "-o", str(target), "--storage", url])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("# hpsearch report: alpha")
    note = optuna_dashboard.get_note(optuna.load_study(study_name="alpha", storage=url))
    assert "comparison with baselines" in note


def test_svg_plot_draws_baselines_and_handles_no_trials(url: str) -> None:
    from hpsearch.storage import get_storage

    board = leaderboard(get_storage(url, heartbeat=False), BASELINES, dataset="fashion_mnist")
    svg = svg_history(board["history"], board["baselines"], x="trial")
    assert svg.count('class="baseline"') == 2 and 'class="best_val_accuracy"' in svg
    assert "no complete trial yet" in svg_history([], board["baselines"])


@pytest.mark.browser
def test_report_opens_in_chromium(url: str, tmp_path: Path, chromium: str) -> None:
    target = tmp_path / "report.html"
    target.write_text(build_report("alpha", url, "html"), encoding="utf-8")
    p, browser = launch(chromium)
    try:
        context = browser.new_context(offline=True)  # proves it needs no network
        page = context.new_page()
        page.goto(target.as_uri())
        rows = page.locator("#leaderboard tbody tr.trial, #leaderboard tbody tr.baseline")
        assert rows.count() == 4 + 11  # alpha's trials + fashion_mnist's shipped baselines
        assert page.locator("#leaderboard tbody tr.unranked-head").count() == 1  # failed 3
        assert page.locator("#leaderboard tbody tr.baseline").count() == 11
        plots = page.locator("svg.plot")
        assert plots.count() == 2 and plots.first.bounding_box()["width"] > 300
        assert page.locator("svg.plot path.best_val_accuracy").count() == 2
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    finally:
        browser.close()
        p.stop()
