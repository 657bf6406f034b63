"""Scan an image folder into Items, with annotations from a captions sidecar when present."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClipsearchError
from .annotations import annotate_folder_items
from .images import file_kind, is_image_file
from .items import Item


def _matching(relative: str, patterns: Sequence[str], is_dir: bool) -> str | None:
    """The first pattern that matches a file or folder (its path or its name); a pattern ending in "/"
    (`thumbs/`) matches folders only."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/") and not is_dir:
            continue
        bare = pattern.rstrip("/") if is_dir else pattern
        if fnmatch.fnmatch(relative, bare) or fnmatch.fnmatch(name, bare):
            return pattern
    return None


def is_excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether `scan_folder(exclude=patterns)` leaves out the file at `relative` (itself, or a folder above it)."""
    parts = relative.split("/")
    folders = ["/".join(parts[:n]) for n in range(1, len(parts))]
    return _matching(relative, patterns, False) is not None or any(_matching(f, patterns, True) for f in folders)


def scan_folder(root: Path, exclude: Sequence[str] = (), matched: set[str] | None = None) -> list[Item]:
    """Every image file under root (recursive, any letter case), sorted by relative path.

    Hidden folders are skipped and folder symlinks are not followed (no loops);
    unreadable files are still listed so the indexer records why they failed: also broken or
    looping symlinks, FIFOs and devices (never opened), and names that are not UTF-8.
    `matched` collects the exclude patterns that left out a file or folder.
    """
    root = Path(root)
    if not root.exists():
        raise ClipsearchError(f"folder not found: {root}")
    if not root.is_dir():
        raise ClipsearchError(f"not a folder: {root}")
    root = root.resolve()
    source = str(root)
    items: list[Item] = []
    used = set() if matched is None else matched  # the patterns that left something out

    def excluded(relative: str, is_dir: bool) -> bool:
        pattern = _matching(relative, exclude, is_dir)
        if pattern is not None:
            used.add(pattern)
        return pattern is not None

    for directory, subdirs, files in os.walk(root, onerror=None):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and not excluded(rel_dir + d, True))
        for name in files:
            relative = rel_dir + name
            if not is_image_file(name) or excluded(relative, False):
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


@dataclass
class FolderScan:
    """A folder scanned for indexing: its Items (annotated from a captions sidecar), what went wrong in the
    annotation files or the patterns, and which stored ids the patterns leave out."""

    items: list[Item]
    source: str  # the folder, resolved: the rows' `source`
    problems: list[str]
    exclude: list[str]

    def is_excluded(self, relative: str) -> bool:
        return is_excluded(relative, self.exclude)

    def refuse_other_folder(self, index_name: str, sources: Sequence[str]) -> None:
        """One index holds one folder: refused when the index's `sources` name another folder."""
        others = [s for s in sources if s.startswith("/") and s != self.source]
        if others:
            raise ClipsearchError(
                f"index '{index_name}' already holds folder {others[0]}; use another --name for {self.source}"
            )


def scan_annotated(folder: Path, exclude: Sequence[str] = (), captions: Path | None = None) -> FolderScan:
    """`scan_folder` + `annotate_folder_items`; an exclude pattern that leaves nothing out is a problem."""
    matched: set[str] = set()
    items = scan_folder(folder, exclude, matched)
    source = str(Path(folder).resolve())
    problems = annotate_folder_items(Path(source), items, captions)
    problems += [f"--exclude {p!r} matches no file or folder in {source}" for p in exclude if p not in matched]
    return FolderScan(items, source, problems, list(exclude))
