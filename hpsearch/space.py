"""Search space: spec dimensions → ``trial.suggest_*`` → a concrete :class:`TrialConfig`.

Parameter names mirror the spec paths (``conv.n_blocks``, ``optimizer.lr``,
``optimizer.sgd.momentum``) and are the same in the study file's ``warm_start``, in Optuna and on
the dashboard. Optimizer sub-parameters are conditional: ``optimizer.sgd.nesterov`` is only
sampled for trials whose ``optimizer.name`` is ``sgd``.

The same function rebuilds the configuration of a finished trial from its parameters, through
:class:`optuna.trial.FixedTrial` (see :func:`config_from_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.model import ModelConfig, TrainConfig, TrialConfig
from hpsearch.spec import BUILTIN_BUILDER, CatDim, FloatDim, IntDim, SearchSpace, StudySpec, _Dim

_Suggestable = optuna.trial.BaseTrial


def suggest(trial: _Suggestable, name: str, dim: _Dim) -> Any:
    """Sample one dimension: fixed values and one-item choice lists are not Optuna params."""
    value = getattr(dim, "value", None)
    if value is not None:
        return value
    choices = getattr(dim, "choices", None)
    if choices is not None:
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)
    if isinstance(dim, IntDim):
        assert dim.low is not None and dim.high is not None
        return trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, FloatDim):
        assert dim.low is not None and dim.high is not None
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    raise TypeError(f"cannot sample {type(dim).__name__} {name}")


def sample_config(
    trial: _Suggestable, space: SearchSpace, builder: str = BUILTIN_BUILDER
) -> TrialConfig:
    """Sample a full model + training configuration for ``trial`` from ``space``.

    With a custom ``builder``, the architecture is its ``[search.model]`` parameters (Optuna
    names ``model.<name>``) instead of the built-in CNN's conv/dense/activation.
    """
    if builder != BUILTIN_BUILDER:
        params = {key: suggest(trial, f"model.{key}", dim) for key, dim in space.model.items()}
        flip, translate = _sample_augment(trial, space)
        return TrialConfig(None, _sample_train(trial, space), builder, params, flip, translate)
    conv, dense = space.conv, space.dense
    n_blocks = suggest(trial, "conv.n_blocks", conv.n_blocks)
    layers = suggest(trial, "conv.layers_per_block", conv.layers_per_block)
    if conv.filters is not None:
        per_block = [suggest(trial, f"conv.filters_{b}", conv.filters) for b in range(n_blocks)]
        filters = tuple(tuple([per_block[b]] * layers) for b in range(n_blocks))
    else:
        assert conv.filters_base is not None
        base = suggest(trial, "conv.filters_base", conv.filters_base)
        growth = suggest(trial, "conv.filters_growth", conv.filters_growth)
        filters = tuple(
            tuple(
                min(
                    conv.max_filters,
                    round(
                        base * growth ** (b if conv.growth_every == "block" else b * layers + i)
                    ),
                )
                for i in range(layers)
            )
            for b in range(n_blocks)
        )
    model = ModelConfig(
        conv_filters=filters,
        kernel_size=suggest(trial, "conv.kernel_size", conv.kernel_size),
        padding=suggest(trial, "conv.padding", conv.padding),
        batch_norm=suggest(trial, "conv.batch_norm", conv.batch_norm),
        pooling=suggest(trial, "conv.pooling", conv.pooling),
        conv_dropout=suggest(trial, "conv.dropout", conv.dropout),
        dense_units=tuple(
            suggest(trial, "dense.units", dense.units)
            for _ in range(suggest(trial, "dense.n_layers", dense.n_layers))
        ),
        dense_dropout=suggest(trial, "dense.dropout", dense.dropout),
        activation=suggest(trial, "activation", space.activation),
    )
    flip, translate = _sample_augment(trial, space)
    model = ModelConfig(**{**model.__dict__, "flip": flip, "translate": translate})
    return TrialConfig(model=model, train=_sample_train(trial, space))


def _sample_augment(trial: _Suggestable, space: SearchSpace) -> tuple[bool, float]:
    return (
        suggest(trial, "augment.flip", space.augment.flip),
        suggest(trial, "augment.translate", space.augment.translate),
    )


def _sample_train(trial: _Suggestable, space: SearchSpace) -> TrainConfig:
    opt = space.optimizer
    name = suggest(trial, "optimizer.name", opt.name)
    sub = getattr(opt, name)
    lr = (
        suggest(trial, f"optimizer.{name}.lr", sub.lr)
        if sub.lr is not None
        else suggest(trial, "optimizer.lr", opt.lr)
    )
    extra = {
        key: suggest(trial, f"optimizer.{name}.{key}", getattr(sub, key))
        for key in ("momentum", "nesterov", "rho", "beta_1")
        if key in type(sub).model_fields
    }
    return TrainConfig(
        optimizer=name,
        lr=lr,
        weight_decay=suggest(trial, "optimizer.weight_decay", opt.weight_decay),
        batch_size=suggest(trial, "training.batch_size", space.training.batch_size),
        **extra,
    )


def config_from_params(spec: StudySpec, params: Mapping[str, Any]) -> TrialConfig:
    """Rebuild the configuration of a finished trial from its Optuna parameters."""
    return sample_config(optuna.trial.FixedTrial(dict(params)), spec.search, spec.model.builder)


def first_values(spec: StudySpec) -> dict[str, Any]:
    """Every parameter at its first value: the fixed value, the first choice or the low end."""
    values: dict[str, Any] = {}
    for name, dim in param_dimensions(spec.search, spec.model.builder).items():
        value = getattr(dim, "value", None)
        choices = getattr(dim, "choices", None)
        values[name] = value if value is not None else (choices or [getattr(dim, "low")])[0]
    return values


def first_point(spec: StudySpec) -> TrialConfig:
    """The configuration at the space's first point (see :func:`first_values`)."""
    return config_from_params(spec, first_values(spec))


