"""Named datasets (`clipsearch index cifar10|flickr8k|flickr30k|coco ...`) turned into Items for the indexer.

Also knows where the caption datasets (Flickr8k, Flickr30k, COCO) live inside a data folder
and where they can be downloaded; their caption files are read by `captions.read_caption_file`.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClipsearchError
from .captions import CaptionEntry, check_known_files, read_caption_file
from .cifar import cifar_items, load_cifar
from .download import data_root, fetch, is_offline
from .items import Item

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
# Caption datasets whose images have an official open download (Flickr30k's must be requested by hand).
OPEN_DOWNLOADS: tuple[str, ...] = ("flickr8k", "coco")
_ARCHIVE_JUNK = ("__MACOSX",)  # macOS resource forks some zips carry


@dataclass(frozen=True)
class CaptionDataset:
    """Where a caption dataset's files sit inside its data folder, and where to get them."""

    name: str
    image_dirs: tuple[str, ...]  # candidate image folders, relative to the data folder; first found wins
    caption_files: tuple[str, ...]  # candidate caption files, relative to the data folder; first found wins
    urls: tuple[str, ...]  # official downloads; unpack each into the data folder
    how_to_get: str  # one sentence for error messages
    # COCO captions name files as "val2014/x.jpg", so paths are relative to the folder above.
    image_root_is_parent: bool = False

    def image_dir(self, data_dir: Path) -> Path | None:
        """The first of `image_dirs` that exists in `data_dir`."""
        return next((data_dir / d for d in self.image_dirs if (data_dir / d).is_dir()), None)


_KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"

CAPTION_DATASETS: dict[str, CaptionDataset] = {
    "flickr8k": CaptionDataset(
        name="flickr8k",
        image_dirs=("Flicker8k_Dataset", "Flickr8k_Dataset"),  # the official zip misspells it
        caption_files=(
            "Flickr8k.token.txt",
            "Flickr8k_text/Flickr8k.token.txt",
            "dataset_flickr8k.json",
            "caption_datasets/dataset_flickr8k.json",
        ),
        urls=(
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
        ),
        how_to_get="unzip Flickr8k_Dataset.zip and Flickr8k_text.zip (github.com/jbrownlee/Datasets releases) there",
    ),
    "flickr30k": CaptionDataset(
        name="flickr30k",
        image_dirs=("flickr30k-images", "flickr30k_images"),
        caption_files=("dataset_flickr30k.json", "caption_datasets/dataset_flickr30k.json"),
        urls=(_KARPATHY_URL,),
        how_to_get=(
            "Flickr30k images have no open download: request them at "
            "https://shannon.cs.illinois.edu/DenotationGraph/ and unpack flickr30k-images/ there, "
            f"with dataset_flickr30k.json from {_KARPATHY_URL}"
        ),
    ),
    "coco": CaptionDataset(
        name="coco",
        image_dirs=("val2014", "images/val2014"),
        caption_files=("dataset_coco.json", "caption_datasets/dataset_coco.json"),
        urls=("http://images.cocodataset.org/zips/val2014.zip", _KARPATHY_URL),
        how_to_get=(
            "unzip val2014.zip (images.cocodataset.org/zips; also train2014.zip for the train split) "
            f"and dataset_coco.json from {_KARPATHY_URL} there"
        ),
        image_root_is_parent=True,
    ),
}


def default_data_dir(name: str) -> Path:
    """Where a dataset is looked for without --data-dir: $CLIPSEARCH_DATA/<name>, else ~/.cache/clipsearch/data/<name>."""
    return data_root() / name


