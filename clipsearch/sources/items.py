"""The record every source (folder, CIFAR, caption dataset) produces for the indexer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Item:
    """One image to store: where its pixels are and what is known about it."""

    id: str  # stable: relative path or dataset key such as cifar10/test/00042
    uri: str  # file path or dataset reference that sources.images.open_uri understands
    source: str  # the folder's absolute path, or the dataset name
    split: str | None = None
    label: int | None = None
    label_name: str | None = None
    captions: list[str] = field(default_factory=list)
    mtime: float = 0.0
    size: int = 0
    content_hash: str | None = None  # filled by the indexer for files, by the source for datasets
    unreadable: str | None = None  # why the source already knows it cannot be read (stored in `skipped`)

    def metadata(self) -> tuple:
        """What can change without the pixels changing (e.g. an edited captions file)."""
        return (self.split, self.label, self.label_name, tuple(self.captions))


def class_display_name(raw: str) -> str:
    """The class name prompts and reports use for a stored label: underscores read as spaces,
    so CIFAR-100's raw "lawn_mower" is the class "lawn mower"."""
    return raw.replace("_", " ").strip()
