"""Data: real Fashion-MNIST from the local folders, seeded splits, clear errors offline."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hpsearch import data
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    data.load_splits.cache_clear()


def write_idx(folder: Path, n_train: int = 50, n_test: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)))
            f.write(images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + labels.tobytes())


@pytest.mark.usefixtures("fashion_mnist_available")
def test_real_fashion_mnist_split() -> None:
    splits = data.load_splits(DataSpec(dataset="fashion_mnist", val_fraction=0.1, split_seed=0))
    assert splits.x_train.shape == (54000, 28, 28, 1) and splits.x_val.shape == (6000, 28, 28, 1)
    assert splits.x_test.shape == (10000, 28, 28, 1)
    assert splits.input_shape == (28, 28, 1) and splits.n_classes == 10
    assert splits.x_train.dtype == np.float32 and 0.0 <= splits.x_train.min()
    assert splits.x_train.max() <= 1.0
    assert np.bincount(splits.y_val).min() > 500  # all ten classes in the validation set


@pytest.mark.usefixtures("fashion_mnist_available")
def test_split_is_deterministic_and_held_out() -> None:
    spec = DataSpec(dataset="fashion_mnist", val_fraction=0.05, split_seed=3, train_subset=500)
    a = data.load_splits(spec)
    data.load_splits.cache_clear()
    b = data.load_splits(spec)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert len(a.x_train) == 500
    other = data.load_splits(spec.model_copy(update={"split_seed": 4}))
    assert not np.array_equal(a.y_val, other.y_val)
    train_rows = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in train_rows for row in a.x_val)


def test_data_dir_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx(tmp_path / "fashion_mnist")
    monkeypatch.setenv("HPSEARCH_DATA_DIR", str(tmp_path))
    arrays = data.load_arrays("fashion_mnist")
    assert arrays.x_train.shape == (50, 28, 28) and arrays.y_test.shape == (20,)


def test_offline_error_lists_the_paths_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSEARCH_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(data, "DEBIAN_DATA_DIR", tmp_path / "debian")

    def offline(name: str) -> data.Arrays:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataError) as info:
        data.load_arrays("mnist")
    message = str(info.value)
    for tried in (
        tmp_path / "mine" / "mnist",
        tmp_path / "debian" / "mnist",
        tmp_path / "keras" / "datasets" / "mnist",
    ):
        assert str(tried) in message
    assert "keras download failed" in message and "HPSEARCH_DATA_DIR" in message


def test_user_npz(tmp_path: Path) -> None:
    path = tmp_path / "tiny.npz"
    x = np.zeros((30, 16, 16, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(30) % 3, x_test=x[:10], y_test=np.arange(10) % 3)
    splits = data.load_splits(DataSpec(dataset=str(path), val_fraction=0.2))
    assert splits.input_shape == (16, 16, 3) and splits.n_classes == 3
    assert len(splits.x_val) == 6 and len(splits.x_train) == 24


def test_npz_missing_arrays(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 2)))
    with pytest.raises(DataError, match="missing arrays y_train, x_test, y_test"):
        data.load_arrays(str(path))
