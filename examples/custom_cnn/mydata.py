"""A data loader for hpsearch: ``loader = "mydata:load"`` in the study file.

hpsearch calls ``load()`` with no arguments; it returns ``(x_train, y_train), (x_test, y_test)``
like ``keras.datasets.mnist.load_data()``: images (N, H, W) or (N, H, W, C), uint8 or floats in
[0, 1], and integer labels 0..n-1. hpsearch holds the validation set out of the training set.
This one reads a slice of the real Fashion-MNIST files that hpsearch finds on this machine.
"""

from __future__ import annotations

import numpy as np

from hpsearch.data import load_arrays


def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """1,000 training and 500 test images of Fashion-MNIST."""
    arrays = load_arrays("fashion_mnist")
    return (arrays.x_train[:1000], arrays.y_train[:1000]), (
        arrays.x_test[:500],
        arrays.y_test[:500],
    )
