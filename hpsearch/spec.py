"""Study files: TOML → a validated, immutable :class:`StudySpec`.

A study file names the dataset, the budget, the sampler, the pruner and the search space. Every
dimension of the search space is written in one of three forms::

    n_blocks = 2                                   # fixed, not searched
    n_blocks = {low = 1, high = 3}                 # a range (ints: step; floats: log)
    pooling  = {choices = ["max", "avg"]}          # a choice list

Unknown keys are errors, and every error is one line that names the file, the field, what was
received and a valid example (see :func:`load_spec`). Values are checked strictly: ``true`` or
``"10"`` is not a number, NaN and infinity are refused, and every fixed value, range bound and
choice must lie in its dimension's sensible range (``conv.n_blocks`` 1 to 8, dropouts in
``[0, 1)``, learning rates in ``(0, 10]``...).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import tomllib
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from hpsearch.display import clean, excerpt, has_control
from hpsearch.errors import HpsearchError, SpecError

BUILTIN_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adadelta"]
Activation = Literal["relu", "elu", "gelu", "swish", "leaky_relu", "tanh"]
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
"""A study name: letters, digits, ``_``, ``.``, ``-`` (at most :data:`NAME_MAX_CHARS`)."""
NAME_MAX_CHARS = 100
MAX_FILE_BYTES = 256 << 10
"""A study file is a few kB; a larger one is refused before it is parsed."""
MAX_NESTING = 16
"""Tables and arrays nested deeper than this are refused (the spec itself needs 5 levels)."""
_SEED_MAX = 2**32 - 1
_MAX_CHOICES = 256
Scalar = bool | int | float | Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)]
T = TypeVar("T")


class _Strict(BaseModel):
    # strict: `true` is not 1 and "10" is not 10; NaN and infinity are no numbers here.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _as_dim_dict(value: Any) -> Any:
    """A bare scalar in the TOML file means a fixed value."""
    if isinstance(value, Mapping) or isinstance(value, _Dim):
        return value
    return {"value": value}


class _Dim(_Strict):
    """One search dimension: a fixed ``value``, a ``choices`` list, or a ``low``/``high`` range."""

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_fixed(cls, data: Any) -> Any:
        return _as_dim_dict(data)

    def _check_one_form(self, has_range: bool) -> None:
        choices = getattr(self, "choices", None)
        forms = sum([self.value is not None, choices is not None, has_range])  # type: ignore[attr-defined]
        if forms != 1:
            raise ValueError(
                "give exactly one of a fixed value, {choices = [...]} or {low = ..., high = ...}"
            )
        if choices is not None:
            if len(choices) == 0:
                raise ValueError("the choice list is empty")
            if len(set(map(repr, choices))) != len(choices):
                raise ValueError("the choice list has duplicates")

    @property
    def is_fixed(self) -> bool:
        """True when the dimension is a single fixed value (not an Optuna parameter)."""
        choices = getattr(self, "choices", None)
        return self.value is not None or (choices is not None and len(choices) == 1)  # type: ignore[attr-defined]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can take (for warm-start checks)."""
        if getattr(self, "value", None) is not None:
            return bool(value == self.value)  # type: ignore[attr-defined]
        choices = getattr(self, "choices", None)
        if choices is not None:
            return any(type(value) is type(c) and value == c for c in choices) or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and any(not isinstance(c, bool) and value == c for c in choices)
            )
        low, high = getattr(self, "low"), getattr(self, "high")
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        )

    def numbers(self) -> list[float]:
        """Every number the dimension names: its fixed value, its bounds and its choices."""
        values = [getattr(self, key, None) for key in ("value", "low", "high")]
        values += getattr(self, "choices", None) or []
        return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]

    def to_toml(self) -> str:
        """The dimension written back as TOML (for examples and ``hpsearch validate``)."""
        data = self.model_dump(exclude_none=True, exclude_defaults=True)
        if "value" in data:
            return _toml_value(data["value"])
        if "choices" not in data:
            data.setdefault("low", getattr(self, "low"))
            data.setdefault("high", getattr(self, "high"))
        return _toml_value(data)


