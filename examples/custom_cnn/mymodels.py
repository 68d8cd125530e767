"""A small residual CNN, written as a researcher would, for hpsearch to search.

hpsearch calls ``build_resnet(hp, input_shape, num_classes)`` once per trial: ``hp`` holds this
builder's own parameters from ``[search.model]`` (``hp["depth"]``, ``hp["width"]``, ...) and the
shared ones (``hp["optimizer.lr"]``, ...). Return an uncompiled Keras model; hpsearch compiles it
with the searched optimizer and puts the searched augmentation in front of it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def residual_block(x: Any, width: int, stride: int) -> Any:
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 conv when the shape changes)."""
    shortcut = x
    y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=0.9)(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    if stride != 1 or shortcut.shape[-1] != width:
        shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization(momentum=0.9)(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet(
    hp: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """A tiny ResNet: a stem, ``depth`` stages of one residual block each, global pooling.

    Args:
        hp: ``depth`` (stages; the width doubles and the resolution halves at each),
            ``width`` (filters of the first stage) and ``dropout`` (before the classifier).
        input_shape: Shape of one image, e.g. ``(28, 28, 1)``.
        num_classes: Number of classes.
    """
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(hp["width"], 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    for stage in range(hp["depth"]):
        x = residual_block(x, hp["width"] * 2**stage, stride=1 if stage == 0 else 2)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(hp.get("dropout", 0.0))(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_resnet")
