"""The user's own code: a model builder or a data loader named ``module:function``.

The module is looked for, in order, in the study's ``python_path`` (by default the study file's
folder, stored resolved at ``launch`` so every worker finds it), on ``PYTHONPATH``, and among
installed packages. Every failure is one line that names the module file, the function and the
error.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.errors import SpecError

if TYPE_CHECKING:
    from hpsearch.spec import StudySpec


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
        module = _reload_if_edited(module)
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


_IMPORTED_AT: dict[str, float] = {}


def _reload_if_edited(module: Any) -> Any:
    """Re-import a module whose file changed since (a notebook user edits the builder)."""
    path = getattr(module, "__file__", None)
    if not path:
        return module
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return module
    seen = _IMPORTED_AT.setdefault(module.__name__, mtime)
    if mtime != seen:
        module = importlib.reload(module)
        _IMPORTED_AT[module.__name__] = mtime
    return module


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
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}:{error.lineno}"
    return f"{where}: importing {module!r} for `{field}` = {reference!r} failed: {one_line(error)}"


def check_study_runs(spec: StudySpec, source: str | None = None) -> tuple[tuple[int, ...], int]:
    """Check, before any worker starts, that the study's data and model can be made.

    Reads the data's shape (a folder is scanned, a loader called), and with a custom builder
    imports it and builds one model from the space's first point (no training), compiled with
    the objective's metric. The built-in CNN on built-in data costs nothing here.

    Args:
        spec: A validated spec (paths resolved).
        source: Named in messages; defaults to ``study NAME``.
    Returns:
        ``(input_shape, num_classes)`` of the data.
    Raises:
        SpecError: One line naming the study file or the builder's file, function and error.
        DataError: If the data folder or loader is unusable.
    """
    from hpsearch.data import data_shape
    from hpsearch.errors import HpsearchError

    source = source or f"study {spec.name}"
    shape, num_classes = data_shape(spec.data, tuple(spec.python_path))
    metric = spec.objective.metric.removeprefix("val_")
    if spec.model.is_builtin and metric in ("accuracy", "loss"):
        return shape, num_classes
    from hpsearch.model import compile_model, extra_metrics, load_builder, make_model
    from hpsearch.space import first_point

    if not spec.model.is_builtin:
        load_builder(spec.model.builder, spec.python_path)  # a missing module: before keras

    try:
        extra_metrics(spec.objective.metric)
    except ValueError as e:
        raise SpecError(
            f"{source}: `objective.metric` names no Keras metric. Received: "
            f'"{spec.objective.metric}". Example: metric = "val_loss" (or val_accuracy, '
            "val_auc, val_top5_accuracy)"
        ) from e
    config = first_point(spec)
    try:
        built = make_model(config, shape, num_classes, spec.python_path)
        compile_model(built.model, config.train, spec.objective.metric, built.from_logits)
    except SpecError:
        raise
    except HpsearchError as e:
        raise SpecError(
            f"{source}: `model.builder` = {spec.model.builder!r} fails on the space's first "
            f"point ({config.summary()}): {e}"
        ) from e
    import numpy as np

    name = spec.objective.metric.removeprefix("val_")
    try:  # two blank images of class 0: does the model report the metric?
        logs = built.model.evaluate(
            np.zeros((2, *shape), "float32"), np.zeros(2, "int32"), verbose=0, return_dict=True
        )
        problem = None if name in logs else f"the model reports only {', '.join(logs)}"
    except Exception as e:  # noqa: BLE001 - a metric that does not fit integer labels
        problem = one_line(e, 200)
    if problem:
        raise SpecError(
            f"{source}: `objective.metric` cannot be computed. Received: "
            f'"{spec.objective.metric}" ({problem}). Example: metric = "val_loss" (or '
            "val_accuracy, val_auc, val_top5_accuracy)"
        )
    return shape, num_classes
