"""`hpsearch best`: seeds × top re-training, the raw-input export, and a safe export folder."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpsearch.errors import ExportError
from hpsearch.export import CLASS_NAMES, Candidate, check_export_dir, class_names, export_best
from hpsearch.ranking import leaderboard, study_summary
from hpsearch.report import render_csv, render_html, render_markdown
from hpsearch.spec import StudySpec, load_spec
from hpsearch.storage import get_storage
from tests.conftest import run_cli as hpsearch
from tests.conftest import slow_trial_spec

# --------------------------------------------------------------------------------------------
# The export folder: links are refused, an existing export is not overwritten without --force
# --------------------------------------------------------------------------------------------


def test_export_dir_that_is_a_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "model.keras").write_text("do not touch")
    link = tmp_path / "best"
    link.symlink_to(target)
    for force in (False, True):
        with pytest.raises(ExportError, match="is a symbolic link") as err:
            check_export_dir(link, force=force)
        assert str(link) in str(err.value) and "\n" not in str(err.value)
    assert (target / "model.keras").read_text() == "do not touch"


def test_links_inside_the_export_dir_are_refused_even_with_force(tmp_path: Path) -> None:
    out = tmp_path / "best"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "hpsearch.json").symlink_to(victim)
    with pytest.raises(ExportError, match=r"hpsearch\.json is a symbolic link"):
        check_export_dir(out, force=True)
    assert victim.read_text() == "keep"


def test_existing_export_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "best"
    check_export_dir(out)  # not there yet: fine
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    check_export_dir(out)  # a folder with other files: fine
    (out / "model.keras").write_text("old model")
    with pytest.raises(ExportError, match="already holds an export .*model.keras.*--force"):
        check_export_dir(out)
    check_export_dir(out, force=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is not a folder"):
        check_export_dir(tmp_path / "file")


def _tiny_study(tmp_path: Path) -> tuple[optuna.Study, StudySpec]:
    """A study (in memory, no training) with two complete trials of the slow test's space."""
    path = tmp_path / "tiny.toml"
    path.write_text(slow_trial_spec("tiny", train_subset=300, max_epochs=1))
    study = optuna.create_study(study_name="tiny", direction="maximize")
    for value in (0.8, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"hpsearch:epochs": 1}))
    return study, load_spec(path)


def test_export_refuses_a_link_before_training(tmp_path: Path) -> None:
    study, spec = _tiny_study(tmp_path)
    (tmp_path / "target").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "target")
    with pytest.raises(ExportError, match="symbolic link"):
        export_best(study, spec, tmp_path / "out", seeds=3, top=2)
    assert list((tmp_path / "target").iterdir()) == []
    assert not any(k.startswith("hpsearch:retrain:") for k in study.user_attrs)
    with pytest.raises(ExportError, match="nothing to do"):
        export_best(study, spec, None)


# --------------------------------------------------------------------------------------------
# Re-training figures: stored on the study, shown in the leaderboard, status and reports
# --------------------------------------------------------------------------------------------


def test_candidate_statistics() -> None:
    c = Candidate(3, 0.9, 0.88, "conv", 5, [0, 1, 2], [0.90, 0.86, 0.88], [0.87, 0.85, 0.86])
    assert c.val_mean == pytest.approx(0.88) and c.test_mean == pytest.approx(0.86)
    assert c.test_std == pytest.approx(statistics.stdev([0.87, 0.85, 0.86]))  # ddof=1
    assert Candidate(1, 0.9, None, "conv", 5, [0], [0.9], [0.8]).test_std is None
    record = c.record()
    assert record["seeds"] == [0, 1, 2] and record["trained_on"] == "train"


