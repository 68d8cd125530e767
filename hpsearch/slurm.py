"""Slurm job arrays: render ``slurm_array/`` templates, submit, watch and cancel a study's jobs.

Every array task runs ``hpsearch worker --study NAME`` (``--workers-per-gpu`` of them on one
GPU); workers take trials from the study database until the budget is reached, so surplus tasks
end within seconds. The job script traps Slurm's pre-termination signal (``--signal=B:USR1@S``),
forwards it to the workers (each re-queues its trial in flight), waits for them and requeues
its own task, which then resumes the trial from its last epoch's checkpoint.

Site profiles (``slurm_array/<name>.toml``: partition, GPU request syntax, account, modules,
container) give the defaults; command-line flags override them. Storage URLs in job scripts
never carry a password: jobs authenticate with ``~/.pgpass`` or ``$HPSEARCH_DB_PASSWORD``.
No value reaches a job script with a control character in it (a newline in ``--partition``
would start a shell line), profile keys are checked for their shape (``env`` names, module
names, ``#SBATCH`` options) and every path is quoted, for the shell and for ``#SBATCH`` lines.

Example:
    >>> from hpsearch.slurm import SubmitOptions, render_script, submit_script
    >>> job = render_script("smoke", "postgresql://me@db/hp", SubmitOptions("0-31%8"))
    >>> submit_script(job).job_id  # doctest: +SKIP
    '123456'
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hpsearch.display import clean, excerpt, has_control, quoted
from hpsearch.env import runs_dir
from hpsearch.errors import SubmissionError
from hpsearch.spec import BUILTIN_BUILDER, NAME_MAX_CHARS, NAME_PATTERN, read_toml

_logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "generic"
JOB_NAME_PREFIX = "hpsearch-"
_ARRAY_ITEM = r"\d+(?:-\d+(?::\d+)?)?"
# Always used with fullmatch: `$` would also match before a final newline.
_ARRAY_RE = re.compile(rf"({_ARRAY_ITEM}(?:,{_ARRAY_ITEM})*)(?:%(\d+))?")
_TIME_RE = re.compile(r"(?:(\d+)-)?(\d{1,2}):(\d{2}):(\d{2})")
_MEM_RE = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_NAME_RE = re.compile(NAME_PATTERN)
_SLURM_NAMES_RE = re.compile(r"[A-Za-z0-9_.,:+@-]*")  # partition(s), account
_SBATCH_OPTION_RE = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=\S+)?")
_MODULE_RE = re.compile(r"[A-Za-z0-9_.+/@:=-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SBATCH_SAFE_RE = re.compile(r"[\w@%+=:,./-]+")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SQUEUE_TIMEOUT_S = 10


class Profile(BaseModel):
    """A site profile (``slurm_array/<name>.toml``); every field can be overridden by a flag."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    description: str = ""
    template: str = "array.sbatch"
    partition: str = ""
    account: str = ""
    account_required: bool = False
    gpus_per_task: int = Field(1, ge=0)
    gpu_request: str = "--gres=gpu:{gpus}"
    workers_per_gpu: int = Field(1, ge=1)
    cpus_per_task: int = Field(4, ge=1)
    mem: str = "16G"
    time: str = "04:00:00"
    signal_seconds: int = Field(300, ge=0, le=65535)
    setup: list[str] = []
    modules: list[str] = []
    container: str = ""
    container_cmd: str = "singularity exec --nv"
    hpsearch_cmd: str = ""
    sbatch_extra: list[str] = []
    env: dict[str, str] = {}

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            items = [*value, *value.values()]
        for item in items:
            if isinstance(item, str) and has_control(item):
                raise ValueError(
                    "holds a control character (a newline would start a new line of the job "
                    f"script): {excerpt(item)}"
                )
        return value

    @field_validator("partition", "account")
    @classmethod
    def _slurm_names(cls, value: str) -> str:
        if not _SLURM_NAMES_RE.fullmatch(value):
            raise ValueError("must be Slurm names: letters, digits, `_.,:+@-`, no spaces")
        return value

    @field_validator("gpu_request")
    @classmethod
    def _gpu_request(cls, value: str) -> str:
        try:
            line = value.format(gpus=1)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ValueError(
                f"is not a valid request template ({clean(e, 60)}): use {{gpus}} for the count "
                "and no other braces"
            ) from e
        if "{gpus}" not in value or not _SBATCH_OPTION_RE.fullmatch(line):
            raise ValueError("must be one sbatch option holding {gpus}, e.g. --gpus={gpus}")
        return value

    @field_validator("sbatch_extra")
    @classmethod
    def _sbatch_options(cls, value: list[str]) -> list[str]:
        for option in value:
            if not _SBATCH_OPTION_RE.fullmatch(option):
                raise ValueError(
                    f"each item must be one sbatch option such as --constraint=v100, not "
                    f"{excerpt(option)}"
                )
        return value

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for module in value:
            if not _MODULE_RE.fullmatch(module):
                raise ValueError(
                    f"each item must be a module name such as cuda/12.2, not {excerpt(module)}"
                )
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"names must be shell variable names such as TF_CPP_MIN_LOG_LEVEL, not "
                    f"{excerpt(name)}"
                )
        return value


