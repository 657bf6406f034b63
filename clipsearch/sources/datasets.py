"""Named datasets (`clipsearch index cifar10|flickr8k|flickr30k|coco ...`) turned into Items for the indexer."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import ClipsearchError
from .captions import (
    CAPTION_DATASETS,
    CaptionEntry,
    check_known_files,
    default_data_dir,
    locate_caption_dataset,
    read_flickr8k_splits,
    read_karpathy,
    read_sidecar,
)
from .download import fetch, is_offline
from .items import Item

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
# Caption datasets whose images have an official open download (Flickr30k's must be requested by hand).
OPEN_DOWNLOADS: tuple[str, ...] = ("flickr8k", "coco")
_ARCHIVE_JUNK = ("__MACOSX",)  # macOS resource forks some zips carry


def _cifar(name: str, split: str, data_dir: Path | None, captions: Path | None) -> tuple[list[Item], list[str]]:
    from .cifar import cifar_items, load_cifar

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
        id=f"{name}/{entry.file}", uri=str(path), source=name, split=entry.split, label_name=entry.label,
        captions=list(entry.captions), mtime=stat.st_mtime, size=stat.st_size,
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
        raise ClipsearchError(f"cannot unpack {archive} ({error}); delete it and run again to download it anew") from None


def _read_caption_file(name: str, data_dir: Path | None, caption_file: Path) -> tuple[Path, list[CaptionEntry], list[str]]:
    """A dataset's images with captions from a file the user names (Karpathy JSON, Flickr8k token
    file, JSONL or CSV); the image root is the dataset's image folder inside `data_dir`, else `data_dir`."""
    dataset = CAPTION_DATASETS[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    image_dir = next((data_dir / d for d in dataset.image_dirs if (data_dir / d).is_dir()), None)
    image_root = data_dir if image_dir is None or dataset.image_root_is_parent else image_dir
    if not image_root.is_dir():
        raise ClipsearchError(f"{name}: image folder {image_root} not found; pass --data-dir with the folder of the images")
    if caption_file.suffix.lower() == ".json":
        entries, problems = read_karpathy(caption_file)
        by_file = {entry.file: entry for entry in entries}
    else:
        by_file, problems = read_sidecar(caption_file)
        if caption_file.suffix.lower() == ".txt":  # a Flickr8k token file: split lists sit beside it
            splits = read_flickr8k_splits(caption_file.parent)
            for file, entry in by_file.items():
                entry.split = splits.get(file)
    known = {file for file in by_file if (image_root / file).is_file()}
    problems += check_known_files(by_file, known, caption_file.name)
    return image_root, [entry for file, entry in by_file.items() if file in known], problems


# name -> loader(name, split, data_dir, captions file) -> (items, problems)
DATASETS: dict[str, Callable[[str, str, Path | None, Path | None], tuple[list[Item], list[str]]]] = {
    "cifar10": _cifar,
    "cifar100": _cifar,
    **{name: _captioned for name in CAPTION_DATASETS},
}


def is_dataset(name: str) -> bool:
    return name in DATASETS


def dataset_items(name: str, split: str = "test", data_dir: Path | None = None, captions: Path | None = None) -> tuple[list[Item], list[str]]:
    """Items of a named dataset's split (`all` for every split) and the problems met reading it."""
    if name not in DATASETS:
        raise ClipsearchError(f"unknown dataset '{name}' (choices: {', '.join(DATASETS)})")
    return DATASETS[name](name, split, data_dir, captions)
