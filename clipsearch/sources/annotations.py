"""Attach captions, labels and splits from a folder's sidecar file to scanned Items."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .captions import find_sidecar, read_flickr8k_tokens, read_karpathy, read_sidecar
from .items import Item


def annotate_folder_items(root: Path, items: Sequence[Item], sidecar: Path | None = None) -> list[str]:
    """Fill item captions/label/split from `sidecar` (or the one found in root); returns problems."""
    sidecar = sidecar or find_sidecar(root)
    if sidecar is None:
        return []
    if sidecar.suffix.lower() == ".json":  # Karpathy split JSON
        listed, problems = read_karpathy(sidecar)
        entries = {entry.file: entry for entry in listed}
    else:
        reader = read_flickr8k_tokens if sidecar.name.lower().endswith(".token.txt") else read_sidecar
        entries, problems = reader(sidecar)
    base = sidecar.parent.resolve()
    for item in items:
        relative = Path(item.uri).resolve().relative_to(base).as_posix() if Path(item.uri).resolve().is_relative_to(base) else item.id
        entry = entries.get(relative) or entries.get(Path(relative).name)
        if entry is None:
            continue
        item.captions = list(entry.captions)
        item.label_name = entry.label
        item.split = entry.split
    return problems
