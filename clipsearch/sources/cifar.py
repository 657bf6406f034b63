"""CIFAR-10 and CIFAR-100 in the official python format.

Finds (or fetches) the archive, extracts it safely, loads the pickled batches
without ever running code from them, splits the official training set into
train/val, and turns images into index records whose `uri` leads back to the
pixels.

The val split is fixed: the first n_train // 10 positions of
`numpy.random.default_rng(VAL_SEED).permutation(n_train)` (VAL_SEED = 0), kept
in official order; train is the rest. On the real data that is 45,000 / 5,000,
with test the official 10,000.
"""

from __future__ import annotations

import functools
import pickle
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from ..files import bytes_digest
from .download import data_root, fetch
from .items import Item, class_display_name

IMAGE_SIDE = 32
IMAGE_BYTES = 3 * IMAGE_SIDE * IMAGE_SIDE
SPLITS = ("train", "val", "test")
VAL_SEED = 0
VAL_FRACTION_DIVISOR = 10  # val = 10 % of the official training set


@dataclass(frozen=True)
class CifarVariant:
    """Where one CIFAR variant lives and how its official files are laid out."""

    name: str
    title: str
    url: str
    md5: str
    folder: str
    files: dict[str, tuple[str, ...]]  # official set ("train" | "test") -> batch files
    meta_file: str
    labels_key: bytes
    label_names_key: bytes

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


VARIANTS: dict[str, CifarVariant] = {
    "cifar10": CifarVariant(
        name="cifar10",
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta_file="batches.meta",
        labels_key=b"labels",
        label_names_key=b"label_names",
    ),
    "cifar100": CifarVariant(
        name="cifar100",
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        files={"train": ("train",), "test": ("test",)},
        meta_file="meta",
        labels_key=b"fine_labels",
        label_names_key=b"fine_label_names",
    ),
}

_URI = re.compile(r"^(?P<variant>cifar10|cifar100):(?P<folder>.+)#(?P<set>train|test)/(?P<index>\d+)$")


def variant(name: str) -> CifarVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ClipsearchError(f"unknown CIFAR dataset {name!r}: use one of {', '.join(VARIANTS)}") from None


# --------------------------------------------------------------------- locating


def locate_cifar(name: str, data_dir: Path | None, download: bool = True) -> Path:
    """Return the extracted batches folder (e.g. .../cifar-10-batches-py).

    `data_dir` may be the .tar.gz archive, the folder holding the archive or the
    extracted folder, or the extracted folder itself; None means the data root
    ($CLIPSEARCH_DATA, else ~/.cache/clipsearch/data). A found archive is extracted next to itself; with
    nothing found the official archive is downloaded into the folder.
    """
    spec = variant(name)
    data_dir = data_root() if data_dir is None else Path(data_dir).expanduser()

    if data_dir.is_file():
        return _extract(spec, data_dir)
    if _is_batches_folder(spec, data_dir):
        return data_dir
    if _is_batches_folder(spec, data_dir / spec.folder):
        return data_dir / spec.folder
    archive = data_dir / spec.archive_name
    if archive.is_file():
        return _extract(spec, archive)
    if not download:
        raise ClipsearchError(
            f"{spec.title} not found in {data_dir}: pass --data-dir pointing at {spec.archive_name} "
            f"or its extracted {spec.folder} folder (download: {spec.url})"
        )
    return _extract(spec, fetch(spec.url, data_dir, md5=spec.md5))


def _is_batches_folder(spec: CifarVariant, folder: Path) -> bool:
    return (folder / spec.meta_file).is_file()


