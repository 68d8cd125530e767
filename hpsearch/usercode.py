"""The user's own code: a model builder or a data loader named ``module:function``.

The module is looked for, in order, in the study's ``python_path`` (by default the study file's
folder, stored resolved at ``launch`` so every worker finds it), on ``PYTHONPATH``, and among
installed packages. Every failure is one line that names the module file, the function and the
error.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hpsearch.errors import SpecError


def import_function(
    reference: str, python_path: Sequence[str] = (), field: str = "model.builder"
) -> Callable[..., Any]:
    """Import ``module:function`` and return the function.

    Args:
        reference: For example ``"mymodels:build_resnet"``.
        python_path: Folders searched before ``sys.path`` (the study's ``python_path``).
        field: The study-file field that names it, for messages.
    Raises:
        SpecError: If the module cannot be found or imported, or has no such function.
    """
    module_name, _, function_name = reference.partition(":")
    for folder in reversed(list(python_path)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            where = ", ".join(python_path) or "(no study folder)"
            raise SpecError(
                f"`{field}` = {reference!r}: no module {module_name!r} in {where}, on "
                "PYTHONPATH or among installed packages. Fix: put "
                f"{module_name.replace('.', '/')}.py next to the study file, or add its folder "
                'to python_path = ["src"] or to PYTHONPATH'
            ) from e
        raise SpecError(_import_failed(module_name, reference, field, e)) from e
    except Exception as e:  # noqa: BLE001 - any error in the user's module
        raise SpecError(_import_failed(module_name, reference, field, e)) from e
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        defined = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
        )
        raise SpecError(
            f"{_module_file(module)}: no function {function_name!r} (`{field}` = "
            f"{reference!r}). Functions there: {', '.join(defined) or 'none'}"
        )
    return function  # type: ignore[no-any-return]


def describe(function: Callable[..., Any]) -> str:
    """``/path/mymodels.py:build_resnet`` for messages."""
    try:
        path = inspect.getsourcefile(function) or function.__module__
    except TypeError:
        path = getattr(function, "__module__", "?")
    return f"{path}:{getattr(function, '__name__', repr(function))}"


def one_line(error: BaseException, limit: int = 300) -> str:
    """``ValueError: message`` on one line, shortened."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _module_file(module: Any) -> str:
    return str(getattr(module, "__file__", None) or module.__name__)


def _import_failed(module: str, reference: str, field: str, error: BaseException) -> str:
    tb = error.__traceback__
    where = module
    while tb is not None:  # the user's file and line, not importlib's
        if module.split(".")[-1] in tb.tb_frame.f_code.co_filename:
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{where}: importing {module!r} for `{field}` = {reference!r} failed: {one_line(error)}"