def param_dimensions(space: SearchSpace, builder: str = BUILTIN_BUILDER) -> dict[str, _Dim]:
    """Every parameter name the space can produce (including conditional ones) → its dimension."""
    conv, opt = space.conv, space.optimizer
    shared: dict[str, _Dim] = {
        "augment.flip": space.augment.flip,
        "augment.translate": space.augment.translate,
        "optimizer.name": opt.name,
        "optimizer.lr": opt.lr,
        "optimizer.weight_decay": opt.weight_decay,
        "training.batch_size": space.training.batch_size,
    }
    for name in ("sgd", "adam", "adamw", "rmsprop", "adadelta"):
        sub = getattr(opt, name)
        for key in type(sub).model_fields:
            if getattr(sub, key) is not None:
                shared[f"optimizer.{name}.{key}"] = getattr(sub, key)
    if builder != BUILTIN_BUILDER:
        return {**{f"model.{k}": d for k, d in space.model.items()}, **shared}
    dims: dict[str, _Dim] = {
        "activation": space.activation,
        "conv.n_blocks": conv.n_blocks,
        "conv.layers_per_block": conv.layers_per_block,
        "conv.kernel_size": conv.kernel_size,
        "conv.padding": conv.padding,
        "conv.batch_norm": conv.batch_norm,
        "conv.pooling": conv.pooling,
        "conv.dropout": conv.dropout,
        "dense.n_layers": space.dense.n_layers,
        "dense.units": space.dense.units,
        "dense.dropout": space.dense.dropout,
    }
    if conv.filters is not None:
        for b in range(_max_of(conv.n_blocks)):
            dims[f"conv.filters_{b}"] = conv.filters
    else:
        assert conv.filters_base is not None
        dims["conv.filters_base"] = conv.filters_base
        dims["conv.filters_growth"] = conv.filters_growth
    return {**dims, **shared}


def searched_params(
    space: SearchSpace, params: Mapping[str, Any], builder: str = BUILTIN_BUILDER
) -> dict[str, Any]:
    """Drop the keys of fixed dimensions (they are not Optuna parameters) from ``params``."""
    dims = param_dimensions(space, builder)
    return {k: v for k, v in params.items() if k in dims and not dims[k].is_fixed}


def describe(space: SearchSpace, builder: str = BUILTIN_BUILDER) -> list[tuple[str, str, str]]:
    """Rows ``(parameter, kind, values)`` describing the resolved space, for ``validate``."""
    names = space.optimizer.name
    used = set(names.choices or ([names.value] if names.value else []))
    rows = []
    for name, dim in param_dimensions(space, builder).items():
        if (
            name.count(".") == 2
            and name.startswith("optimizer.")
            and name.split(".")[1] not in used
        ):
            continue
        kind = (
            "fixed" if dim.is_fixed else ("choice" if getattr(dim, "choices", None) else "range")
        )
        if isinstance(dim, FloatDim) and dim.log and not dim.is_fixed:
            kind += " (log)"
        if name.startswith("optimizer.") and name.count(".") == 2:
            kind += f", only if optimizer.name = {name.split('.')[1]}"
        rows.append((name, kind, dim.to_toml()))
    return rows


def _max_of(dim: IntDim | CatDim[Any]) -> int:
    if dim.value is not None:
        return int(dim.value)
    if dim.choices:
        return int(max(dim.choices))
    return int(getattr(dim, "high"))