@dataclass(frozen=True)
class SubmitOptions:
    """What ``hpsearch submit`` was asked for; ``None`` means "the profile's value".

    Args:
        array: Slurm array indices with an optional ``%`` throttle, e.g. ``0-31%8``.
        profile: Name of a ``slurm_array/<name>.toml`` profile, or a path to one. Defaults to
            ``$HPSEARCH_SLURM_PROFILE``, else ``generic``.
    """

    array: str
    profile: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_task: int | None = None
    workers_per_gpu: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    container: str | None = None
    signal_seconds: int | None = None


@dataclass(frozen=True)
class ArraySpec:
    """A parsed ``--array`` value."""

    text: str
    indices: tuple[int, ...]
    throttle: int | None


@dataclass(frozen=True)
class RenderedJob:
    """A job script ready to submit, and what it was made from."""

    study: str
    script: str
    profile_name: str
    settings: Profile
    array: ArraySpec
    storage_url: str
    workdir: Path
    runs_dir: Path
    timestamp: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Submitted:
    """A submitted array job."""

    job_id: str
    script_path: Path
    log_dir: Path


@dataclass(frozen=True)
class ArrayJob:
    """One of a study's jobs in the queue, with its tasks by state."""

    job_id: str
    tasks: dict[str, list[str]]

    def describe(self) -> str:
        """``123: 2 running, 6 pending``."""
        parts = [f"{len(ids)} {state.lower()}" for state, ids in sorted(self.tasks.items())]
        return f"{self.job_id}: {', '.join(parts)}"


def profile_dirs() -> list[Path]:
    """Folders searched for profiles and templates, first match wins.

    ``$HPSEARCH_SLURM_DIR``, then ``./slurm_array`` (your own site profiles), then the profiles
    shipped with hpsearch (:func:`hpsearch.resources.shipped_dir`), so a folder with only your
    site's profile still finds ``bridges2``, ``expanse``, ``generic`` and ``array.sbatch``.
    """
    from hpsearch.resources import SLURM, shipped_dir

    found: list[Path] = []
    env = os.environ.get("HPSEARCH_SLURM_DIR")
    for folder in (Path(env) if env else None, Path("slurm_array"), shipped_dir(SLURM)):
        if folder is not None and folder.is_dir() and folder.resolve() not in found:
            found.append(folder.resolve())
    return found


def _find(filename: str, first: Path | None = None) -> Path | None:
    """``filename`` in ``first`` (a profile's own folder), else in :func:`profile_dirs`."""
    for folder in ([first] if first else []) + profile_dirs():
        if (folder / filename).is_file():
            return folder / filename
    return None


def available_profiles() -> list[str]:
    """Names of the profiles in :func:`profile_dirs`."""
    return sorted({p.stem for folder in profile_dirs() for p in folder.glob("*.toml")})


def _profile_path(name: str | None) -> tuple[str, Path | None]:
    name = name or os.environ.get("HPSEARCH_SLURM_PROFILE") or DEFAULT_PROFILE
    return name, Path(name) if name.endswith(".toml") else _find(f"{name}.toml")