def _extract(spec: CifarVariant, archive: Path) -> Path:
    """Unpack the archive's batches folder next to the archive and return it.

    Only plain files and folders inside the archive's own tree are written, so a
    crafted archive cannot escape via "../", absolute paths or links. Unpacking
    goes to a temp folder renamed into place, so an interrupted run never leaves
    a half-filled batches folder that would later pass for a complete one.
    """
    target = archive.parent / spec.folder
    if _is_batches_folder(spec, target):
        return target
    try:
        staging = Path(tempfile.mkdtemp(dir=archive.parent, prefix=".extract-"))
    except OSError as err:
        raise ClipsearchError(f"cannot extract {archive}: {archive.parent} is not writable ({err.strerror})") from err
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    _extract_member(tar, member, staging, archive)
            if not _is_batches_folder(spec, staging / spec.folder):
                raise ClipsearchError(
                    f"{archive} holds no {spec.folder}/{spec.meta_file}: is it the {spec.title} python archive "
                    f"({spec.archive_name})?"
                )
            (staging / spec.folder).replace(target)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ClipsearchError(f"could not extract {archive} into {archive.parent} ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, archive: Path) -> None:
    relative = PurePosixPath(member.name)
    if relative.is_absolute() or ".." in relative.parts or not (member.isfile() or member.isdir()):
        raise ClipsearchError(f"{archive} refused: unsafe archive entry {member.name!r}")
    destination = staging.joinpath(*relative.parts)
    if member.isdir():
        destination.mkdir(parents=True, exist_ok=True)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tar.extractfile(member) as source, open(destination, "wb") as out:
        shutil.copyfileobj(source, out)


# ---------------------------------------------------------------------- loading

# The only globals an official batch (or one written the same way by numpy and
# Python 3 with protocol 2) refers to. Anything else could run code on load.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes as _codecs.encode(text, "latin1") (empty bytes as
        # bytes()) under protocol 2; Python 2 files hold them directly.
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("__builtin__", "bytes"),
    }
)


