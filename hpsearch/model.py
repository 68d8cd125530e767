"""Keras 3 CNN builder from a resolved configuration (no Optuna here; backend-agnostic).

The workshop CNN (Conv32-Conv64-MaxPool-Dropout0.25-Dense128-Dropout0.5) is
:data:`WORKSHOP_CNN`; on 28×28×1 inputs it has exactly 1,199,882 parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


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
    """Everything needed to build and train one trial's model."""

    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form (stored with exported models)."""
        return asdict(self)

    def summary(self) -> str:
        """One line such as ``conv 32-64 k3 | dense 128 | sgd lr=0.01 bs=32``."""
        m, t = self.model, self.train
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


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    """Compile with sparse categorical cross-entropy and accuracy."""
    model.compile(
        optimizer=make_optimizer(config),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _activation(name: str) -> Any:
    if name == "leaky_relu":
        import keras

        return keras.activations.leaky_relu
    return name
