"""Attach captions, labels and splits from a folder's caption file to scanned Items."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .captions import CaptionEntry, Entries, find_sidecar, read_caption_file
from .items import Item


def annotate_folder_items(root: Path, items: Sequence[Item], sidecar: Path | None = None) -> list[str]:
    """Fill item captions/label/split from `sidecar` (or the one found in root); returns problems."""
    sidecar = sidecar or find_sidecar(root)
    if sidecar is None:
        return []
    entries, problems = read_caption_file(sidecar)
    for item, entry in matched_entries(sidecar.parent, items, entries):
        item.captions = list(entry.captions)
        item.label_name = entry.label
        item.split = entry.split
    return problems


def matched_entries(base: Path, items: Sequence[Item], entries: Entries) -> list[tuple[Item, CaptionEntry]]:
    """Each item that has a caption entry, with it, in item order.

    An item matches by its path relative to `base` (the caption file's folder;
    its id when it lies outside), else by its bare file name, so a caption file
    may name the images of its folder's subfolders without their folder.
    """
    base = base.resolve()
    matched = []
    for item in items:
        path = Path(item.uri).resolve()
        relative = path.relative_to(base).as_posix() if path.is_relative_to(base) else item.id
        entry = entries.get(relative) or entries.get(Path(relative).name)
        if entry is not None:
            matched.append((item, entry))
    return matched