def _study_with_retrain(url: str) -> optuna.Study:
    study = optuna.create_study(storage=get_storage(url), study_name="rt", direction="maximize")
    for value, test in ((0.90, 0.89), (0.88, 0.87), (0.80, 0.79)):
        study.add_trial(
            optuna.trial.create_trial(value=value, user_attrs={"hpsearch:test_accuracy": test})
        )
    good = Candidate(1, 0.88, 0.87, "conv b", 1, [0, 1], [0.885, 0.875], [0.871, 0.869])
    study.set_user_attr("hpsearch:retrain:1", good.record())
    study.set_user_attr("hpsearch:retrain:0", {"val_mean": "high", "test_mean": math.inf})
    return study


def test_leaderboard_rows_carry_retrain_figures(db_url: str) -> None:
    study = _study_with_retrain(db_url)
    board = leaderboard(get_storage(db_url, heartbeat=False), [], study="rt")
    rows = {r["trial"]: r for r in board["rows"] if r["kind"] == "trial"}
    assert rows[1]["retrain_val_mean"] == pytest.approx(0.88)
    assert rows[1]["retrain_test_std"] == pytest.approx(statistics.stdev([0.871, 0.869]))
    assert rows[1]["retrain_seeds"] == 2
    # A malformed record is missing data, not an error; trials never re-trained have None.
    assert rows[0]["retrain_val_mean"] is None and rows[0]["retrain_test_mean"] is None
    assert rows[2]["retrain_seeds"] is None
    assert [rows[i]["rank"] for i in (0, 1, 2)] == [1, 2, 3]  # ranking is unchanged
    summary = study_summary(study, [], "unknown")
    by_trial = {r["trial"]: r for r in summary["leaderboard"] if r["kind"] == "trial"}
    assert by_trial[1]["retrain_test_mean"] == pytest.approx(0.87)


def test_inmemory_leaderboard_and_reports_show_retrain(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="rt", direction="maximize")
    attrs = {"hpsearch:config": "conv | a"}
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs=attrs))
    cand = Candidate(0, 0.9, None, "conv | a", 1, [0, 1, 2], [0.9, 0.91, 0.89], [0.8, 0.82, 0.81])
    study.set_user_attr("hpsearch:retrain:0", cand.record())
    board = leaderboard(storage, [], study="rt")
    board["storage"] = "memory"
    row = next(r for r in board["rows"] if r["kind"] == "trial")
    assert row["retrain_test_mean"] == pytest.approx(0.81) and row["retrain_seeds"] == 3
    md = render_markdown(board, "", None)
    assert "## Re-trained with several seeds" in md
    assert "| 0 | rt | 90.00% |  | 90.00% ± 1.00% | 81.00% ± 1.00% | 3 | conv \\| a |" in md
    page = render_html(board, "", None)
    assert '<table id="retrained"' in page and "81.00% ± 1.00%" in page
    csv = render_csv(board["rows"])
    assert "retrain_test_mean" in csv.splitlines()[0] and ",0.81," in csv
    assert "Re-trained" not in render_markdown(
        leaderboard(storage, [], study="rt") | {"storage": "m", "rows": []}, "", None
    )


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_page_shows_retrain_figures_in_chromium(tmp_path: Path, chromium: str) -> None:
    """The dashboard's leaderboard page shows the re-trained table, like status and reports."""
    from test_dashboard import _start_dashboard, _stop, launch

    url = f"sqlite:///{tmp_path / 'rt.db'}"
    _study_with_retrain(url)
    proc, link = _start_dashboard(url)
    p, browser = launch(chromium)
    try:
        page = browser.new_page()
        page.goto(link)
        page.wait_for_selector("#retrained tbody tr")
        assert page.locator("#retrained-section").is_visible()
        cells = page.eval_on_selector_all(
            "#retrained tbody tr td", "tds => tds.map(td => td.textContent)"
        )
        figures = ["88.00%", "87.00%", "88.00% ± 0.71%", "87.00% ± 0.14%"]
        assert cells == ["1", "rt", *figures, "2", ""]
    finally:
        browser.close()
        p.stop()
        _stop(proc)


def test_class_names() -> None:
    assert class_names("fashion_mnist") == CLASS_NAMES["fashion_mnist"]
    assert class_names("fashion_mnist")[9] == "Ankle boot" and len(CLASS_NAMES["cifar10"]) == 10
    assert class_names("mnist") == [str(d) for d in range(10)]


