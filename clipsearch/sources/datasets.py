"""Named datasets (`clipsearch index cifar10 ...`) turned into Items for the indexer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ClipsearchError
from .items import Item


def _cifar(name: str, split: str, data_dir: Path | None, captions: Path | None) -> tuple[list[Item], list[str]]:
    from .cifar import cifar_items, load_cifar

    if captions is not None:
        raise ClipsearchError(f"{name} has class labels, not captions: drop --captions")
    return cifar_items(load_cifar(name, data_dir), split), []


# name -> loader(name, split, data_dir, captions file) -> (items, problems)
DATASETS: dict[str, Callable[[str, str, Path | None, Path | None], tuple[list[Item], list[str]]]] = {
    "cifar10": _cifar,
    "cifar100": _cifar,
}


def is_dataset(name: str) -> bool:
    return name in DATASETS


def dataset_items(name: str, split: str = "test", data_dir: Path | None = None, captions: Path | None = None) -> tuple[list[Item], list[str]]:
    """Items of a named dataset's split (`all` for every split) and the problems met reading it."""
    if name not in DATASETS:
        raise ClipsearchError(f"unknown dataset '{name}' (choices: {', '.join(DATASETS)})")
    return DATASETS[name](name, split, data_dir, captions)
