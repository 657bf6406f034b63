"""The FAISS file of one index folder, and the manifest entry that vouches for it.

The table is the source of truth; the FAISS file is trusted only when the manifest's entry
names this index (its uuid), the table version it was built from is the current one, and the
file has the recorded size and checksum. Anything else (missing, a directory, truncated,
garbage, another index's file, an older version) is rebuilt from the table, never read.
A write changes the loaded index in place and saves it only when it changed: a small change as a
delta file beside the FAISS file (ann_delta.py), a large one (or a small index) in full.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import faiss
import numpy as np
import pyarrow as pa

from ..errors import ClipsearchError
from . import ann, ann_delta
from .ann_delta import DELTA_FILE, Delta
from .integrity import damage_message, is_damage
from .schema import vectors_of
from .store import DELETED_ROWS, IMAGES, LIVE_ROWS, Store, sql_in_chunks

FAISS_FILE = "images.faiss"
BUILD_BATCH = 65_536  # rows read at a time by a build (128 MB of 512-d vectors)


class AnnFile:
    """The loaded FAISS index of a store, the table version it holds, and its file."""

    def __init__(self, store: Store, dim: int):
        self.store, self.dim = store, dim
        self.path = store.path / FAISS_FILE
        self.index: faiss.Index | None = None
        self.version: int | None = None  # the table version `index` holds
        self.files: tuple[Any, Any] | None = None  # checksums of the base and delta `index` was saved as or read from
        self.delta = Delta.empty(dim)  # what `index` holds beyond the base file

    def rebuild(self) -> dict[str, Any]:
        """Build from the table's live rows and save; returns the updated manifest."""
        return self._save(*self._build())

    def _build(self) -> tuple[faiss.Index, dict[str, Any]]:
        index, info = ann.build_streamed(self.store.count(IMAGES, LIVE_ROWS), self.dim, self._live_batches)
        return index, info.to_dict()

    def _live_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) of the live rows, BUILD_BATCH rows at a time (a build holds no copy of the table)."""
        query = self.store.table(IMAGES).search().where(LIVE_ROWS).select(["key", "vector"]).limit(None)
        try:
            for batch in query.to_batches(BUILD_BATCH):
                table = pa.Table.from_batches([batch])
                yield table.column("key").to_numpy(), vectors_of(table)
        except (RuntimeError, OSError) as error:
            if not is_damage(error):
                raise
            raise ClipsearchError(damage_message(self.store.path.name, error)) from error

    def _save(self, index: faiss.Index, info: dict[str, Any]) -> dict[str, Any]:
        """Write the whole file (a directory in its place goes) and the entry that vouches for it: size,
        checksum, and the table (index uuid + version) it was built from; no delta."""
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        written = ann.save(index, self.path)
        version, uuid = self.store.version(), self.store.read_manifest().get("uuid") or uuid4().hex
        record = {**info, **written, "n": int(index.ntotal), "file": FAISS_FILE, "table_version": version}
        record = {**record, "index_uuid": uuid, "delta": None}
        manifest = self.store.update_manifest(uuid=uuid, ann=record, **self.store.counts_record())
        (self.store.path / DELTA_FILE).unlink(missing_ok=True)  # only once the manifest no longer names it
        self._hold(index, version, record, Delta.empty(self.dim))
        return manifest

    def _save_change(self, index: faiss.Index, record: dict[str, Any], change: Delta) -> dict[str, Any]:
        """`index` (the held one, changed by `change`) saved as its base file plus the merged delta; in full
        once the delta grows past its limit."""
        delta = self.delta.merged(change.keys, change.vectors, change.removed)
        if ann_delta.should_fold(delta, int(record.get("bytes") or 0), int(index.ntotal)):
            return self._save(index, record)
        written = ann_delta.write(delta, self.store.path)
        version = self.store.version()
        record = {**record, "n": int(index.ntotal), "table_version": version, "delta": written}
        manifest = self.store.update_manifest(ann=record, **self.store.counts_record())
        self._hold(index, version, record, delta)
        return manifest

    def _hold(self, index: faiss.Index, version: int, record: dict[str, Any], delta: Delta) -> None:
        self.index, self.version, self.files, self.delta = index, version, _files(record), delta

    def _load(self, manifest: dict[str, Any]) -> tuple[faiss.Index, Delta] | None:
        """The index, if the manifest vouches for its files for the current table version; else None."""
        record = manifest.get("ann") or {}
        if not record.get("index_uuid") or record.get("index_uuid") != manifest.get("uuid"):
            return None
        if record.get("table_version") != self.store.version():
            return None
        return load_recorded(self.store.path, record, self.dim)[0]

    def update(self, written_keys: list[int], version_before: int) -> dict[str, Any]:
        """After a write (under the writer lock): new vectors in, deleted keys out, in place, saved only if
        the index changed; rebuilt when it was not current before the write, its type changes by size,
        or its training went stale. Returns the updated manifest."""
        manifest = self.store.read_manifest()
        record = manifest.get("ann") or {}
        n_live = self.store.count(IMAGES, LIVE_ROWS)
        current = record.get("table_version") == version_before and not ann.needs_rebuild(record, n_live)
        index = None
        if current and self.index is not None and (self.version, self.files) == (version_before, _files(record)):
            index = self.index  # what the files hold (another process may have rebuilt them: then load those)
        elif current and record.get("index_uuid") == manifest.get("uuid"):
            loaded = load_recorded(self.store.path, record, self.dim)[0]
            if loaded is not None:
                index, self.delta = loaded
        if index is None:
            return self.rebuild()
        keys, vectors, remove = self._changes(index, np.asarray(written_keys, np.int64), n_live)
        if ann.update(index, keys, vectors, remove):
            return self._save_change(index, record, Delta(remove, keys, vectors))
        # Same vectors (labels, or a compaction, changed the version): re-stamp, nothing written.
        self._hold(index, self.store.version(), record, self.delta)
        return self.store.update_manifest(ann={**record, "table_version": self.version}, **self.store.counts_record())

    def _changes(
        self, index: faiss.Index, written: np.ndarray, n_live: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys to add, their vectors, keys to remove) that bring `index`, current before this write, to the
        table. Only the written rows and the rows marked deleted can differ from it: two small scans, unless
        the live count says otherwise (rows gone some other way), when every live key is compared."""
        held = ann.stored_keys(index)
        deleted = self.store.scan(IMAGES, ["key"], DELETED_ROWS).column("key").to_numpy()
        keys, vectors = self._vectors_of_keys(np.setdiff1d(written, deleted))
        remove = held[np.isin(held, np.concatenate([deleted, written]))]
        if len(held) - len(remove) + len(keys) != n_live:
            live = self.store.scan(IMAGES, ["key"], LIVE_ROWS).column("key").to_numpy()
            add, remove = ann.changes(held, live, written)
            keys, vectors = self._vectors_of_keys(add)
        return keys, vectors, remove

    def _vectors_of_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys found, their vectors) of the stored rows with these keys."""
        tables = [self.store.scan(IMAGES, ["key", "vector"], clause) for clause in sql_in_chunks("key", keys.tolist())]
        if not tables:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        rows = pa.concat_tables(tables)
        return rows.column("key").to_numpy().astype(np.int64), vectors_of(rows)

    def restamp(self, old_version: int | None) -> int:
        """Only label columns changed: the index is still current for the new table version."""
        version = self.store.version()
        if self.index is not None and self.version == old_version:
            self.version = version
        return version

    def current(self) -> tuple[faiss.Index, dict[str, Any] | None]:
        """The index for the table as it is now, and the manifest when it was read again: one version
        look-up per call, so another process's re-index or prune shows on the next query."""
        version = self.store.version()
        if self.index is not None and version == self.version:
            return self.index, None
        manifest = self.store.read_manifest()
        loaded = self._load(manifest)
        if loaded is not None:
            self._hold(loaded[0], version, manifest["ann"], loaded[1])
            return loaded[0], manifest
        try:  # rebuild and save under the writer lock
            with self.store.writer_lock():
                manifest = self.rebuild()
        except (ClipsearchError, OSError):  # another process writes (its FAISS file follows), or a read-only folder
            if self.index is None:  # meanwhile: the index as it was, else one built in memory for this version
                self.index, self.version, self.files = self._build()[0], version, None
            return self.index, manifest
        assert self.index is not None
        return self.index, manifest


def _files(record: dict[str, Any]) -> tuple[Any, Any]:
    """What identifies the files an entry describes: the checksums of the base and of the delta."""
    return record.get("checksum"), (record.get("delta") or {}).get("checksum")


def load_recorded(folder: Path, record: dict[str, Any], dim: int) -> tuple[tuple[faiss.Index, Delta] | None, str]:
    """((index, its delta), "") when the entry vouches for the base file and its delta file (the delta
    applied), else (None, what is wrong)."""
    index = ann.load_verified(folder / FAISS_FILE, record, dim)
    if index is None:
        return None, f"{FAISS_FILE}: does not match the manifest's size and checksum, or is not a FAISS index"
    delta, problem = ann_delta.read_verified(folder, record.get("delta"), dim)
    if delta is None:
        return None, problem or ""
    delta.apply(index)
    return (index, delta), ""
