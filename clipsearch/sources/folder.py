"""Scan an image folder into Items, with annotations from a captions sidecar when present."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ClipsearchError
from .images import is_image_file
from .items import Item


def _excluded(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def scan_folder(root: Path, exclude: Sequence[str] = ()) -> list[Item]:
    """Every image file under root (recursive, any letter case), sorted by relative path.

    Hidden folders are skipped and folder symlinks are not followed (no loops);
    unreadable files are still listed so the indexer records why they failed.
    """
    root = Path(root)
    if not root.exists():
        raise ClipsearchError(f"folder not found: {root}")
    if not root.is_dir():
        raise ClipsearchError(f"not a folder: {root}")
    root = root.resolve()
    source = str(root)
    items: list[Item] = []
    for directory, subdirs, files in os.walk(root, onerror=None):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and not _excluded(rel_dir + d, exclude))
        for name in files:
            relative = rel_dir + name
            if not is_image_file(name) or _excluded(relative, exclude):
                continue
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # vanished between listing and stat
            items.append(Item(id=relative, uri=path, source=source, mtime=stat.st_mtime, size=stat.st_size))
    items.sort(key=lambda item: item.id)
    return items