class IntDim(_Dim):
    """An integer dimension: ``3``, ``{low = 1, high = 3}``, or ``{choices = [32, 64]}``."""

    value: int | None = None
    low: int | None = None
    high: int | None = None
    step: int = Field(1, gt=0, le=1_000_000)
    log: bool = False
    choices: list[int] | None = Field(None, max_length=_MAX_CHOICES)

    @model_validator(mode="after")
    def _check(self) -> IntDim:
        _check_range(self, self.low, self.high)
        if self.log and self.step != 1:
            raise ValueError(f"a log range needs step = 1, got step = {excerpt(self.step)}")
        return self


class FloatDim(_Dim):
    """A float dimension: ``0.5``, ``{low = 1e-4, high = 0.1, log = true}`` or a choice list."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float] | None = Field(None, max_length=_MAX_CHOICES)

    @model_validator(mode="after")
    def _check(self) -> FloatDim:
        _check_range(self, self.low, self.high)
        return self


class CatDim(_Dim, Generic[T]):
    """A categorical dimension: ``"relu"`` or ``{choices = ["relu", "gelu"]}``."""

    value: T | None = None
    choices: list[T] | None = Field(None, max_length=_MAX_CHOICES)

    @model_validator(mode="after")
    def _check(self) -> CatDim[T]:
        self._check_one_form(has_range=False)
        return self


def _check_range(dim: _Dim, low: float | None, high: float | None) -> None:
    if (low is None) != (high is None):
        raise ValueError("a range needs both low and high")
    dim._check_one_form(has_range=low is not None)
    if low is None or high is None:
        return
    if low > high:
        raise ValueError(f"low must be <= high, got low={excerpt(low)} > high={excerpt(high)}")
    if getattr(dim, "log", False) and low <= 0:
        raise ValueError(f"a log range needs low > 0, got low={excerpt(low)}")
    if isinstance(dim, FloatDim) and not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")


def _within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Any:
    """A field check: every value, bound and choice of the dimension lies in the interval."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def check(dim: _Dim | None) -> _Dim | None:
        for x in dim.numbers() if dim is not None else []:
            if x < low or x > high or (open_low and x == low) or (open_high and x == high):
                raise ValueError(
                    f"every value, bound and choice must be in {interval}; {excerpt(x)} is not"
                )
        return dim

    return AfterValidator(check)


BoolDim = CatDim[bool]
Count = Annotated[IntDim, _within(1, 8)]
Fraction = Annotated[FloatDim, _within(0, 1, open_high=True)]
LearningRate = Annotated[FloatDim, _within(0, 10, open_low=True)]


class DataSpec(_Strict):
    """Which data to train on and how the validation set is held out of the training set.

    ``dataset`` is a built-in name, a ``.npz`` file or a folder of images in class subfolders
    (``keras.utils.image_dataset_from_directory`` conventions; with ``train/`` and ``test/``
    subfolders, or else ``test_fraction`` of the images held out for test). ``loader`` names a
    function ``module:function`` returning ``(x_train, y_train), (x_test, y_test)`` instead.
    Relative paths are relative to the study file's folder.
    """

    dataset: str | None = Field(None, examples=["fashion_mnist"], max_length=4096)
    loader: str | None = Field(None, examples=["mydata:load"], max_length=300)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, le=_SEED_MAX)
    train_subset: int | None = Field(None, gt=0, le=10**9, examples=[12000])
    # a TOML array: [height, width] (strict mode would want a tuple)
    image_size: tuple[int, int] | None = Field(None, strict=False, examples=[[64, 64]])
    color_mode: Literal["rgb", "grayscale", "rgba"] = "rgb"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str | None) -> str | None:
        if value is not None and has_control(value):
            raise ValueError("a dataset name or path has no control characters")
        if value is not None and not value.strip():
            raise ValueError(
                f"give one of {', '.join(BUILTIN_DATASETS)}, a .npz file or a folder of images"
            )
        return value

    @field_validator("loader")
    @classmethod
    def _loader_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value)

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= v <= 8192 for v in value):
            raise ValueError("image_size needs two whole numbers from 1 to 8192: [height, width]")
        return value

    @field_validator("image_size", mode="before")
    @classmethod
    def _two_whole_numbers(cls, value: Any) -> Any:
        if value is not None and not (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(type(v) is int for v in value)
        ):
            raise ValueError("image_size needs two whole numbers: [height, width]")
        return value

    @model_validator(mode="after")
    def _dataset_or_loader(self) -> DataSpec:
        if (self.dataset is None) == (self.loader is None):
            raise ValueError(
                "give exactly one of dataset (a name, .npz file or image folder) or loader"
            )
        return self

    @property
    def kind(self) -> Literal["builtin", "npz", "folder", "loader"]:
        """Where the data comes from."""
        if self.loader is not None:
            return "loader"
        assert self.dataset is not None
        if self.dataset in BUILTIN_DATASETS:
            return "builtin"
        return "npz" if self.dataset.endswith(".npz") else "folder"

    @property
    def label(self) -> str:
        """A short name for the data: the dataset, or ``loader mydata:load``."""
        return self.dataset if self.dataset is not None else f"loader {self.loader}"


