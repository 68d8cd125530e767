"""Files that ship with hpsearch: Slurm profiles and templates, dashboard assets, example studies.

The repository keeps them in top-level folders (``slurm_array/``, ``dashboard/``, ``studies/``).
A built wheel carries them inside the package, as ``hpsearch/_data/<folder>``
(``[tool.setuptools.package-dir]`` in ``pyproject.toml``), so an installed hpsearch finds them
wherever it is run from. In a checkout (``pip install -e .`` or ``PYTHONPATH``) they are the
top-level folders themselves. Nothing here looks at the current directory.

Example:
    >>> from hpsearch.resources import example_studies
    >>> sorted(example_studies())[:2]
    ['cifar10', 'fashion_mnist']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hpsearch.errors import HpsearchError, SpecError

SLURM = "slurm_array"
DASHBOARD = "dashboard"
STUDIES = "studies"
FOLDERS = (SLURM, DASHBOARD, STUDIES)


def shipped_dir(folder: str) -> Path:
    """The shipped folder ``folder`` (one of :data:`FOLDERS`): installed copy, else checkout.

    Raises:
        HpsearchError: If the folder is in neither place (a broken installation).
    """
    if folder not in FOLDERS:
        raise ValueError(f"unknown shipped folder {folder!r}; one of {', '.join(FOLDERS)}")
    installed = Path(str(resources.files("hpsearch").joinpath("_data", folder)))
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parent.parent / folder
    if checkout.is_dir():
        return checkout
    raise HpsearchError(
        f"hpsearch's {folder}/ folder is missing from this installation (looked in "
        f"{installed} and {checkout}). Fix: reinstall it, e.g. "
        "`pip install --force-reinstall --no-deps hpsearch`"
    )


def example_studies() -> dict[str, Path]:
    """The shipped study files by name (``smoke``, ``fashion_mnist_quick``, ...)."""
    return {p.stem: p for p in sorted(shipped_dir(STUDIES).glob("*.toml"))}


DEFAULT_EXAMPLE = "fashion_mnist_quick"


def write_example(
    directory: str | Path = ".", name: str = DEFAULT_EXAMPLE, *, force: bool = False
) -> Path:
    """Copy the shipped study ``name`` to ``directory/<name>.toml`` (``hpsearch init``).

    Args:
        directory: Folder to write to, created if missing, or a ``.toml`` file name. Defaults
            to the current directory.
        name: A shipped study (:func:`example_studies`). Defaults to the CPU-sized demo.
        force: Overwrite an existing file.
    Returns:
        The written file.
    Raises:
        SpecError: For an unknown ``name``, or an existing file without ``force``.
    """
    examples = example_studies()
    if name not in examples:
        raise SpecError(
            f"`--example` is not a shipped study. Received: {name!r}. Valid choices: "
            f"{', '.join(examples)}. Example: --example {DEFAULT_EXAMPLE}"
        )
    target = Path(directory)
    if target.suffix != ".toml":
        target = target / f"{name}.toml"
    if target.exists() and not force:
        raise SpecError(
            f"{target} already exists; nothing written. Fix: pass --force to overwrite it, or "
            "pick another folder, e.g. `hpsearch init studies/`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(examples[name].read_text(encoding="utf-8"), encoding="utf-8")
    return target


__all__ = [
    "DASHBOARD",
    "DEFAULT_EXAMPLE",
    "FOLDERS",
    "SLURM",
    "STUDIES",
    "example_studies",
    "shipped_dir",
    "write_example",
]
