"""Scan an image folder into Items, with annotations from a captions sidecar when present."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import ClipsearchError
from .images import file_kind, is_image_file
from .items import Item


def _excluded(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def scan_folder(root: Path, exclude: Sequence[str] = ()) -> list[Item]:
    """Every image file under root (recursive, any letter case), sorted by relative path.

    Hidden folders are skipped and folder symlinks are not followed (no loops);
    unreadable files are still listed so the indexer records why they failed: also broken or
    looping symlinks, FIFOs and devices (never opened), and names that are not UTF-8.
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
            item = _scanned(os.path.join(directory, name), relative, source)
            if item is not None:
                items.append(item)
    items.sort(key=lambda item: item.id)
    return items


def _scanned(path: str, relative: str, source: str) -> Item | None:
    """The Item of one listed file; one that cannot be read carries the reason (None: it vanished)."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:  # the table stores UTF-8 text: the name is kept escaped, for the record
        return Item(
            id=_escaped(relative),
            uri=_escaped(path),
            source=source,
            unreadable="file name is not valid UTF-8; rename the file",
        )
    try:
        info, reason = os.stat(path), None
    except OSError as err:
        try:
            info = os.lstat(path)
        except OSError:
            return None  # vanished between listing and stat
        reason = f"broken symlink: {err.strerror or err}"
    if reason is None and not stat.S_ISREG(info.st_mode):
        reason = f"not a regular file ({file_kind(info.st_mode)})"
    return Item(id=relative, uri=path, source=source, mtime=info.st_mtime, size=info.st_size, unreadable=reason)


def _escaped(text: str) -> str:
    return os.fsencode(text).decode("utf-8", "backslashreplace")