def locate_caption_dataset(name: str, data_dir: Path | None) -> tuple[Path, list[CaptionEntry], list[str]]:
    """Find and read a caption dataset: (image root, entries whose image exists, problems).

    Entries keep the dataset's split (train/val/test); images that are named
    in the captions but missing on disk are dropped and reported (one problem
    per missing folder, else one per missing file).
    """
    dataset = CAPTION_DATASETS.get(name)
    if dataset is None:
        raise ClipsearchError(f"unknown caption dataset {name!r}; choose one of {', '.join(CAPTION_DATASETS)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    image_dir = dataset.image_dir(data_dir)
    caption_file = next((data_dir / f for f in dataset.caption_files if (data_dir / f).is_file()), None)
    if image_dir is None or caption_file is None:
        looked_for = []
        if image_dir is None:
            looked_for.append("image folder (" + " or ".join(d + "/" for d in dataset.image_dirs) + ")")
        if caption_file is None:
            looked_for.append("caption file (" + " or ".join(dataset.caption_files) + ")")
        raise ClipsearchError(
            f"{name}: found no {' and no '.join(looked_for)} in {data_dir}; "
            f"{dataset.how_to_get}, or pass --data-dir with the folder that has them"
        )
    image_root = image_dir.parent if dataset.image_root_is_parent else image_dir
    entries, problems = _entries_on_disk(caption_file, image_root)
    return image_root, entries, problems


def _entries_on_disk(caption_file: Path, image_root: Path) -> tuple[list[CaptionEntry], list[str]]:
    """The entries of `caption_file` whose image exists under `image_root`, and the problems: those of
    reading the file, then one per missing folder, else one per missing file."""
    by_file, problems = read_caption_file(caption_file)
    folders = Counter(posixpath.dirname(file) for file in by_file)
    known: set[str] = set()
    found_folders: set[str] = set()
    root = image_root.resolve()
    for folder, count in sorted(folders.items()):
        path = image_root / folder
        if not path.is_dir():
            problems.append(f"{caption_file.name}: {count} captioned images skipped: folder {path} not found")
            continue
        if not path.resolve().is_relative_to(root):  # a symlinked folder: nothing outside is read
            problems.append(f"{caption_file.name}: {count} captioned images skipped: {path} leads outside {root}")
            continue
        found_folders.add(folder)
        # One listing per folder instead of a stat per image (COCO has 120k); a symlink must stay inside.
        with os.scandir(path) as items:
            known.update(
                posixpath.join(folder, item.name)
                for item in items
                if item.is_file() and (not item.is_symlink() or Path(item.path).resolve().is_relative_to(root))
            )
    checkable = {file: entry for file, entry in by_file.items() if posixpath.dirname(file) in found_folders}
    problems += check_known_files(checkable, known, caption_file.name)
    return [entry for file, entry in by_file.items() if file in known], problems


def _cifar(name: str, split: str, data_dir: Path | None, captions: Path | None) -> tuple[list[Item], list[str]]:
    if captions is not None:
        raise ClipsearchError(f"{name} has class labels, not captions: drop --captions")
    return cifar_items(load_cifar(name, data_dir), split), []


def _captioned(name: str, split: str, data_dir: Path | None, captions: Path | None) -> tuple[list[Item], list[str]]:
    """Flickr8k / Flickr30k / COCO: one Item per captioned image of the split, id `<name>/<file>`."""
    if split not in SPLITS:
        raise ClipsearchError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if captions is None:
        image_root, entries, problems = _locate_or_download(name, data_dir)
    else:
        image_root, entries, problems = _read_caption_file(name, data_dir, captions)
    chosen = [entry for entry in entries if split == "all" or entry.split == split]
    if not chosen:
        present = sorted({entry.split for entry in entries if entry.split})
        raise ClipsearchError(
            f"{name}: no captioned images in split {split!r} under {image_root} "
            f"(splits found: {', '.join(present) or 'none'}; --split all takes every image)"
        )
    return [_item(name, image_root, entry) for entry in chosen], problems


def _item(name: str, image_root: Path, entry: CaptionEntry) -> Item:
    path = (image_root / entry.file).absolute()
    stat = path.stat()
    return Item(
        id=f"{name}/{entry.file}",
        uri=str(path),
        source=name,
        split=entry.split,
        label_name=entry.label,
        captions=list(entry.captions),
        mtime=stat.st_mtime,
        size=stat.st_size,
    )


def _locate_or_download(name: str, data_dir: Path | None) -> tuple[Path, list[CaptionEntry], list[str]]:
    """The dataset from `data_dir` (default: the data cache); fetched and unpacked there first when it is
    missing, the network is allowed and its images have an official download."""
    try:
        return locate_caption_dataset(name, data_dir)
    except ClipsearchError as missing:
        if name not in OPEN_DOWNLOADS:
            raise
        if is_offline():
            raise ClipsearchError(f"{missing} (offline mode is on, so nothing was downloaded)") from None
    target = data_dir if data_dir is not None else default_data_dir(name)
    for url in CAPTION_DATASETS[name].urls:
        _unpack_zip(fetch(url, target), target)
    return locate_caption_dataset(name, target)


def _unpack_zip(archive: Path, target: Path) -> None:
    """Unpack `archive` into `target`, skipping top-level entries already there.

    Unpacks into a temp folder beside `target` and renames each top-level entry
    into place, so an interrupted run never leaves a half-filled image folder
    that would later pass for a complete one. zipfile drops "..", absolute
    paths and drive letters, so nothing lands outside `target`.
    """
    try:
        with zipfile.ZipFile(archive) as zipped:
            tops = {name.split("/", 1)[0] for name in zipped.namelist()} - set(_ARCHIVE_JUNK) - {""}
            if all((target / top).exists() for top in tops):
                return
            with tempfile.TemporaryDirectory(dir=target, prefix=f".{archive.name}.") as staging:
                zipped.extractall(staging)
                for top in sorted(tops):
                    if not (target / top).exists():
                        shutil.move(str(Path(staging) / top), str(target / top))
    except (zipfile.BadZipFile, OSError) as error:
        raise ClipsearchError(
            f"cannot unpack {archive} ({error}); delete it and run again to download it anew"
        ) from None


def _read_caption_file(
    name: str, data_dir: Path | None, caption_file: Path
) -> tuple[Path, list[CaptionEntry], list[str]]:
    """A dataset's images with captions from a file the user names (any kind `read_caption_file`
    reads); the image root is the dataset's image folder inside `data_dir`, else `data_dir`."""
    dataset = CAPTION_DATASETS[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    image_dir = dataset.image_dir(data_dir)
    image_root = data_dir if image_dir is None or dataset.image_root_is_parent else image_dir
    if not image_root.is_dir():
        raise ClipsearchError(
            f"{name}: image folder {image_root} not found; pass --data-dir with the folder of the images"
        )
    entries, problems = _entries_on_disk(caption_file, image_root)
    return image_root, entries, problems


# name -> loader(name, split, data_dir, captions file) -> (items, problems)
DATASETS: dict[str, Callable[[str, str, Path | None, Path | None], tuple[list[Item], list[str]]]] = {
    "cifar10": _cifar,
    "cifar100": _cifar,
    **{name: _captioned for name in CAPTION_DATASETS},
}


def is_dataset(name: str) -> bool:
    return name in DATASETS


def dataset_items(
    name: str, split: str = "test", data_dir: Path | None = None, captions: Path | None = None
) -> tuple[list[Item], list[str]]:
    """Items of a named dataset's split (`all` for every split) and the problems met reading it."""
    if name not in DATASETS:
        raise ClipsearchError(f"unknown dataset '{name}' (choices: {', '.join(DATASETS)})")
    return DATASETS[name](name, split, data_dir, captions)
