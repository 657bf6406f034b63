"""Small fake CIFAR archives in the exact official python layout, for tests.

Each class gets its own colour and stripe pattern (plus noise), so a model can
tell classes apart; files are plain protocol-2 pickles of dicts with bytes keys
and numpy arrays, as in the real archives.
"""

from __future__ import annotations

import colorsys
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

from clipsearch.sources.cifar import IMAGE_SIDE, VARIANTS
from clipsearch.tasks.prompts import label_set

# The official CIFAR-100 fine names are the prompt names with underscores.
_RAW_NAMES = {
    "cifar10": label_set("cifar10"),
    "cifar100": [name.replace(" ", "_") for name in label_set("cifar100")],
}
_CIFAR100_COARSE_CLASSES = 20


def class_image(label: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """One 32×32×3 uint8 image: the class's hue, stripes of a class-specific period and direction, noise."""
    red, green, blue = colorsys.hsv_to_rgb(label / n_classes, 0.8, 0.9)
    base = np.array([red, green, blue]) * 255
    period = 2 + label % 5
    coordinate = np.arange(IMAGE_SIDE)[:, None] if label % 2 else np.arange(IMAGE_SIDE)[None, :]
    stripes = ((coordinate // period) % 2 == 0) * np.ones((IMAGE_SIDE, IMAGE_SIDE))
    shade = 0.55 + 0.45 * stripes
    noise = rng.normal(0, 12, size=(IMAGE_SIDE, IMAGE_SIDE, 3))
    return np.clip(base * shade[..., None] + noise, 0, 255).astype(np.uint8)


def _images_and_labels(n_per_class: int, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    # Shuffled like the real files, so classes interleave across batches.
    labels = rng.permutation(np.repeat(np.arange(n_classes), n_per_class)).tolist()
    images = np.stack([class_image(label, n_classes, rng) for label in labels])
    rows = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)  # channel-major, like CIFAR
    return np.ascontiguousarray(rows), labels


def _batch(variant: str, description: str, rows: np.ndarray, labels: list[int], first_index: int) -> dict:
    filenames = [f"fake_{first_index + i:05d}.png".encode() for i in range(len(labels))]
    batch = {b"batch_label": description.encode(), b"data": rows, b"filenames": filenames}
    if variant == "cifar10":
        batch[b"labels"] = labels
    else:
        batch[b"fine_labels"] = labels
        batch[b"coarse_labels"] = [label % _CIFAR100_COARSE_CLASSES for label in labels]
    return batch


def _dump(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar_archive(
    tmp: Path,
    variant: str = "cifar10",
    n_train_per_class: int = 6,
    n_test_per_class: int = 3,
    seed: int = 0,
    n_classes: int | None = None,
    names: list[str] | None = None,
) -> Path:
    """Write `<tmp>/<official archive name>` (e.g. cifar-10-python.tar.gz) and return its path; `names`:
    other class names in its meta file than the official ones (a CIFAR-format dataset of other classes)."""
    spec = VARIANTS[variant]
    names = names or _RAW_NAMES[variant][: n_classes or len(_RAW_NAMES[variant])]
    rng = np.random.default_rng(seed)
    staging = Path(tmp) / f".staging-{variant}"
    folder = staging / spec.folder
    folder.mkdir(parents=True)

    train_rows, train_labels = _images_and_labels(n_train_per_class, len(names), rng)
    train_files = spec.files["train"]
    parts = np.array_split(np.arange(len(train_labels)), len(train_files))
    for number, (filename, part) in enumerate(zip(train_files, parts), start=1):
        description = f"training batch {number} of {len(train_files)}"
        first = int(part[0]) if len(part) else 0
        _dump(_batch(variant, description, train_rows[part], [train_labels[i] for i in part], first), folder / filename)
    test_rows, test_labels = _images_and_labels(n_test_per_class, len(names), rng)
    _dump(_batch(variant, "testing batch 1 of 1", test_rows, test_labels, 0), folder / spec.files["test"][0])

    raw_names = [name.encode() for name in names]
    if variant == "cifar10":
        meta = {
            b"num_cases_per_batch": len(train_labels) // len(train_files),
            b"label_names": raw_names,
            b"num_vis": 3072,
        }
    else:
        coarse = [f"superclass_{i}".encode() for i in range(_CIFAR100_COARSE_CLASSES)]
        meta = {b"fine_label_names": raw_names, b"coarse_label_names": coarse}
    _dump(meta, folder / spec.meta_file)

    archive = Path(tmp) / spec.archive_name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=spec.folder)
    shutil.rmtree(staging)
    return archive
