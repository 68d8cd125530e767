"""Datasets: find the files, load them, normalize, and hold out a seeded validation split.

Built-in datasets are looked up, in order, in ``$HPSEARCH_DATA_DIR/<name>``,
``/usr/share/datasets/<name>`` (Debian's ``dataset-*`` packages), the Keras cache
``~/.keras/datasets``, and finally through ``keras.datasets`` (a download). The validation set is
held out of the training set; the test set is only ever used to report.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsearch.display import clean, quoted
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec

_logger = logging.getLogger(__name__)

_FOLDER_NAMES = {
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "mnist": ("mnist",),
    "cifar10": ("cifar10", "cifar-10-batches-py"),
    "cifar100": ("cifar100", "cifar-100-python"),
}
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DEBIAN_DATA_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class Arrays:
    """Raw arrays of a dataset: uint8 images (N, H, W, C) and integer labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Splits:
    """Normalized float32 splits; ``val`` is held out of the training set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, e.g. ``(28, 28, 1)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are 0..n-1)."""
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def candidate_dirs(name: str) -> list[Path]:
    """The folders searched for a built-in dataset, in order."""
    roots = []
    if os.environ.get("HPSEARCH_DATA_DIR"):
        roots.append(Path(os.environ["HPSEARCH_DATA_DIR"]))
    roots += [
        DEBIAN_DATA_DIR,
        Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets",
    ]
    return [root / folder for root in roots for folder in _FOLDER_NAMES[name]]


def load_arrays(dataset: str) -> Arrays:
    """Load a built-in dataset by name, or a user ``.npz`` by path.

    Raises:
        DataError: If the files are not found and the Keras download fails; the message lists
            every path tried and how to provide the files.
    """
    if dataset.endswith(".npz"):
        return _load_npz(Path(dataset))
    tried = []
    for folder in candidate_dirs(dataset):
        tried.append(str(folder))
        arrays = _load_folder(dataset, folder)
        if arrays is not None:
            _logger.info("loaded %s from %s", dataset, folder)
            return arrays
    try:
        return _download(dataset)
    except Exception as e:  # keras raises many kinds of errors offline
        hint = (
            "apt-get install dataset-fashion-mnist"
            if dataset == "fashion_mnist"
            else f"put the Keras files of {dataset} in $HPSEARCH_DATA_DIR/{dataset}/"
        )
        raise DataError(
            f"dataset {quoted(dataset)} not found in {', '.join(tried)}, and the keras download "
            f"failed ({type(e).__name__}: {str(e)[:120]}). Fix: {hint}, or set HPSEARCH_DATA_DIR "
            "to a folder holding it"
        ) from e