_REFERENCE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


def check_reference(value: str) -> str:
    """Check a ``module:function`` reference such as ``mymodels:build_resnet``."""
    if not re.fullmatch(_REFERENCE, value):
        raise ValueError(
            "write module:function, e.g. mymodels:build_resnet (the module is a .py file next "
            "to the study file, on PYTHONPATH or in an installed package)"
        )
    return value


BUILTIN_BUILDER = "hpsearch.model:build_cnn"


class ModelSpec(_Strict):
    """Which function builds the model: ``module:function``; defaults to the built-in CNN.

    The function is called as ``build(hp, input_shape, num_classes)`` and returns a Keras model
    (see :func:`hpsearch.model.build_cnn`). Its own parameters are searched from
    ``[search.model]``.
    """

    builder: str = Field(BUILTIN_BUILDER, examples=["mymodels:build_resnet"])

    @field_validator("builder")
    @classmethod
    def _builder_reference(cls, value: str) -> str:
        return check_reference(value)

    @property
    def is_builtin(self) -> bool:
        """True for hpsearch's own CNN family."""
        return self.builder == BUILTIN_BUILDER


class BudgetSpec(_Strict):
    """How much to search: trials (complete or pruned), epochs per trial, wall time per worker.

    ``trial_timeout_s`` fails a trial (reason ``timeout``) whose training time passes it,
    checked after every epoch.
    """

    n_trials: int = Field(gt=0, le=1_000_000, examples=[100])
    max_epochs: int = Field(gt=0, le=100_000, examples=[30])
    timeout_s: float | None = Field(None, gt=0, le=1e9, examples=[3600])
    trial_timeout_s: float | None = Field(None, gt=0, le=1e9, examples=[1800])
    max_consecutive_failures: int = Field(5, gt=0, le=1_000_000)


_MINIMIZED = ("loss", "error", "crossentropy", "hinge", "divergence")


class ObjectiveSpec(_Strict):
    """What is optimized: a metric the model reports each epoch, and its direction.

    ``metric`` is ``val_accuracy`` (default), ``val_loss``, or ``val_<name>`` of a Keras
    metric (``val_auc``, ``val_top5_accuracy``, ...). ``direction`` defaults to ``minimize``
    for losses and errors and to ``maximize`` otherwise. Test accuracy is recorded but never
    used for selection. ``test_top = N`` evaluates the test set only for a trial that ranks
    among the study's N best complete trials when it completes (by default every complete
    trial is tested); the N best at the end are always among them.
    """

    metric: str = Field(
        "val_accuracy", pattern=r"^[A-Za-z0-9_]+$", max_length=100, examples=["val_loss"]
    )
    direction: Literal["maximize", "minimize"] = "maximize"
    test_top: int | None = Field(None, gt=0, le=1_000_000, examples=[5])

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "direction" not in data:
            metric = str(data.get("metric", "val_accuracy"))
            minimize = any(word in metric for word in _MINIMIZED)
            return {**data, "direction": "minimize" if minimize else "maximize"}
        return data


