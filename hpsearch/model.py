"""Models from a resolved configuration (no Optuna here; backend-agnostic).

Every model is made by a *builder*, a function with the signature (like KerasTuner's
``build(hp)``)::

    def build(hp: dict, input_shape: tuple[int, ...], num_classes: int) -> keras.Model

``hp`` holds the builder's own parameters by their names in ``[search.model]`` (``hp["depth"]``)
and the shared ones by their dotted names (``hp["optimizer.lr"]``, ``hp["training.batch_size"]``,
``hp["augment.flip"]``). The builder returns an uncompiled model whose output has one score per
class (softmax probabilities, or logits: hpsearch detects which). hpsearch adds the searched
augmentation in front of it and compiles it with the searched optimizer (:func:`make_model`,
:func:`compile_model`). The built-in CNN family is the builder :func:`build_cnn`; its ``hp`` holds
the fields of :class:`ModelConfig`.

The workshop CNN (Conv32-Conv64-MaxPool-Dropout0.25-Dense128-Dropout0.5) is
:data:`WORKSHOP_CNN`; on 28×28×1 inputs it has exactly 1,199,882 parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from hpsearch.errors import HpsearchError
from hpsearch.spec import BUILTIN_BUILDER

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

Builder = Callable[[dict[str, Any], tuple[int, ...], int], "keras.Model"]


class BuilderError(HpsearchError):
    """A model builder raised, returned something that is not a model, or the wrong output."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: ``conv_filters[b][l]`` is the width of conv layer ``l`` of block ``b``."""

    conv_filters: tuple[tuple[int, ...], ...]
    kernel_size: int = 3
    padding: str = "same"
    batch_norm: bool = False
    pooling: str = "max"
    conv_dropout: float = 0.0
    dense_units: tuple[int, ...] = (128,)
    dense_dropout: float = 0.0
    activation: str = "relu"
    flip: bool = False
    translate: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and batch size. Sub-parameters that do not apply to the optimizer are None."""

    optimizer: str
    lr: float
    weight_decay: float = 0.0
    batch_size: int = 32
    momentum: float | None = None
    nesterov: bool | None = None
    rho: float | None = None
    beta_1: float | None = None


@dataclass(frozen=True)
class TrialConfig:
    """Everything needed to build and train one trial's model.

    ``model`` is the built-in CNN's architecture (None for a custom builder); ``params`` are a
    custom builder's own parameters; ``flip`` and ``translate`` the searched augmentation.
    """

    model: ModelConfig | None
    train: TrainConfig
    builder: str = BUILTIN_BUILDER
    params: dict[str, Any] = field(default_factory=dict)
    flip: bool = False
    translate: float = 0.0

    def __post_init__(self) -> None:
        if self.model is not None and (self.model.flip or self.model.translate):
            object.__setattr__(self, "flip", self.model.flip)
            object.__setattr__(self, "translate", self.model.translate)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form (stored with exported models)."""
        return asdict(self)

    def hp(self) -> dict[str, Any]:
        """What the builder gets: its own parameters, then the shared ones (dotted names)."""
        if self.model is not None:
            own = {k: v for k, v in asdict(self.model).items() if k not in ("flip", "translate")}
        else:
            own = dict(self.params)
        t = self.train
        return {
            **own,
            "optimizer.name": t.optimizer,
            "optimizer.lr": t.lr,
            "optimizer.weight_decay": t.weight_decay,
            "training.batch_size": t.batch_size,
            "augment.flip": self.flip,
            "augment.translate": self.translate,
        }

    def summary(self) -> str:
        """One line such as ``conv 32-64 k3 | dense 128 | sgd lr=0.01 bs=32``."""
        m, t = self.model, self.train
        if m is None:
            own = " ".join(f"{k}={_short(v)}" for k, v in self.params.items())
            return (
                f"{self.builder.rsplit(':', 1)[-1]} {own} | {t.optimizer} lr={t.lr:.3g} "
                f"bs={t.batch_size}"
            ).replace("  ", " ")
        conv = "/".join("-".join(map(str, block)) for block in m.conv_filters)
        dense = "-".join(map(str, m.dense_units)) or "none"
        return (
            f"conv {conv} k{m.kernel_size}{' bn' if m.batch_norm else ''} | dense {dense} | "
            f"{m.activation} | {t.optimizer} lr={t.lr:.3g} bs={t.batch_size}"
        )