@functools.lru_cache(maxsize=4)
def load_splits(spec: DataSpec, python_path: tuple[str, ...] = ()) -> Splits:
    """Load, normalize to [0, 1] and split the spec's data deterministically.

    The validation set is ``val_fraction`` of the training set, drawn with ``split_seed``;
    ``train_subset`` then keeps the first N of the remaining shuffled training images. An image
    folder is decoded straight into its splits (see :func:`folder_splits`); a ``loader`` is
    imported from ``python_path`` (the study's) and called.
    """
    if spec.kind == "folder":
        return folder_splits(spec)
    arrays = call_loader(spec, python_path) if spec.kind == "loader" else None
    if arrays is None:
        assert spec.dataset is not None
        arrays = load_arrays(spec.dataset)
    _warn_if_not_finite(spec.label, arrays)
    rng = np.random.default_rng(spec.split_seed)
    order = rng.permutation(len(arrays.x_train))
    n_val = max(1, round(len(order) * spec.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if spec.train_subset is not None:
        train_idx = train_idx[: spec.train_subset]
    return Splits(
        x_train=_normalize(arrays.x_train[train_idx]),
        y_train=arrays.y_train[train_idx].astype("int32"),
        x_val=_normalize(arrays.x_train[val_idx]),
        y_val=arrays.y_train[val_idx].astype("int32"),
        x_test=_normalize(arrays.x_test),
        y_test=arrays.y_test.astype("int32"),
    )


def _warn_if_not_finite(dataset: str, arrays: Arrays) -> None:
    """One warning line when images hold NaN or infinite values (they would train silently)."""
    bad = {
        name: int(np.count_nonzero(~np.isfinite(x)))
        for name, x in (("x_train", arrays.x_train), ("x_test", arrays.x_test))
        if np.issubdtype(x.dtype, np.inexact)
    }
    if any(bad.values()):
        counts = ", ".join(f"{name} {n:,}" for name, n in bad.items() if n)
        _logger.warning(
            "dataset %s: pixel values that are NaN or infinite (%s); losses and accuracies of "
            "trials on it are meaningless. Fix: replace them (numpy.nan_to_num) in the .npz",
            clean(dataset, 120),
            counts,
        )


def _normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype("float32")
    if x.max(initial=0) > 1.0:
        x /= 255.0
    return x if x.ndim == 4 else x[..., None]


def _load_folder(name: str, folder: Path) -> Arrays | None:
    if not folder.is_dir():
        return None
    if name in ("fashion_mnist", "mnist") and all((folder / f).exists() for f in _IDX_FILES):
        xtr, ytr, xte, yte = (_read_idx(folder / f) for f in _IDX_FILES)
        return Arrays(xtr, ytr, xte, yte)
    if name == "mnist" and (folder / "mnist.npz").exists():
        return _load_npz(folder / "mnist.npz")
    if name == "cifar10" and (folder / "data_batch_1").exists():
        batches = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(folder / "test_batch")
        return Arrays(
            np.concatenate([_cifar_images(b) for b in batches]),
            np.concatenate([np.asarray(b[b"labels"]) for b in batches]),
            _cifar_images(test),
            np.asarray(test[b"labels"]),
        )
    if name == "cifar100" and (folder / "train").exists():
        train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
        return Arrays(
            _cifar_images(train),
            np.asarray(train[b"fine_labels"]),
            _cifar_images(test),
            np.asarray(test[b"fine_labels"]),
        )
    return None


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _unpickle(path: Path) -> dict[bytes, object]:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")  # noqa: S301 - Keras' own CIFAR format


def _cifar_images(batch: dict[bytes, object]) -> np.ndarray:
    return np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _load_npz(path: Path) -> Arrays:
    if not path.exists():
        raise DataError(
            f"{path}: no such .npz file. Fix: give a path to a .npz with x_train, y_train, "
            "x_test, y_test"
        )
    with np.load(path) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
        if missing:
            raise DataError(
                f"{path}: missing arrays {', '.join(missing)}; a dataset .npz needs x_train, "
                f"y_train, x_test, y_test (found: {', '.join(f.files)})"
            )
        return Arrays(f["x_train"], f["y_train"].reshape(-1), f["x_test"], f["y_test"].reshape(-1))


def _download(name: str) -> Arrays:
    import keras

    module = getattr(keras.datasets, name)
    (xtr, ytr), (xte, yte) = module.load_data()
    return Arrays(xtr, ytr.reshape(-1), xte, yte.reshape(-1))


# --------------------------------------------------------------------------------------------
# The user's own data: a folder of images in class subfolders, or a loader function.
# --------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # image_dataset_from_directory's
_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
_BUILTIN_SHAPES = {
    "fashion_mnist": ((28, 28, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}


@dataclass(frozen=True)
class ImageFolder:
    """The files of an image-folder dataset: class names, and (file, label) lists."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None  # None: held out of ``train`` (``test_fraction``)
    image_size: tuple[int, int]


def scan_folder(spec: DataSpec) -> ImageFolder:
    """Find the classes and images of ``spec.dataset`` (Keras' directory conventions).

    ``ROOT/<class>/*.png`` (test images held out), or ``ROOT/train/<class>/...`` and
    ``ROOT/test/<class>/...``. Classes are the subfolder names in sorted order (labels 0..n-1);
    images are ``.bmp``, ``.gif``, ``.jpeg``, ``.jpg`` and ``.png`` files at any depth below.

    Raises:
        DataError: If the folder has fewer than two classes, a class without images, or a test
            folder whose classes differ.
    """
    assert spec.dataset is not None
    root = Path(spec.dataset)
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    classes = tuple(sorted(p.name for p in train_root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(
            f"{train_root}: an image folder needs one subfolder per class (at least 2), found "
            f"{len(classes)}. Example: {root}/cats/1.png, {root}/dogs/1.png (or train/ and test/ "
            "folders with the class folders inside)"
        )
    train = _files(train_root, classes)
    test = None
    if split:
        test_classes = tuple(sorted(p.name for p in (root / "test").iterdir() if p.is_dir()))
        if test_classes != classes:
            raise DataError(
                f"{root / 'test'}: its class folders differ from those of {train_root}. "
                f"Received: {', '.join(test_classes[:8])}. Expected: {', '.join(classes[:8])}"
            )
        test = _files(root / "test", classes)
    size = spec.image_size or _image_size(train[0][0])
    return ImageFolder(root, classes, train, test, (int(size[0]), int(size[1])))


def _files(root: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(
                f"{root / name}: class folder without images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        out += [(p, label) for p in found]
    return out


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width


def folder_splits(spec: DataSpec) -> Splits:
    """Decode an image folder straight into float32 train/val/test arrays.

    Note:
        Each image is decoded once, resized to ``image_size`` and written into its final
        array, so the data is in memory once (``N × height × width × channels × 4`` bytes per
        worker process), never as a second uint8 or unshuffled copy.
    """
    folder = scan_folder(spec)
    rng = np.random.default_rng(spec.split_seed)
    files = [folder.train[i] for i in rng.permutation(len(folder.train))]
    if folder.test is None:
        n_test = max(1, round(len(files) * spec.test_fraction))
        test, files = files[:n_test], files[n_test:]
    else:
        test = folder.test
    n_val = max(1, round(len(files) * spec.val_fraction))
    val, train = files[:n_val], files[n_val:]
    if spec.train_subset is not None:
        train = train[: spec.train_subset]
    decoded = [_decode(part, folder.image_size, spec.color_mode) for part in (train, val, test)]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = decoded
    _logger.info(
        "loaded %s: %d classes, %d train / %d val / %d test images of %s",
        folder.root,
        len(folder.classes),
        len(y_train),
        len(y_val),
        len(y_test),
        x_train.shape[1:],
    )
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def _decode(
    files: list[tuple[Path, int]], size: tuple[int, int], color_mode: str
) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    mode = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}[color_mode]
    x = np.empty((len(files), size[0], size[1], _CHANNELS[color_mode]), dtype="float32")
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            x[i] = np.asarray(image, dtype="float32").reshape(x.shape[1:]) / 255.0
        except OSError as e:
            raise DataError(f"{path}: cannot read the image ({e})") from e
    return x, np.array([label for _, label in files], dtype="int32")


def call_loader(spec: DataSpec, python_path: tuple[str, ...] = ()) -> Arrays:
    """Import and call ``spec.loader``; check that it returned Keras-style arrays.

    The loader takes no arguments and returns ``(x_train, y_train), (x_test, y_test)``, like
    ``keras.datasets.mnist.load_data()``: images (N, H, W) or (N, H, W, C), uint8 (0-255) or
    float (0-1), and integer labels 0..n-1.

    Raises:
        DataError: If the loader raises or returns something else (one line).
        SpecError: If it cannot be imported.
    """
    from hpsearch.usercode import describe, import_function, one_line

    assert spec.loader is not None
    loader = import_function(spec.loader, python_path, "data.loader")
    where = describe(loader)
    expected = "Expected: (x_train, y_train), (x_test, y_test) with images (N, H, W[, C])"
    try:
        result = loader()
    except Exception as e:  # noqa: BLE001 - any error in the user's loader
        raise DataError(f"{where} raised {one_line(e)}") from e
    try:
        (xtr, ytr), (xte, yte) = result
        arrays = [np.asarray(a) for a in (xtr, ytr, xte, yte)]
    except (TypeError, ValueError) as e:
        raise DataError(f"{where} returned {type(result).__name__}. {expected}") from e
    xtr, ytr, xte, yte = arrays
    ytr, yte = ytr.reshape(-1), yte.reshape(-1)
    problems = []
    if xtr.ndim not in (3, 4) or xte.shape[1:] != xtr.shape[1:]:
        problems.append(f"image shapes {xtr.shape} and {xte.shape}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        problems.append(
            f"{len(xtr)}/{len(ytr)} train and {len(xte)}/{len(yte)} test images/labels"
        )
    if not (np.issubdtype(ytr.dtype, np.integer) and np.issubdtype(yte.dtype, np.integer)):
        problems.append(f"labels of type {ytr.dtype} (integer class ids needed)")
    elif min(ytr.min(initial=0), yte.min(initial=0)) < 0:
        problems.append("negative labels")
    if problems:
        raise DataError(f"{where} returned {'; '.join(problems)}. {expected}")
    return Arrays(xtr, ytr, xte, yte)


def data_shape(spec: DataSpec, python_path: tuple[str, ...] = ()) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of the data, reading as little as possible.

    Built-in datasets are known; a folder is scanned (one image opened); a ``.npz`` or a
    loader is loaded. Used by ``validate`` and ``launch`` to build one model before any worker.
    """
    kind = spec.kind
    if kind == "builtin":
        assert spec.dataset is not None
        return _BUILTIN_SHAPES[spec.dataset]
    if kind == "folder":
        folder = scan_folder(spec)
        return (*folder.image_size, _CHANNELS[spec.color_mode]), len(folder.classes)
    splits = load_splits(spec, python_path)
    return splits.input_shape, splits.n_classes