def load_profile(name: str | None = None) -> tuple[str, Profile]:
    """Load a site profile by name (``slurm_array/<name>.toml``) or path.

    Raises:
        SubmissionError: If the profile does not exist or has an invalid key.
    """
    name, path = _profile_path(name)
    if has_control(name) or path is None or not path.is_file():
        choices = ", ".join(available_profiles()) or "none"
        raise SubmissionError(
            f"unknown Slurm profile. Received: --profile {clean(name, 100)}. Valid choices: "
            f"{choices} (in {', '.join(map(str, profile_dirs()))}; or a path to a .toml file). "
            "Example: --profile bridges2"
        )
    raw = read_toml(path, "Slurm profile", error=SubmissionError, example='partition = "gpu"')
    try:
        return path.stem, Profile.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(clean(part, 40) for part in first["loc"])
        hint = (
            f"Valid keys: {', '.join(Profile.model_fields)}"
            if first["type"] == "extra_forbidden"
            else f"See {_find('generic.toml') or 'generic.toml'} for every key with an example"
        )
        raise SubmissionError(
            f"{clean(path, 300)}: `{loc}`: {clean(first['msg'], 200)}. "
            f"Received: {excerpt(first.get('input'))}. {hint}"
        ) from e


def parse_array(text: str) -> ArraySpec:
    """Parse Slurm ``--array`` syntax: ``0-31%8``, ``0-9:2``, ``1,3,5``, ``0-3,8%2``.

    Raises:
        SubmissionError: If ``text`` is not valid array syntax.
    """
    example = "Example: --array 0-31%8 (tasks 0..31, at most 8 at once)"
    match = _ARRAY_RE.fullmatch(text.strip())
    if not match:
        raise SubmissionError(
            f"`--array` is not Slurm array syntax. Received: {excerpt(text)}. {example}"
        )
    indices: list[int] = []
    for item in match.group(1).split(","):
        bounds, _, step = item.partition(":")
        low, _, high = bounds.partition("-")
        lo, hi = int(low), int(high or low)
        if hi < lo or (step and int(step) < 1):
            raise SubmissionError(
                f"`--array` range {excerpt(item)} is empty. Received: {excerpt(text)}. {example}"
            )
        indices.extend(range(lo, hi + 1, int(step or 1)))
    throttle = None if match.group(2) is None else int(match.group(2))
    if throttle == 0:
        raise SubmissionError(
            f"`--array` throttle %0 runs no task. Received: {excerpt(text)}. {example}"
        )
    return ArraySpec(text.strip(), tuple(sorted(set(indices))), throttle)