WORKSHOP_CNN = TrialConfig(
    model=ModelConfig(
        conv_filters=((32, 64),),
        kernel_size=3,
        padding="valid",
        pooling="max",
        conv_dropout=0.25,
        dense_units=(128,),
        dense_dropout=0.5,
    ),
    train=TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, batch_size=32),
)


def build_model(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int, seed: int | None = None
) -> keras.Model:
    """Build the CNN described by ``config`` (softmax output, not compiled).

    Blocks whose input has become too small keep their conv layers (with ``same`` padding)
    but skip pooling, so every sampled configuration builds.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = inputs
    if config.flip or config.translate > 0:
        if config.flip:
            x = layers.RandomFlip("horizontal", seed=seed)(x)
        if config.translate > 0:
            x = layers.RandomTranslation(config.translate, config.translate, seed=seed)(x)
    size = min(input_shape[:2])
    for block in config.conv_filters:
        for filters in block:
            padding = config.padding if size >= config.kernel_size + 1 else "same"
            x = layers.Conv2D(
                filters, config.kernel_size, padding=padding, use_bias=not config.batch_norm
            )(x)
            if padding == "valid":
                size -= config.kernel_size - 1
            if config.batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation(_activation(config.activation))(x)
        if size >= 2:
            pool = layers.MaxPooling2D if config.pooling == "max" else layers.AveragePooling2D
            x = pool(2)(x)
            size //= 2
        if config.conv_dropout > 0:
            x = layers.Dropout(config.conv_dropout, seed=seed)(x)
    x = layers.Flatten()(x)
    for units in config.dense_units:
        x = layers.Dense(units, activation=_activation(config.activation))(x)
        if config.dense_dropout > 0:
            x = layers.Dropout(config.dense_dropout, seed=seed)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def build_cnn(
    hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The built-in CNN family as a builder: ``hp`` holds the fields of :class:`ModelConfig`.

    Args:
        hp: ``conv_filters``, ``kernel_size``, ``dense_units``, ... (see :class:`ModelConfig`);
            other keys (the shared ``optimizer.*`` ones) are ignored.
        input_shape: Shape of one image, e.g. ``(28, 28, 1)``.
        num_classes: Number of classes (softmax units).
    Returns:
        The uncompiled model.
    """
    names = {f.name for f in fields(ModelConfig)} - {"flip", "translate"}
    values = {k: _tuples(v) for k, v in hp.items() if k in names}
    return build_model(ModelConfig(**values), input_shape, num_classes)


def load_builder(reference: str, python_path: Sequence[str] = ()) -> Builder:
    """The builder function named ``module:function`` (the built-in one without importing)."""
    if reference == BUILTIN_BUILDER:
        return build_cnn
    from hpsearch.usercode import import_function

    return import_function(reference, python_path, "model.builder")


@dataclass(frozen=True)
class BuiltModel:
    """A model from :func:`make_model`, and whether its outputs are logits."""

    model: keras.Model
    from_logits: bool