class _RefusedGlobal(Exception):
    pass


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def load_batch_file(path: Path) -> dict[bytes, Any]:
    """Load one pickled CIFAR file (batch or meta) with bytes keys, like the official loader."""
    if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
        raise ClipsearchError(f"{path} refused: it is a symlink to {path.resolve()}, outside the CIFAR folder")
    try:
        with open(path, "rb") as f:
            loaded = _BatchUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise ClipsearchError(
            f"{path} refused: the file tries to load {refused}, which a CIFAR batch never contains"
        ) from None
    except FileNotFoundError:
        raise ClipsearchError(f"{path} is missing: the CIFAR folder is incomplete, extract the archive again") from None
    except Exception as err:  # a corrupt pickle can fail in many ways; all mean the same to the user
        raise ClipsearchError(f"{path} is not a readable CIFAR batch file ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, dict):
        raise ClipsearchError(f"{path} is not a CIFAR batch file (holds a {type(loaded).__name__}, not a dict)")
    return loaded


@functools.lru_cache(maxsize=4)
def _official_set(variant_name: str, folder: str, official_set: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×3072 uint8, labels N int64) of one official set, in file order.

    Cached per process so that opening images by uri one at a time costs one
    load; the arrays are read-only because every caller shares them.
    """
    spec = VARIANTS[variant_name]
    images, labels = [], []
    for filename in spec.files[official_set]:
        path = Path(folder) / filename
        batch = load_batch_file(path)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, IMAGE_BYTES)
            batch_labels = np.asarray(batch[spec.labels_key], dtype=np.int64)
        except (KeyError, ValueError) as err:
            raise ClipsearchError(f"{path} is not a {spec.title} batch (bad or missing {err})") from err
        if len(data) != len(batch_labels):
            raise ClipsearchError(f"{path} is corrupt: {len(data)} images but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
    images_array, labels_array = np.concatenate(images), np.concatenate(labels)
    images_array.flags.writeable = False
    labels_array.flags.writeable = False
    return images_array, labels_array


def _label_names(spec: CifarVariant, folder: Path) -> tuple[str, ...]:
    meta_path = folder / spec.meta_file
    meta = load_batch_file(meta_path)
    try:
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.label_names_key])
    except KeyError:
        raise ClipsearchError(
            f"{meta_path} has no {spec.label_names_key.decode()}: not a {spec.title} meta file"
        ) from None


def _val_mask(n_train: int) -> np.ndarray:
    """Boolean mask over the official training set: True for the val split (see module doc)."""
    permutation = np.random.default_rng(VAL_SEED).permutation(n_train)
    mask = np.zeros(n_train, dtype=bool)
    mask[permutation[: n_train // VAL_FRACTION_DIVISOR]] = True
    return mask


@dataclass(frozen=True)
class CifarDataset:
    """One loaded CIFAR variant; images are rows of 3072 bytes (R, G, B planes of 32×32)."""

    name: str
    folder: Path
    label_names: tuple[str, ...]  # raw, as in the meta file ("lawn_mower")
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def classnames(self) -> list[str]:
        """Names for prompts: underscores become spaces ("lawn_mower" -> "lawn mower")."""
        return [class_display_name(name) for name in self.label_names]

    def split_indices(self, split: str) -> tuple[str, np.ndarray]:
        """(official set, indices into it in official order) for train | val | test."""
        if split == "test":
            return "test", np.arange(len(self.test_labels))
        if split in ("train", "val"):
            val = _val_mask(len(self.train_labels))
            return "train", np.flatnonzero(val if split == "val" else ~val)
        raise ClipsearchError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")

    def official_set(self, official_set: str) -> tuple[np.ndarray, np.ndarray]:
        """(images N×3072, labels) of the official "train" or "test" set."""
        return (
            (self.test_images, self.test_labels) if official_set == "test" else (self.train_images, self.train_labels)
        )

    def labels(self, split: str) -> np.ndarray:
        official_set, indices = self.split_indices(split)
        return self.official_set(official_set)[1][indices]

    def images(self, split: str) -> np.ndarray:
        """Images of a split as an N×32×32×3 uint8 (height, width, RGB) array."""
        official_set, indices = self.split_indices(split)
        return _rows_to_hwc(self.official_set(official_set)[0][indices])


def load_cifar(name: str, data_dir: Path | None = None, download: bool = True) -> CifarDataset:
    spec = variant(name)
    folder = locate_cifar(name, data_dir, download=download).resolve()
    train_images, train_labels = _official_set(spec.name, str(folder), "train")
    test_images, test_labels = _official_set(spec.name, str(folder), "test")
    label_names = _label_names(spec, folder)
    for labels in (train_labels, test_labels):
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(label_names):
            raise ClipsearchError(f"{folder} is corrupt: labels outside 0..{len(label_names) - 1}")
    return CifarDataset(spec.name, folder, label_names, train_images, train_labels, test_images, test_labels)


# ---------------------------------------------------------------------- records


def cifar_items(ds: CifarDataset, split: str) -> list[Item]:
    """Index records for a split (train | val | test | all).

    id:  "<name>/<split>/<index>", index = position in the official train or test
         set, 5 digits ("cifar10/val/00077"), so ids never change between runs.
    uri: "<name>:<absolute batches folder>#<official set>/<index>" for open_cifar_uri.
    """
    if split not in (*SPLITS, "all"):
        raise ClipsearchError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}, all")
    splits = SPLITS if split == "all" else (split,)
    items = []
    for split_name in splits:
        official_set, indices = ds.split_indices(split_name)
        images, labels = ds.official_set(official_set)
        for index in indices.tolist():
            label = int(labels[index])
            items.append(
                Item(
                    id=f"{ds.name}/{split_name}/{index:05d}",
                    uri=f"{ds.name}:{ds.folder}#{official_set}/{index}",
                    source=ds.name,
                    split=split_name,
                    label=label,
                    label_name=ds.label_names[label],
                    # the digest the indexer gives a file holding these bytes
                    content_hash=bytes_digest(images[index].tobytes()),
                    size=IMAGE_BYTES,
                    mtime=0.0,
                )
            )
    return items


def is_cifar_uri(uri: str) -> bool:
    return _URI.match(uri) is not None


def open_cifar_uri(uri: str) -> Image.Image:
    """The 32×32 RGB image a cifar_items uri points at."""
    match = _URI.match(uri)
    if match is None:
        raise ClipsearchError(f"not a CIFAR uri: {uri!r} (expected cifar10:<folder>#train/<index>)")
    images, _ = _official_set(match["variant"], match["folder"], match["set"])
    index = int(match["index"])
    if index >= len(images):
        raise ClipsearchError(f"{uri}: index {index} is past the {len(images)} images of that set")
    return Image.fromarray(_rows_to_hwc(images[index : index + 1])[0])


def _rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    # Each row is channel-major (1024 R, 1024 G, 1024 B); images want height, width, channel.
    return np.ascontiguousarray(rows.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1))
