"""Write real Fashion-MNIST images as PNG files in class subfolders (an image-folder dataset).

    python examples/custom_cnn/make_image_folder.py examples/custom_cnn/images --per-class 40

makes ``images/train/<class>/*.png`` and ``images/test/<class>/*.png``, the layout that
``keras.utils.image_dataset_from_directory`` and hpsearch's ``dataset = "images"`` read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from hpsearch.data import load_arrays

CLASSES = (
    "t_shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip


def make_image_folder(root: Path, per_class: int = 40, test_per_class: int = 10) -> Path:
    """Write ``per_class`` training and ``test_per_class`` test PNGs of each class under root."""
    arrays = load_arrays("fashion_mnist")
    for split, x, y, count in (
        ("train", arrays.x_train, arrays.y_train, per_class),
        ("test", arrays.x_test, arrays.y_test, test_per_class),
    ):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate((y == label).nonzero()[0][:count]):
                Image.fromarray(x[index]).save(folder / f"{i:05d}.png")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=10)
    args = parser.parse_args()
    print(make_image_folder(args.root, args.per_class, args.test_per_class))