# --------------------------------------------------------------------------------------------
# End to end on real Fashion-MNIST: search, best --seeds 2 --top 2 --export, load elsewhere
# --------------------------------------------------------------------------------------------

FRESH_PROCESS = """
import gzip, json, sys
import numpy as np
import keras

def idx(path):
    data = gzip.open(path).read()
    n = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * n).reshape(shape)

folder, data = sys.argv[1], sys.argv[2]
x = idx(f"{data}/t10k-images-idx3-ubyte.gz")
y = idx(f"{data}/t10k-labels-idx1-ubyte.gz")
model = keras.saving.load_model(f"{folder}/model.keras")
probs = model.predict(x, batch_size=512, verbose=0)
print(json.dumps({
    "accuracy": float(np.mean(np.argmax(probs, axis=-1) == y)),
    "dtype": str(x.dtype), "shape": list(x.shape),
    "hpsearch_imported": any(m.startswith("hpsearch") for m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict, str]:  # type: ignore[type-arg]
    folder = tmp_path_factory.mktemp("export")
    url = f"sqlite:///{folder / 'hpsearch.db'}"
    text = slow_trial_spec("tiny_export", train_subset=300, max_epochs=1)
    text = text.replace("n_trials = 1", "n_trials = 2").replace(
        "lr = 0.002", "lr = {choices = [0.001, 0.003]}"
    )
    text = text.replace("[pruner]", '[sampler]\nkind = "random"\nseed = 1\n\n[pruner]')
    (folder / "tiny.toml").write_text(text)
    env = {"HPSEARCH_RUNS_DIR": str(folder / "runs")}
    result = hpsearch("run", str(folder / "tiny.toml"), "--storage", url, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = folder / "best"
    result = hpsearch(
        "best", "tiny_export", "--storage", url, "--export", str(out), "--seeds", "2",
        "--top", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return url, out, json.loads((out / "hpsearch.json").read_text()), result.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_seeds_top_selection_is_recorded(exported) -> None:  # type: ignore[no-untyped-def]
    url, _, record, stdout = exported
    sel = record["selection"]
    assert sel["seeds"] == [0, 1] and sel["top"] == 2 and len(sel["candidates"]) == 2
    means = [c["val_mean"] for c in sel["candidates"]]
    assert means == sorted(means, reverse=True)
    assert sel["picked_trial"] == record["trial"] == sel["candidates"][0]["trial"]
    for c in sel["candidates"]:
        assert c["seeds"] == [0, 1] and len(c["val"]) == len(c["test"]) == 2
        assert c["val_mean"] == pytest.approx(statistics.mean(c["val"]))
        assert c["test_std"] == pytest.approx(statistics.stdev(c["test"]))
        assert 0.1 < c["test_mean"] <= 1.0
    assert "test mean ± std" in stdout and "Re-trained on the training split" in stdout
    # Stored in the study: status (table and JSON) and the report show it beside the search.
    summary = json.loads(hpsearch("status", "tiny_export", "--json", "--storage", url).stdout)
    rows = {r["trial"]: r for r in summary["leaderboard"] if r["kind"] == "trial"}
    for c in sel["candidates"]:
        assert rows[c["trial"]]["retrain_test_mean"] == pytest.approx(c["test_mean"])
        assert rows[c["trial"]]["retrain_seeds"] == 2
    table = hpsearch("status", "tiny_export", "--storage", url).stdout
    assert "Re-trained (hpsearch best --seeds)" in table
    md = hpsearch("report", "tiny_export", "--storage", url, "--format", "md", "-o", "-")
    assert md.returncode == 0, md.stderr[-2000:]
    assert "## Re-trained with several seeds" in md.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_exported_model_takes_raw_images_in_a_fresh_process(exported) -> None:  # type: ignore[no-untyped-def]
    _, out, record, _ = exported
    assert record["input"]["shape"] == [28, 28] and record["input"]["dtype"] == "uint8"
    assert record["input"]["range"] == [0, 255]
    assert record["output"]["class_names"][0] == "T-shirt/top"
    assert len(record["output"]["class_names"]) == 10
    versions = record["versions"]
    assert {"python", "keras", "keras_backend", "optuna", "hpsearch"} <= set(versions)
    assert record["seeds"]["selection_seeds"] == [0, 1] and "model_seed" in record["seeds"]
    assert record["git"] is None or len(record["git"]["commit"]) == 40
    assert record["trained_on"].startswith("train+validation")
    from hpsearch.data import candidate_dirs

    data = next(d for d in candidate_dirs("fashion_mnist") if d.is_dir())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(out), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping variable loading" not in result.stderr  # saved and loaded alike
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert fresh["dtype"] == "uint8" and fresh["shape"] == [10000, 28, 28]
    assert not fresh["hpsearch_imported"]
    reported = record["metrics"]["retrained_test_accuracy"]
    assert fresh["accuracy"] == pytest.approx(reported, abs=1e-6)
    assert fresh["accuracy"] > 0.5


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_export_is_not_overwritten_nor_written_through_links(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, out, record, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = hpsearch("best", "tiny_export", "--storage", url, "--export", str(out))
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "already holds an export" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    target = tmp_path / "target"
    target.mkdir()
    (target / "model.keras").write_text("someone else's file")
    (tmp_path / "link").symlink_to(target)
    linked = hpsearch("best", "tiny_export", "--storage", url, "--export", str(tmp_path / "link"))
    assert linked.returncode == 1 and "symbolic link" in linked.stderr  # --force: fast tests
    assert (target / "model.keras").read_text() == "someone else's file"
    # --force replaces it; the defaults (1 seed, top 1) re-train the search's best on train+val.
    forced = hpsearch("best", "tiny_export", "--storage", url, "--export", str(out), "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    new = json.loads((out / "hpsearch.json").read_text())
    assert new["selection"] is None and new["created"] >= record["created"]
    assert sorted(p.name for p in out.iterdir()) == ["hpsearch.json", "model.keras", "study.toml"]


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_selection_of_a_val_loss_study_minimizes(tmp_path: Path) -> None:
    """`best --top 2 --seeds 2` on a val_loss study re-trains the two lowest-loss trials and
    picks the lowest mean validation loss (it once re-trained the highest-loss trials)."""
    from hpsearch.export import select, top_trials
    from hpsearch.space import sample_config
    from hpsearch.study import launch_study

    text = slow_trial_spec("vl_select", train_subset=300, max_epochs=1)
    text = text.replace("lr = 0.002", "lr = {choices = [0.001, 0.003, 0.01]}")
    text += '\n[objective]\nmetric = "val_loss"\ndirection = "minimize"\n'
    (tmp_path / "vl.toml").write_text(text)
    spec = load_spec(tmp_path / "vl.toml")
    url = f"sqlite:///{tmp_path / 'vl.db'}"
    study = launch_study(spec, text, url).study
    for loss, rate in ((0.9, 0.001), (0.5, 0.003), (1.4, 0.01)):  # the search's val_loss
        study.enqueue_trial({"optimizer.lr": rate})
        trial = study.ask()
        sample_config(trial, spec.search)
        study.tell(trial, loss)
    assert [t.number for t in top_trials(study, 2)] == [1, 0]
    candidates = select(study, spec, seeds=2, top=2, store=False)
    assert {c.trial for c in candidates} == {0, 1}
    assert all(c.metric == "val_loss" and c.record()["metric"] == "val_loss" for c in candidates)
    assert candidates[0].val_mean <= candidates[1].val_mean  # the lowest mean loss first
    for c in candidates:  # losses of a 10-class softmax after one short epoch, not accuracies
        assert all(0.2 < v < 5.0 for v in c.val) and all(0.05 < t <= 1.0 for t in c.test)