def make_model(
    config: TrialConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    python_path: Sequence[str] = (),
    seed: int | None = None,
) -> BuiltModel:
    """Call the configuration's builder, check its model, and put the augmentation in front.

    Raises:
        BuilderError: If the builder raises, returns something that is not a Keras model, or a
            model whose output is not one score per class. One line, naming the function.
        SpecError: If the builder's module cannot be imported.
    """
    import keras
    import numpy as np

    from hpsearch.usercode import describe, one_line

    builder = load_builder(config.builder, python_path)
    where = describe(builder)
    shape = tuple(int(d) for d in input_shape)
    try:
        model = builder(config.hp(), shape, int(num_classes))
    except Exception as e:  # noqa: BLE001 - any error in the user's builder
        raise BuilderError(f"{where} raised {one_line(e)}") from e
    if not isinstance(model, keras.Model):
        raise BuilderError(
            f"{where} returned {type(model).__name__}, not a keras.Model. Fix: end it with "
            "`return keras.Model(inputs, outputs)`"
        )
    try:
        probe = keras.ops.convert_to_numpy(model(np.zeros((2, *shape), "float32"), training=False))
    except Exception as e:  # noqa: BLE001
        raise BuilderError(
            f"{where}: its model fails on a batch of input shape {shape}: {one_line(e)}"
        ) from e
    if probe.shape != (2, num_classes):
        raise BuilderError(
            f"{where}: the model's output has shape {tuple(probe.shape[1:])} per image; it must "
            f"be ({num_classes},), one score per class. Fix: end with "
            f'layers.Dense(num_classes, activation="softmax")'
        )
    from_logits = not (probe.min() >= 0 and float(np.abs(probe.sum(axis=1) - 1).max()) < 1e-3)
    if config.flip or config.translate > 0:
        from keras import layers

        inputs = keras.Input(shape=shape)
        x = inputs
        if config.flip:
            x = layers.RandomFlip("horizontal", seed=seed)(x)
        if config.translate > 0:
            x = layers.RandomTranslation(config.translate, config.translate, seed=seed)(x)
        model = keras.Model(inputs, model(x), name=f"augmented_{model.name}")
    return BuiltModel(model, from_logits)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The Keras optimizer for ``config``; ``weight_decay`` is Keras 3's decoupled decay."""
    import keras

    wd = config.weight_decay or None
    name = config.optimizer
    if name == "sgd":
        return keras.optimizers.SGD(
            config.lr,
            momentum=config.momentum or 0.0,
            nesterov=bool(config.nesterov),
            weight_decay=wd,
        )
    if name == "adam":
        return keras.optimizers.Adam(config.lr, beta_1=config.beta_1 or 0.9, weight_decay=wd)
    if name == "adamw":
        return keras.optimizers.AdamW(
            config.lr, beta_1=config.beta_1 or 0.9, weight_decay=config.weight_decay
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(
            config.lr, rho=config.rho or 0.9, momentum=config.momentum or 0.0, weight_decay=wd
        )
    if name == "adadelta":
        return keras.optimizers.Adadelta(config.lr, rho=config.rho or 0.95, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    metric: str = "val_accuracy",
    from_logits: bool = False,
) -> None:
    """Compile with sparse categorical cross-entropy, accuracy and the objective's metric.

    Args:
        model: The model to compile.
        config: Optimizer and its parameters.
        metric: The objective's metric (``val_auc`` adds an AUC metric, for example).
        from_logits: The model outputs logits rather than probabilities.
    """
    import keras

    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy", *extra_metrics(metric, from_logits)],
    )


def extra_metrics(metric: str, from_logits: bool = False) -> list[Any]:
    """Keras metrics to compile so that the epoch logs report ``metric``.

    ``loss`` and ``accuracy`` are always there; ``auc`` is a one-vs-rest AUC over all classes
    (integer labels), ``top5_accuracy`` the top-5 accuracy; any other name is passed to
    ``keras.metrics.get``.

    Raises:
        ValueError: If Keras knows no metric of that name.
    """
    import keras

    name = metric.removeprefix("val_")
    if name in ("loss", "accuracy"):
        return []
    if name == "auc":
        return [_sparse_auc(from_logits)]
    if name in ("top5_accuracy", "top_5_accuracy"):
        return [keras.metrics.SparseTopKCategoricalAccuracy(k=5, name=name)]
    found = keras.metrics.get(name)
    return [found if isinstance(found, keras.metrics.Metric) else name]


def _sparse_auc(from_logits: bool) -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="hpsearch")
    class SparseAUC(keras.metrics.AUC):  # type: ignore[misc]
        """AUC for integer labels and one score per class (micro-averaged one-vs-rest)."""

        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            ops = keras.ops
            y_true = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), y_pred.shape[-1])
            if from_logits:
                y_pred = ops.softmax(y_pred)
            return super().update_state(y_true, y_pred, sample_weight)

    return SparseAUC(name="auc")


def _tuples(value: Any) -> Any:
    """Lists (from JSON) back to the tuples :class:`ModelConfig` uses."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _activation(name: str) -> Any:
    if name == "leaky_relu":
        import keras

        return keras.activations.leaky_relu
    return name