def time_seconds(text: str) -> int:
    """Seconds in a Slurm time limit ``HH:MM:SS`` or ``D-HH:MM:SS``.

    Raises:
        SubmissionError: For any other format.
    """
    match = _TIME_RE.fullmatch(text)
    if not match:
        raise SubmissionError(
            f"`--time` must be HH:MM:SS or D-HH:MM:SS. Received: {excerpt(text)}. "
            "Example: --time 08:00:00"
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def script_storage_url(url: str) -> tuple[str, list[str]]:
    """The storage URL to write into a job script: never with a password.

    A password in the URL is removed when the jobs can authenticate without it
    (``$HPSEARCH_DB_PASSWORD`` is set, which sbatch passes on to the jobs, or a ``~/.pgpass``
    file exists for PostgreSQL); otherwise the submission is refused.

    Returns:
        The URL without password, and notes for the user.
    Raises:
        SubmissionError: If the URL has a password and the jobs would have no other way in.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from hpsearch.storage import has_password, mask_url, mysql_option_file, without_secrets

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise SubmissionError(
            f"`--storage` is not a database URL. Received: {excerpt(mask_url(url))}. "
            "Example: --storage postgresql://me@db.example.org/hpsearch"
        ) from e
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database or ""
        if database and database != ":memory:" and not os.path.isabs(database):
            # Jobs `cd` to the submit directory, but an absolute path survives edits.
            parsed = parsed.set(database=os.path.abspath(database))
        notes = [
            "SQLite storage: all tasks must share one filesystem and a few concurrent workers "
            "at most; use PostgreSQL for real arrays"
        ]
        return parsed.render_as_string(hide_password=False), notes
    if not has_password(url):
        return parsed.render_as_string(hide_password=False), []
    pgpass = Path(os.environ.get("PGPASSFILE", Path.home() / ".pgpass"))
    has_pgpass = parsed.drivername.startswith("postgresql") and pgpass.is_file()
    option_file = mysql_option_file() if parsed.drivername.startswith("mysql") else None
    if not (os.environ.get("HPSEARCH_DB_PASSWORD") or has_pgpass or option_file):
        raise SubmissionError(
            f"the storage URL carries a password, which must not go into a job script. "
            f"Received: {excerpt(mask_url(url))}. Put it in ~/.pgpass (PostgreSQL), ~/.my.cnf "
            "(MariaDB) or export HPSEARCH_DB_PASSWORD, and drop it from the URL. Example: "
            "--storage postgresql://me@db.example.org/hpsearch"
        )
    source = (
        "$HPSEARCH_DB_PASSWORD"
        if os.environ.get("HPSEARCH_DB_PASSWORD")
        else str(option_file or pgpass)
    )
    clean = without_secrets(url)
    return clean, [f"password removed from the storage URL in the job script; jobs use {source}"]


def _merge(profile: Profile, options: SubmitOptions) -> Profile:
    overrides = {
        key: value
        for key, value in vars(options).items()
        if key not in ("array", "profile") and value is not None
    }
    try:
        return Profile.model_validate({**profile.model_dump(), **overrides})
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0])
        if key not in overrides:  # a profile value (checked when loaded): never here
            raise SubmissionError(f"profile: `{key}` {clean(first['msg'], 200)}") from e
        flag = "--" + key.replace("_", "-")
        example = {"partition": "gpu", "account": "abc123", "time": "08:00:00"}.get(key, "1")
        raise SubmissionError(
            f"`{flag}` {clean(first['msg'], 200).removeprefix('Value error, ')}. "
            f"Received: {excerpt(first.get('input'))}. Example: {flag} {example}"
        ) from e


def _validate(settings: Profile, profile_name: str) -> None:
    if not settings.partition.strip():
        raise SubmissionError(
            f"no partition: profile {quoted(profile_name)} sets none and --partition was not "
            "given. "
            "Received: partition=''. Example: --partition gpu (`sinfo -s` lists them)"
        )
    if settings.account_required and not settings.account.strip():
        raise SubmissionError(
            f"profile {quoted(profile_name)} requires an account (allocation) to charge. "
            "Received: account=''. Example: --account abc123"
        )
    if settings.mem and not _MEM_RE.fullmatch(settings.mem):
        raise SubmissionError(
            "`--mem` must be a number with an optional K/M/G/T unit. "
            f"Received: {excerpt(settings.mem)}. Example: --mem 16G"
        )
    limit = time_seconds(settings.time)
    if settings.signal_seconds >= limit:
        raise SubmissionError(
            f"`--time` must be longer than the pre-termination signal ({settings.signal_seconds} "
            f"s before the limit). Received: --time {settings.time}. Example: --time 08:00:00"
        )
    if "{gpus}" not in settings.gpu_request:
        raise SubmissionError(
            f"profile {quoted(profile_name)}: `gpu_request` must contain {{gpus}}. "
            f'Received: {excerpt(settings.gpu_request)}. Example: gpu_request = "--gpus={{gpus}}"'
        )
    image = settings.container
    if image.endswith(".sif") and not Path(image).is_file():
        raise SubmissionError(
            f"`--container` image not found. Received: {excerpt(image)}. "
            "Example: --container /ocean/containers/ngc/tensorflow/<tag>.sif"
        )


def _safe_path(path: Path, what: str) -> Path:
    """A folder that goes into the job script: refused if a control character is in it."""
    if has_control(str(path)):
        raise SubmissionError(
            f"the {what} has a control character in its path, which would break the job "
            f"script. Received: {excerpt(str(path))}. Example: /home/me/hpsearch"
        )
    return path


def _sbatch_quote(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line (sbatch's own parser, not the shell's)."""
    if _SBATCH_SAFE_RE.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\#])', r"\\\1", value) + '"'


def _sbatch_resources(settings: Profile) -> str:
    lines = []
    if settings.account:
        lines.append(f"--account={settings.account}")
    lines += ["--nodes=1", "--ntasks=1", f"--cpus-per-task={settings.cpus_per_task}"]
    if settings.mem:
        lines.append(f"--mem={settings.mem}")
    if settings.gpus_per_task > 0:
        lines.append(settings.gpu_request.format(gpus=settings.gpus_per_task))
    return "\n".join(f"#SBATCH {line}" for line in lines)


def _hpsearch_cmd(settings: Profile) -> str:
    if settings.hpsearch_cmd:
        return settings.hpsearch_cmd
    if settings.container:
        return "python3 -m hpsearch"  # the container's Python; see README "Containers"
    return f"{shlex.quote(sys.executable)} -m hpsearch"


def _exports(env: Mapping[str, str]) -> str:
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


def _fill(template: str, values: Mapping[str, str], source: Path) -> str:
    out = []
    for line in template.splitlines():
        whole = _PLACEHOLDER.fullmatch(line.strip())
        if whole and whole.group(1) in values and not values[whole.group(1)]:
            continue  # an empty optional block leaves no blank line
        out.append(line)

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise SubmissionError(
                f"{source}: unknown placeholder {{{{ {key} }}}}. "
                f"Valid names: {', '.join(sorted(values))}"
            )
        return values[key]

    return _PLACEHOLDER.sub(value, "\n".join(out)) + "\n"


def render_script(
    study: str,
    storage_url: str | None,
    options: SubmitOptions,
    *,
    check_study: bool = True,
    workdir: Path | None = None,
    timestamp: str | None = None,
) -> RenderedJob:
    """Validate everything and render the array job script for ``study``.

    Nothing is written or submitted. Precedence: flags (``options``) > profile > defaults.

    Args:
        study: Name of a launched study.
        storage_url: Its storage URL; defaults to ``$HPSEARCH_STORAGE``, else SQLite.
        options: The array and the flags that override the profile.
        check_study: Load the study first, so a missing study fails here, not in every task.
        workdir: Directory the tasks ``cd`` to. Defaults to the current directory.
        timestamp: Written into the script. Defaults to now.
    Raises:
        SubmissionError: For a bad array, profile, option or password in the URL.
        StorageError: If the storage cannot be opened or has no such study.
    """
    from hpsearch.local import thread_env
    from hpsearch.storage import resolve_url

    if len(study) > NAME_MAX_CHARS or not _NAME_RE.fullmatch(study):
        raise SubmissionError(
            f"study name must be letters, digits, `_`, `.` or `-` (at most {NAME_MAX_CHARS}). "
            f"Received: {excerpt(study)}. Example: fashion_mnist"
        )
    array = parse_array(options.array)
    profile_name, profile = load_profile(options.profile)
    settings = _merge(profile, options)
    _validate(settings, profile_name)
    url, notes = script_storage_url(resolve_url(storage_url))
    if has_control(url):
        raise SubmissionError(
            "the storage URL has a control character, which would break the job script. "
            "Example: --storage postgresql://me@db.example.org/hpsearch"
        )
    if check_study:
        from hpsearch.study import load_study

        _, spec = load_study(study, resolve_url(storage_url), heartbeat=False, read_only=True)
        if len(array.indices) > spec.budget.n_trials:
            notes.append(
                f"{len(array.indices)} tasks for a budget of {spec.budget.n_trials} trials: "
                "surplus tasks exit within seconds"
            )
    workdir = (workdir or Path.cwd()).resolve()
    env = dict(settings.env)
    if check_study and spec.uses_custom_code:
        env.setdefault("PYTHONPATH", job_python_path(spec.python_path))
        notes += check_importable(spec, workdir, env["PYTHONPATH"], settings)
    template_path: Path | None = Path(settings.template)
    if template_path is not None and not template_path.is_absolute():
        own = _profile_path(options.profile)[1]
        template_path = _find(settings.template, first=own.parent if own else None)
    if template_path is None or not template_path.is_file():
        raise SubmissionError(
            f"profile {quoted(profile_name)}: template not found. Received: template = "
            f"{excerpt(settings.template)}. Example: template = "
            f'"array.sbatch" (in {", ".join(map(str, profile_dirs()))})'
        )
    workdir = _safe_path((workdir or Path.cwd()).resolve(), "submit directory")
    runs = _safe_path(runs_dir(), "runs directory ($HPSEARCH_RUNS_DIR)")
    runs = runs if runs.is_absolute() else workdir / runs
    timestamp = timestamp or datetime.now().astimezone().isoformat(timespec="seconds")
    k = settings.workers_per_gpu
    launcher = ""
    if settings.container:
        launcher = f"{settings.container_cmd} {shlex.quote(settings.container)} "
    setup = list(settings.setup) + [f"module load {shlex.quote(m)}" for m in settings.modules]
    values = {
        "study": study,
        "profile": profile_name,
        "timestamp": timestamp,
        "job_name": JOB_NAME_PREFIX + study,
        "array": array.text,
        "partition": settings.partition,
        "sbatch_resources": _sbatch_resources(settings),
        "time": settings.time,
        "signal_seconds": str(settings.signal_seconds),
        # For sbatch's own parser (quotes, `#`); a % of the path itself is written %%.
        "log_dir": _sbatch_quote(str(runs / study / "logs").replace("%", "%%")),
        "sbatch_extra": "\n".join(f"#SBATCH {line}" for line in settings.sbatch_extra),
        "workdir": shlex.quote(str(workdir)),
        "setup": "\n".join(setup),
        "storage": shlex.quote(url),
        "runs_dir": shlex.quote(str(runs)),
        "mem_fraction": f"{0.9 / k:.3g}",
        "thread_env": _exports(thread_env(max(1, settings.cpus_per_task // k))),
        "env": _exports(env),
        "workers_per_gpu": str(k),
        "launcher": launcher,
        "hpsearch_cmd": _hpsearch_cmd(settings),
    }
    script = _fill(template_path.read_text(encoding="utf-8"), values, template_path)
    return RenderedJob(
        study, script, profile_name, settings, array, url, workdir, runs, timestamp, notes
    )


def job_python_path(study_path: Sequence[str]) -> str:
    """``PYTHONPATH`` for the job: the study's ``python_path``, then this shell's PYTHONPATH."""
    parts = [*study_path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(str(Path(p).resolve()) for p in parts if p))


def check_importable(spec: Any, workdir: Path, python_path: str, settings: Profile) -> list[str]:
    """Import the study's builder/loader as a task will: same directory, same PYTHONPATH.

    Returns notes (a container's Python cannot be checked from here).

    Raises:
        SubmissionError: One line with the import error.
    """
    if settings.container or settings.hpsearch_cmd:
        return [
            "the custom builder/loader was not import-checked (the job runs another Python); "
            f"the job sets PYTHONPATH={python_path}"
        ]
    refs = [(r, f) for r, f in ((spec.model.builder, "model.builder"), (spec.data.loader,
            "data.loader")) if r and r != BUILTIN_BUILDER]  # fmt: skip
    code = (
        "import sys\nfrom hpsearch.usercode import import_function\n"
        "for ref, field in " + repr(refs) + ":\n    import_function(ref, [], field)\n"
    )
    env = {**os.environ, "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise SubmissionError(
            f"the job could not import {' and '.join(r for r, _ in refs)} (working directory "
            f"{workdir}, PYTHONPATH={python_path}): {_one_line(lines[-1] if lines else '')}"
        )
    return []


def submit_script(job: RenderedJob, *, sbatch: str = "sbatch") -> Submitted:
    """Write ``runs/<study>/sbatch/<timestamp>.sbatch`` and submit it with ``sbatch``.

    Raises:
        SubmissionError: If sbatch is missing, fails (its message is quoted) or prints no job id.

    Note:
        sbatch passes the submitting shell's environment on to the jobs (``--export=ALL``),
        so ``$HPSEARCH_DB_PASSWORD`` reaches them without being written anywhere.
    """
    exe = shutil.which(sbatch)
    if exe is None:
        raise SubmissionError(
            f"`{sbatch}` not found on PATH: run `hpsearch submit` on a Slurm login node "
            "(or add --dry-run to only print the script)"
        )
    log_dir = job.runs_dir / job.study / "logs"
    script_dir = job.runs_dir / job.study / "sbatch"
    log_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the --output folder
    script_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = script_dir / f"{stamp}.sbatch"
    n = 1
    while path.exists():
        n += 1
        path = script_dir / f"{stamp}-{n}.sbatch"
    path.write_text(job.script, encoding="utf-8")
    env = dict(os.environ)
    if "HPSEARCH_STORAGE" in env:
        env["HPSEARCH_STORAGE"] = job.storage_url  # no password in the job's environment
    try:
        result = subprocess.run(
            [exe, "--parsable", str(path)],
            cwd=job.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as e:
        raise SubmissionError(f"sbatch did not answer within 120 s (script: {path})") from e
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise SubmissionError(
            f"sbatch refused the job (exit {result.returncode}): {_one_line(output)!r}. "
            f"Script: {path}"
        )
    job_id = result.stdout.strip().splitlines()[-1].split(";")[0] if result.stdout.strip() else ""
    if not job_id.isdigit():
        raise SubmissionError(
            f"sbatch printed no job id. Received: {_one_line(output)!r}. Script: {path}"
        )
    _logger.info("submitted array job %s for study %s (%s)", job_id, job.study, path)
    return Submitted(job_id, path, log_dir)


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _squeue(name: str) -> list[ArrayJob]:
    """The queued/running jobs named ``hpsearch-<name>`` of this user, by array job."""
    result = subprocess.run(
        [
            "squeue",
            f"--user={getpass.getuser()}",  # (--me needs Slurm >= 20.11)
            "--array",
            "--noheader",
            f"--name={JOB_NAME_PREFIX}{name}",
            "--format=%F|%K|%T",
        ],
        capture_output=True,
        text=True,
        timeout=_SQUEUE_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise SubmissionError(
            f"squeue failed (exit {result.returncode}): "
            f"{_one_line(result.stderr or result.stdout)!r}"
        )
    jobs: dict[str, dict[str, list[str]]] = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job_id, task, state = parts
        jobs.setdefault(job_id, {}).setdefault(state, []).append(task)
    return [ArrayJob(job_id, tasks) for job_id, tasks in sorted(jobs.items())]


def status_for_study(name: str) -> dict[str, Any]:
    """The study's Slurm jobs for ``hpsearch status`` (``{}`` where squeue is not installed).

    Returns:
        ``slurm_jobs``: one line such as ``123: 2 running, 6 pending``; ``slurm_arrays``:
        the same as a list of ``{"job_id", "tasks": {state: [task ids]}}``.
    """
    if shutil.which("squeue") is None:
        return {}
    try:
        jobs = _squeue(name)
    except (SubmissionError, OSError, subprocess.TimeoutExpired) as e:
        _logger.info("cannot list Slurm jobs: %s", e)
        return {"slurm_jobs": f"squeue failed: {e}", "slurm_arrays": []}
    line = "; ".join(j.describe() for j in jobs) or f"no jobs named {JOB_NAME_PREFIX}{name}"
    return {
        "slurm_jobs": line,
        "slurm_arrays": [{"job_id": j.job_id, "tasks": j.tasks} for j in jobs],
    }


def cancel_study(name: str) -> list[ArrayJob]:
    """Cancel this user's jobs named ``hpsearch-<name>`` (all their array tasks).

    Running workers get SIGTERM: each re-queues its trial in flight, which a later submission
    resumes from its checkpoint.

    Returns:
        The jobs that were cancelled, with their tasks by state before cancelling.
    Raises:
        SubmissionError: If squeue/scancel are missing or fail.
    """
    for tool in ("squeue", "scancel"):
        if shutil.which(tool) is None:
            raise SubmissionError(f"`{tool}` not found on PATH: run this on a Slurm login node")
    jobs = _squeue(name)
    if not jobs:
        return []
    result = subprocess.run(
        ["scancel", *(j.job_id for j in jobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise SubmissionError(
            f"scancel failed (exit {result.returncode}): "
            f"{_one_line(result.stderr or result.stdout)!r}"
        )
    return jobs


__all__ = [
    "ArrayJob",
    "ArraySpec",
    "Profile",
    "RenderedJob",
    "SubmitOptions",
    "Submitted",
    "available_profiles",
    "cancel_study",
    "load_profile",
    "parse_array",
    "render_script",
    "script_storage_url",
    "status_for_study",
    "submit_script",
    "profile_dirs",
    "time_seconds",
]
