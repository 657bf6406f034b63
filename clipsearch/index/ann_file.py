"""The FAISS file of one index folder, and the manifest entry that vouches for it.

The table is the source of truth; the FAISS file is trusted only when the manifest's entry
names this index (its uuid), the table version it was built from is the current one, and the
file has the recorded size and checksum. Anything else (missing, a directory, truncated,
garbage, another index's file, an older version) is rebuilt from the table, never read.
A write changes the loaded index in place and saves it only when it changed.
"""

from __future__ import annotations

import shutil
from typing import Any
from uuid import uuid4

import faiss
import numpy as np
import pyarrow as pa

from ..errors import ClipsearchError
from . import ann
from .store import IMAGES, LIVE_ROWS, Store, sql_in_chunks, vectors_of

FAISS_FILE = "images.faiss"


class AnnFile:
    """The loaded FAISS index of a store, the table version it holds, and its file."""

    def __init__(self, store: Store, dim: int):
        self.store, self.dim = store, dim
        self.path = store.path / FAISS_FILE
        self.index: faiss.Index | None = None
        self.version: int | None = None  # the table version `index` holds
        self.checksum: str | None = None  # of the file `index` was saved as or loaded from

    def rebuild(self) -> dict[str, Any]:
        """Build from the table's live rows and save; returns the updated manifest."""
        index, info = ann.build(*self._live_vectors())
        return self._save(index, info.to_dict())

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        table = self.store.scan(IMAGES, ["key", "vector"], LIVE_ROWS)
        return table.column("key").to_numpy(), vectors_of(table)

    def _save(self, index: faiss.Index, info: dict[str, Any]) -> dict[str, Any]:
        """Write the file (a directory in its place goes) and the entry that vouches for it: size,
        checksum, and the table (index uuid + version) it was built from."""
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        written = ann.save(index, self.path)
        version, uuid = self.store.version(), self.store.read_manifest().get("uuid") or uuid4().hex
        self.index, self.version, self.checksum = index, version, written["checksum"]
        record = {**info, **written, "n": int(index.ntotal), "file": FAISS_FILE, "table_version": version}
        return self.store.update_manifest(uuid=uuid, ann={**record, "index_uuid": uuid}, counts=self.store.counts())

    def _load(self, manifest: dict[str, Any]) -> faiss.Index | None:
        """The file, if the manifest vouches for it for the current table version; else None."""
        record = manifest.get("ann") or {}
        if not record.get("index_uuid") or record.get("index_uuid") != manifest.get("uuid"):
            return None
        if record.get("table_version") != self.store.version():
            return None
        return ann.load_verified(self.path, record, self.dim)

    def update(self, written_keys: list[int], version_before: int) -> dict[str, Any]:
        """After a write (under the writer lock): new vectors in, deleted keys out, in place, saved only if
        the index changed; rebuilt when it was not current before the write, its type changes by size,
        or its training went stale. Returns the updated manifest."""
        manifest = self.store.read_manifest()
        record = manifest.get("ann") or {}
        live = self.store.scan(IMAGES, ["key"], LIVE_ROWS).column("key").to_numpy()
        current = record.get("table_version") == version_before and not ann.needs_rebuild(record, len(live))
        index = None
        held = (self.version, self.checksum)
        if current and self.index is not None and held == (version_before, record.get("checksum")):
            index = self.index  # what the file holds (another process may have rebuilt it: then load that)
        elif current and record.get("index_uuid") == manifest.get("uuid"):
            index = ann.load_verified(self.path, record, self.dim)
        if index is None:
            return self.rebuild()
        add, remove = ann.changes(ann.stored_keys(index), live, np.asarray(written_keys, np.int64))
        tables = [self.store.scan(IMAGES, ["key", "vector"], clause) for clause in sql_in_chunks("key", add.tolist())]
        rows = pa.concat_tables(tables) if tables else None
        vectors = vectors_of(rows) if rows is not None else np.zeros((0, self.dim), np.float32)
        keys = rows.column("key").to_numpy() if rows is not None else add
        if ann.update(index, keys, vectors, remove):
            return self._save(index, record)
        # Same vectors (labels, or a compaction, changed the version): re-stamp, nothing written.
        self.index, self.version = index, self.store.version()
        return self.store.update_manifest(ann={**record, "table_version": self.version}, counts=self.store.counts())

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
        index = self._load(manifest)
        if index is not None:
            self.index, self.version, self.checksum = index, version, manifest["ann"]["checksum"]
            return index, manifest
        try:  # rebuild and save under the writer lock
            with self.store.writer_lock():
                manifest = self.rebuild()
        except (ClipsearchError, OSError):  # another process writes (its FAISS file follows), or a read-only folder
            if self.index is None:  # meanwhile: the index as it was, else one built in memory for this version
                self.index, self.version = ann.build(*self._live_vectors())[0], version
            return self.index, manifest
        assert self.index is not None
        return self.index, manifest