class SamplerSpec(_Strict):
    """Optuna sampler: TPE (default), random search or CMA-ES."""

    kind: Literal["tpe", "random", "cmaes"] = "tpe"
    seed: int | None = Field(None, ge=0, le=_SEED_MAX, examples=[42])
    n_startup_trials: int = Field(10, ge=0, le=1_000_000)


class PrunerSpec(_Strict):
    """Optuna pruner that stops unpromising trials after an epoch; step = epochs run."""

    kind: Literal["hyperband", "successive_halving", "median", "none"] = "hyperband"
    min_resource: int = Field(1, gt=0, le=100_000)
    reduction_factor: int = Field(3, ge=2, le=100)
    n_startup_trials: int = Field(5, ge=0, le=1_000_000)
    n_warmup_steps: int = Field(1, ge=0, le=100_000)
    data_fractions: list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=list, max_length=100, examples=[[0.125, 0.25, 0.5]]
    )
    """Training-set size as a fidelity: epoch k (1, 2, ...) trains on the first
    ``data_fractions[k-1]`` of the (shuffled) training images, later epochs on all of them. Each
    epoch is still one step for the pruner, so early rungs judge trials on less data at a
    fraction of the cost, and a promoted trial continues from its checkpoint on more data."""

    @model_validator(mode="after")
    def _fractions_grow(self) -> PrunerSpec:
        f = self.data_fractions
        if any(b < a for a, b in zip(f, f[1:], strict=False)):
            raise ValueError(
                f"data_fractions must not shrink from one epoch to the next, got {f}; "
                "example: data_fractions = [0.125, 0.25, 0.5]"
            )
        return self

    def data_fraction(self, epoch: int) -> float:
        """Share of the training images that epoch ``epoch`` (0-based) trains on."""
        return self.data_fractions[epoch] if epoch < len(self.data_fractions) else 1.0


