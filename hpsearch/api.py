"""Python API for scripts and notebooks: launch a study, run workers, read the leaderboard.

The CLI's ``launch`` and ``run`` go through the same functions. Nothing here imports Keras until
a model is built.

Example:
    >>> import hpsearch
    >>> study = hpsearch.launch("examples/custom_cnn/study.toml", storage="sqlite:///hp.db")
    >>> hpsearch.run_workers(study.name, workers=2, storage="sqlite:///hp.db")  # doctest: +SKIP
    >>> hpsearch.leaderboard(study.name, storage="sqlite:///hp.db").head()  # doctest: +SKIP
    >>> hpsearch.export_best(study.name, "best/", storage="sqlite:///hp.db")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import HpsearchError

if TYPE_CHECKING:
    import pandas

    from hpsearch.local import RunResult
    from hpsearch.spec import StudySpec
    from hpsearch.study import Launched


@dataclass(frozen=True)
class StudyHandle:
    """A launched study: its name, storage URL and validated spec."""

    name: str
    storage_url: str
    spec: StudySpec
    created: bool


def load(study: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[StudySpec, str, str]:
    """Validate a study file or dict; returns ``(spec, toml_text, source)``.

    A dict is a parsed study file (``{"name": ..., "data": {...}, "budget": {...}}``); its
    relative paths resolve against the current directory.

    Raises:
        SpecError: One line naming the field, what was received and an example.
    """
    from hpsearch.spec import load_spec, spec_from_dict

    if isinstance(study, Mapping):
        import tomli_w

        spec = spec_from_dict(study, source="<dict>", base_dir=Path.cwd())
        return spec, tomli_w.dumps(dict(study)), "<dict>"
    path = Path(study)
    spec = load_spec(path)
    return spec, path.read_text(encoding="utf-8"), str(path)


def launch_study_from(
    study: str | os.PathLike[str] | Mapping[str, Any], storage: str | None = None
) -> Launched:
    """Validate, check that its data and model can be made, then create or continue the study.

    Returns the :class:`hpsearch.study.Launched` record (what the CLI prints from).
    """
    from hpsearch.study import launch_study
    from hpsearch.usercode import check_study_runs

    spec, text, source = load(study)
    check_study_runs(spec, source)
    return launch_study(spec, text, storage, check=False)


def launch(
    study: str | os.PathLike[str] | Mapping[str, Any], storage: str | None = None
) -> StudyHandle:
    """Create the study (or continue it): what ``hpsearch launch FILE`` does.

    Args:
        study: A study file path, or the same tables as a dict.
        storage: Storage URL. Defaults to ``$HPSEARCH_STORAGE``, else ``sqlite:///hpsearch.db``.
    Returns:
        A :class:`StudyHandle` for :func:`run_workers`, :func:`leaderboard`, :func:`export_best`.
    Raises:
        SpecError: If the file, the builder, the loader or a data path is unusable; nothing is
            written then.
        StorageError: If the storage cannot be opened.
    """
    launched = launch_study_from(study, storage)
    return StudyHandle(launched.spec.name, launched.storage_url, launched.spec, launched.created)


def run_workers(
    name: str,
    workers: int = 1,
    storage: str | None = None,
    *,
    threads_per_worker: int | None = None,
) -> RunResult:
    """Run ``workers`` local worker processes on a launched study until its budget is reached.

    Each worker is a ``hpsearch worker`` process (logs in ``runs/<study>/logs/``), as in
    ``hpsearch run``. Blocks until they stop; Ctrl-C stops them cleanly.
    """
    from rich.console import Console

    from hpsearch.local import run_local
    from hpsearch.storage import resolve_url

    return run_local(
        name,
        resolve_url(storage),
        workers,
        threads_per_worker=threads_per_worker,
        console=Console(stderr=True),
    )


def leaderboard_rows(name: str, storage: str | None = None) -> list[dict[str, Any]]:
    """The study's trials ranked by its objective (as ``hpsearch status``), as plain dicts.

    Each row has ``rank``, ``trial``, ``state``, ``value`` (the objective metric), ``metric``,
    ``test_accuracy``, ``epochs``, ``wall_minutes``, ``n_params``, ``config`` and the trial's
    parameters. Failed and queued trials come last with ``rank`` None.
    """
    from hpsearch.baselines import load_baselines
    from hpsearch.ranking import study_summary
    from hpsearch.study import dataset_key, load_study

    study, spec = load_study(name, storage, heartbeat=False)
    summary = study_summary(study, load_baselines(), dataset_key(spec))
    rows = []
    for row in summary["leaderboard"]:
        if row["kind"] != "trial":
            continue
        rows.append(
            {
                "rank": row["rank"],
                "trial": row["trial"],
                "state": row["state"],
                "value": row["val_accuracy"],
                "metric": spec.objective.metric,
                "test_accuracy": row["test_accuracy"],
                "epochs": row["epochs"],
                "wall_minutes": row["wall_minutes"],
                "n_params": row["n_params"],
                "config": row["config"],
                **row["params"],
            }
        )
    return rows


def leaderboard(name: str, storage: str | None = None) -> pandas.DataFrame:
    """:func:`leaderboard_rows` as a pandas DataFrame (pandas is an optional dependency).

    Raises:
        HpsearchError: If pandas is not installed (``pip install pandas``).
    """
    try:
        import pandas
    except ImportError as e:
        raise HpsearchError(
            "leaderboard() returns a pandas DataFrame, and pandas is not installed. Fix: "
            "pip install pandas (or use hpsearch.leaderboard_rows(), plain dicts)"
        ) from e
    return pandas.DataFrame(leaderboard_rows(name, storage))


def export_best(
    name: str, out_dir: str | os.PathLike[str], storage: str | None = None
) -> dict[str, Any]:
    """Re-train the best trial on train+validation, test it once and save it (``best --export``).

    Returns:
        The record written to ``out_dir/hpsearch.json`` (metrics, parameters, versions).
    """
    from hpsearch.export import export_best as _export
    from hpsearch.study import load_study

    study, spec = load_study(name, storage, heartbeat=False)
    return _export(study, spec, Path(out_dir))