class ConvSpace(_Strict):
    """Convolutional blocks: each block is conv layers, then pooling, then dropout.

    Filters come either from ``filters_base`` × ``filters_growth`` ** k (k counts blocks or
    layers, see ``growth_every``), or, with ``filters``, are searched separately per block.
    """

    n_blocks: Count = IntDim(low=1, high=3)
    layers_per_block: Count = IntDim(low=1, high=2)
    filters_base: Annotated[IntDim | None, _within(1, 4096)] = IntDim(choices=[16, 32, 64])
    filters_growth: Annotated[FloatDim, _within(1, 4)] = FloatDim(choices=[1.0, 2.0])
    growth_every: Literal["block", "layer"] = "block"
    max_filters: int = Field(512, gt=0, le=16384)
    filters: Annotated[IntDim | None, _within(1, 4096)] = None
    kernel_size: Annotated[IntDim, _within(1, 15)] = IntDim(choices=[3, 5])
    padding: CatDim[Literal["same", "valid"]] = CatDim[Literal["same", "valid"]](value="same")
    batch_norm: BoolDim = BoolDim(choices=[False, True])
    pooling: CatDim[Literal["max", "avg"]] = CatDim[Literal["max", "avg"]](value="max")
    dropout: Fraction = FloatDim(low=0.0, high=0.5)

    @model_validator(mode="before")
    @classmethod
    def _per_block_filters_replace_base(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "filters" in data and "filters_base" not in data:
            return {**data, "filters_base": None}
        return data

    @model_validator(mode="after")
    def _one_filter_scheme(self) -> ConvSpace:
        if (self.filters is None) == (self.filters_base is None):
            raise ValueError("give either filters_base (with filters_growth) or filters, not both")
        return self


class DenseSpace(_Strict):
    """Fully connected layers between the conv blocks and the softmax."""

    n_layers: Annotated[IntDim, _within(0, 8)] = IntDim(low=1, high=2)
    units: Annotated[IntDim, _within(1, 16384)] = IntDim(choices=[64, 128, 256])
    dropout: Fraction = FloatDim(low=0.0, high=0.6)


class SGDSpace(_Strict):
    """Sub-parameters searched only when the optimizer is SGD."""

    lr: Annotated[FloatDim | None, _within(0, 10, open_low=True)] = None
    momentum: Fraction = FloatDim(low=0.5, high=0.99)
    nesterov: BoolDim = BoolDim(choices=[False, True])


class RMSpropSpace(_Strict):
    """Sub-parameters searched only when the optimizer is RMSprop."""

    lr: Annotated[FloatDim | None, _within(0, 10, open_low=True)] = None
    rho: Fraction = FloatDim(value=0.9)
    momentum: Fraction = FloatDim(value=0.0)


class AdamSpace(_Strict):
    """Sub-parameters searched only when the optimizer is Adam or AdamW."""

    lr: Annotated[FloatDim | None, _within(0, 10, open_low=True)] = None
    beta_1: Fraction = FloatDim(value=0.9)


class AdadeltaSpace(_Strict):
    """Sub-parameters searched only when the optimizer is Adadelta (it wants lr near 1)."""

    lr: Annotated[FloatDim | None, _within(0, 10, open_low=True)] = FloatDim(
        low=0.05, high=1.0, log=True
    )
    rho: Fraction = FloatDim(value=0.95)


class OptimizerSpace(_Strict):
    """Optimizer choice; ``lr`` and ``weight_decay`` are shared, the rest is per optimizer."""

    name: CatDim[OptimizerName] = CatDim[OptimizerName](
        choices=["sgd", "adam", "adamw", "rmsprop", "adadelta"]
    )
    lr: LearningRate = FloatDim(low=1e-4, high=1e-1, log=True)
    weight_decay: Annotated[FloatDim, _within(0, 1)] = FloatDim(choices=[0.0, 1e-5, 1e-4])
    sgd: SGDSpace = SGDSpace()
    rmsprop: RMSpropSpace = RMSpropSpace()
    adam: AdamSpace = AdamSpace()
    adamw: AdamSpace = AdamSpace()
    adadelta: AdadeltaSpace = AdadeltaSpace()


class TrainingSpace(_Strict):
    """Training loop settings that are searched."""

    batch_size: Annotated[IntDim, _within(1, 65536)] = IntDim(choices=[32, 64, 128])


class AugmentSpace(_Strict):
    """Light, label-preserving augmentation (active only while training)."""

    flip: BoolDim = BoolDim(value=False)
    translate: Fraction = FloatDim(value=0.0)


def _model_dim(value: Any) -> _Dim:
    """A ``[search.model]`` dimension, typed by its values (ints, floats or anything else)."""
    data = _as_dim_dict(value)
    if isinstance(data, _Dim):
        return data
    data = {k: v for k, v in data.items() if v is not None}
    values = [data[k] for k in ("value", "low", "high") if k in data]
    values += list(data.get("choices") or [])
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numbers and all(isinstance(v, int) for v in values) and values:
        return IntDim.model_validate(data)
    if numbers and values:
        return FloatDim.model_validate(data)
    return CatDim[Scalar].model_validate(data)


class SearchSpace(_Strict):
    """The whole search space: architecture, optimizer, training and augmentation.

    ``conv``, ``dense`` and ``activation`` belong to the built-in CNN; a custom builder gets the
    parameters of ``model`` (``[search.model]``, any names, same dimension syntax) instead.
    """

    model: dict[str, Any] = Field(default_factory=dict, examples=[{"depth": {"choices": [2, 3]}}])
    activation: CatDim[Activation] = CatDim[Activation](choices=["relu", "gelu"])
    conv: ConvSpace = ConvSpace()
    dense: DenseSpace = DenseSpace()
    optimizer: OptimizerSpace = OptimizerSpace()
    training: TrainingSpace = TrainingSpace()
    augment: AugmentSpace = AugmentSpace()

    @field_validator("model", mode="before")
    @classmethod
    def _model_dims(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("[search.model] is a table of parameter = dimension")
        out = {}
        for key, dim in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                raise ValueError(f"parameter name {key!r} must be a Python identifier")
            try:
                out[str(key)] = _model_dim(dim)
            except ValidationError as e:
                msg = e.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"{key}: {msg}") from None
        return out


class StudySpec(_Strict):
    """A whole study file. See ``studies/fashion_mnist.toml`` for an annotated example."""

    # pydantic's patterns are Rust regexes: `$` is the end of the text, never before a "\n".
    name: str = Field(
        pattern=rf"^{NAME_PATTERN}$",
        max_length=NAME_MAX_CHARS,
        examples=["fashion_mnist_quick"],
    )
    description: str = Field("", max_length=10_000)
    data: DataSpec = Field(examples=[{"dataset": "fashion_mnist"}])
    budget: BudgetSpec
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    model: ModelSpec = ModelSpec()
    search: SearchSpace = SearchSpace()
    python_path: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list, max_length=100, examples=[["src"]]
    )
    warm_start: list[
        dict[Annotated[str, StringConstraints(max_length=NAME_MAX_CHARS)], Scalar]
    ] = Field(
        default_factory=list,
        max_length=1000,
        examples=[[{"conv.n_blocks": 1, "optimizer.name": "sgd", "optimizer.lr": 0.01}]],
    )

    @property
    def uses_custom_code(self) -> bool:
        """True when the study imports the user's own builder or loader."""
        return not self.model.is_builtin or self.data.loader is not None

    def portable_dump(self) -> dict[str, Any]:
        """The spec as JSON data, without newer fields left at their defaults.

        What a study stores: an earlier hpsearch can still read it unless it uses a newer
        feature, and a study launched by an earlier hpsearch keeps its fingerprint.
        """
        data = self.model_dump(mode="json")
        for section, key, default in _NEWER_DEFAULTS:
            table = data.get(section, {}) if section else data
            if key in table and table[key] == default:
                del table[key]
        return data

    def fingerprint(self) -> str:
        """A stable hash of the validated spec; a changed spec gets a different one."""
        canonical = json.dumps(self.portable_dump(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_NEWER_DEFAULTS: list[tuple[str, str, Any]] = [
    ("", "model", {"builder": BUILTIN_BUILDER}),
    ("", "python_path", []),
    ("search", "model", {}),
    ("data", "loader", None),
    ("data", "image_size", None),
    ("data", "color_mode", "rgb"),
    ("data", "test_fraction", 0.2),
    ("pruner", "data_fractions", []),
    ("objective", "test_top", None),
]


def load_spec(path: str | Path) -> StudySpec:
    """Load and validate a study spec from a TOML file.

    Args:
        path: Path to a ``studies/*.toml`` file.
    Returns:
        The validated, immutable spec.
    Raises:
        SpecError: If the file is missing, not valid TOML, or a field is invalid. The message is
            one line: file, field path, what was received and a valid example.

    Example:
        >>> spec = load_spec("studies/smoke.toml")
        >>> spec.data.dataset
        'fashion_mnist'
    """
    path = Path(path)
    raw = read_toml(path, "study file", example="n_trials = 100")
    return spec_from_dict(raw, source=clean(path, 300), base_dir=path.parent)


def read_toml(
    path: Path,
    what: str,
    *,
    error: type[HpsearchError] = SpecError,
    example: str = 'name = "my_study"',
) -> dict[str, Any]:
    """Read a small TOML file (a study, a site profile, a baselines file) with one-line errors.

    Args:
        path: The file.
        what: What it is, for messages ("study file").
        error: The error class to raise.
        example: A valid line, for the "not valid TOML" message.
    Returns:
        The parsed tables.
    Raises:
        HpsearchError: ``error``, if the file cannot be read, is larger than
            :data:`MAX_FILE_BYTES`, is not UTF-8, is not valid TOML or nests tables or arrays
            deeper than :data:`MAX_NESTING` levels.
    """
    where = clean(path, 300)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or clean(e, 200)
        raise error(f"{where}: cannot read the {what} ({reason})") from e
    if len(data) > MAX_FILE_BYTES:
        raise error(
            f"{where}: the {what} is larger than {MAX_FILE_BYTES >> 10} KiB; is it the right "
            f"file? Example: {example}"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(
            f"{where}: the {what} is not UTF-8 text (byte {data[e.start]:#04x} at offset "
            f"{e.start} cannot be decoded). Save it as UTF-8"
        ) from e
    try:
        raw = tomllib.loads(text)
    except RecursionError as e:
        raise error(
            f"{where}: tables or arrays nested deeper than Python can parse (more than "
            f"{MAX_NESTING} levels are refused). Example: {example}"
        ) from e
    except ValueError as e:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise error(f"{where}: not valid TOML: {clean(e, 200)}. Example: {example}") from e
    if _nesting(raw) > MAX_NESTING:
        raise error(
            f"{where}: tables or arrays nested more than {MAX_NESTING} levels deep. "
            f"Example: {example}"
        )
    return raw


def _nesting(value: Any) -> int:
    """How deep tables and arrays nest (up to one past the limit; iterative, no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def spec_from_dict(
    raw: Mapping[str, Any], source: str = "<spec>", base_dir: str | Path | None = None
) -> StudySpec:
    """Validate an already parsed study spec (for example one stored with a study).

    Args:
        raw: The parsed TOML tables.
        source: Named in error messages (the file, or ``study NAME (stored spec)``).
        base_dir: Resolve relative data paths and ``python_path`` against this folder and
            check that they exist (the study file's folder). None: take the paths as stored.
    Raises:
        SpecError: If a field is invalid or a path does not exist.
    """
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_validation_error(source, e)) from e
    _check_builder_space(spec, source)
    _check_warm_start(spec, source)
    if base_dir is not None:
        spec = _resolve_paths(spec, Path(base_dir), source)
    return spec


def _resolve_paths(spec: StudySpec, base: Path, source: str) -> StudySpec:
    """Make data paths and ``python_path`` absolute (so every worker reads the same files)."""
    base = base.resolve()
    data = spec.data
    if data.kind in ("npz", "folder"):
        assert data.dataset is not None
        path = (base / Path(data.dataset).expanduser()).resolve()
        wanted = "file" if data.kind == "npz" else "folder"
        if not (path.is_file() if data.kind == "npz" else path.is_dir()):
            raise SpecError(
                f"{source}: `data.dataset` is not a built-in dataset and no such {wanted} "
                f"exists. Received: {_toml_value(data.dataset)} (looked for {path}). Example: "
                f'dataset = "fashion_mnist" (built-in: {", ".join(BUILTIN_DATASETS)}), '
                'dataset = "data.npz" or dataset = "images/" (a folder of class subfolders)'
            )
        data = data.model_copy(update={"dataset": str(path)})
    python_path = [str((base / Path(p).expanduser()).resolve()) for p in spec.python_path]
    for given, resolved in zip(spec.python_path, python_path):
        if not Path(resolved).is_dir():
            raise SpecError(
                f"{source}: `python_path` names a folder that does not exist. Received: "
                f'{_toml_value(given)} (looked for {resolved}). Example: python_path = ["src"]'
            )
    if spec.uses_custom_code and not python_path:
        python_path = [str(base)]  # modules next to the study file
    return spec.model_copy(update={"data": data, "python_path": python_path})


def _check_builder_space(spec: StudySpec, source: str) -> None:
    """``[search.model]`` goes with a custom builder; conv/dense/activation with the built-in."""
    search = spec.search
    if spec.model.is_builtin and search.model:
        first = next(iter(search.model))
        raise SpecError(
            f"{source}: `search.model.{first}` is a parameter of a custom builder, but "
            f"[model] builder is not set. Received: {first} = {search.model[first].to_toml()}. "
            'Example: [model] builder = "mymodels:build_resnet"'
        )
    if not spec.model.is_builtin:
        default = SearchSpace()
        for name in ("activation", "conv", "dense"):
            if getattr(search, name) != getattr(default, name):
                raise SpecError(
                    f"{source}: `search.{name}` belongs to the built-in CNN, not to builder "
                    f"{spec.model.builder}. Received: a [search.{name}] table. Example: "
                    "[search.model] depth = {choices = [2, 3]} (the builder's own parameters)"
                )


def _check_warm_start(spec: StudySpec, source: str) -> None:
    from hpsearch.space import param_dimensions
    from hpsearch.transfer import is_transfer, transfer_entry

    dims = param_dimensions(spec.search, spec.model.builder)
    for i, config in enumerate(spec.warm_start):
        if is_transfer(config):  # an earlier study's best trials: checked here, read at launch
            transfer_entry(i, config, source)
            continue
        for key, value in config.items():
            where = f"{source}: `warm_start[{i}].{clean(key, 40)}`"
            if key not in dims:
                names = ", ".join(sorted(dims))
                raise SpecError(
                    f"{where} is not a parameter of this search space. Received: "
                    f"{excerpt(key, 40)}. Valid names: {clean(names, 220)}"
                )
            if not dims[key].contains(value):
                raise SpecError(
                    f"{where} is outside its search dimension. Received: {excerpt(value)}. "
                    f"Example: {key.rsplit('.', 1)[-1]} = {dims[key].to_toml()}"
                )


def _format_validation_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    loc: Sequence[Any] = [p for p in first["loc"] if p != "value"]
    kind, msg = first["type"], first["msg"].removeprefix("Value error, ")
    if loc[:1] == ["warm_start"] and len(loc) >= 3:
        # `warm_start[0].conv.n_blocks`, without the union member pydantic tried last.
        loc = [f"warm_start[{loc[1]}]", *loc[2:3]]
        if kind.endswith("_type") or kind == "finite_number":
            msg = "must be a finite number, a short string or true/false"
    field = ".".join(clean(p, 30) for p in loc) or "(top level)"
    example_loc = loc
    if kind == "extra_forbidden":
        example_loc = loc[:-1]  # an example of the table the unknown key is in
        parent_fields = _fields_at(loc[:-1])
        msg = "is not a known field" + (
            f" (valid here: {', '.join(parent_fields)})" if parent_fields else ""
        )
    elif kind == "missing":
        msg = "is required"
    else:
        msg = f"is invalid: {msg}"
    received = "nothing" if kind == "missing" else excerpt(first.get("input"))
    msg = clean(msg, 200)
    example = _example_at(example_loc)
    return f"{source}: `{field}` {msg}. Received: {received}. Example: {example}"


def _field_at(loc: Sequence[Any]) -> tuple[str, FieldInfo] | None:
    """Walk the spec models along ``loc``; return the deepest (name, field) found."""
    model: Any = StudySpec
    found: tuple[str, FieldInfo] | None = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        is_dim = isinstance(model, type) and issubclass(model, _Dim)
        if is_dim or not isinstance(part, str) or not fields or part not in fields:
            break
        found = (part, fields[part])
        model = _model_type(fields[part].annotation)
    return found


def _fields_at(loc: Sequence[Any]) -> list[str]:
    model: Any = StudySpec
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = _model_type(fields[part].annotation)
    return list(getattr(model, "model_fields", {}))


def _model_type(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _example_at(loc: Sequence[Any]) -> str:
    if loc and str(loc[0]).startswith("warm_start"):
        return '[[warm_start]] "optimizer.lr" = 0.01'
    found = _field_at(loc)
    if found is None:
        return 'name = "my_study"'
    name, info = found
    if info.examples:
        return f"{name} = {_toml_value(info.examples[0])}"
    table = info.annotation
    if info.is_required() and isinstance(table, type) and issubclass(table, BaseModel):
        required = [
            f"{key} = {_toml_value(field.examples[0]) if field.examples else '...'}"
            for key, field in table.model_fields.items()
            if field.is_required()
        ]
        return f"[{'.'.join(str(p) for p in loc)}] " + ", ".join(required)
    default = info.get_default(call_default_factory=True)
    if isinstance(default, _Dim):
        return f"{name} = {default.to_toml()}"
    if isinstance(default, BaseModel):
        first = next(iter(type(default).model_fields))
        return (
            f"[{'.'.join(str(p) for p in loc)}] {first} = {_toml_value(getattr(default, first))}"
        )
    if default is None and isinstance(info.annotation, type):
        return f"{name} = ..."
    return f"{name} = {_toml_value(default)}"


def _toml_value(value: Any) -> str:
    """Render a value as an inline TOML literal (for messages and ``validate`` output)."""
    if isinstance(value, _Dim):
        return value.to_toml()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return "(none)"
    return repr(value)
