"""The images table without its vectors, in one memory-mapped Arrow file beside the FAISS file.

Search fetches its hits' rows by key and a re-index plans over the stored columns. Through lancedb
the first costs its import on a cold start (1.4 s) plus a filtered scan per query (5 ms at 100k
rows, 17 ms at 1M), the second a scan of the table. This file, sorted by key, answers a hit look-up
in microseconds (binary search, then take) and needs no lancedb at all.

Like the FAISS file it is derived data, trusted only when the manifest's `rows` entry names this
index (its uuid), the images table is still at the version it was written at with the same files
(lance_folder.py: a damaged table is read, and reported, by lancedb), and the file has the recorded
size and columns; otherwise readers scan the table. A write refreshes it from the rows that
write changed (the others are kept as they are), and rebuilds it from the table when it was not
current before the write or the row count disagrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..files import atomic_write
from .store import DELETED_ROWS, IMAGES, Store, sql_in_chunks

ROWS_FILE = "images.rows.arrow"


def row_columns(store: Store) -> list[str]:
    """Every column of the images table but the vector."""
    return [field.name for field in store.images.schema if field.name != "vector"]


class RowsFile:
    """The rows file of a store, and the mapped table last read from it."""

    def __init__(self, store: Store):
        self.store, self.path = store, store.path / ROWS_FILE
        self._mapped: tuple[dict[str, Any], pa.Table, np.ndarray] | None = None  # (entry, rows, their keys)

    def current(self) -> pa.Table | None:
        """The stored rows (no vectors, sorted by key) for the table as it is now, or None (scan it)."""
        found = self._read(self.store.read_manifest(), self.store.version())
        return found[0] if found else None

    def take(self, keys: Sequence[int]) -> pa.Table | None:
        """The stored rows with these keys (any that exist, in key order), or None when the file is not current."""
        found = self._read(self.store.read_manifest(), self.store.version())
        if found is None:
            return None
        rows, stored_keys = found
        wanted = np.unique(np.asarray(keys, np.int64))
        at = np.minimum(np.searchsorted(stored_keys, wanted), max(len(stored_keys) - 1, 0))
        hit = at[stored_keys[at] == wanted] if len(stored_keys) else at[:0]
        return rows.take(pa.array(hit, pa.int64()))

    def _read(self, manifest: dict[str, Any], version: int, verify: bool = True) -> tuple[pa.Table, np.ndarray] | None:
        """The rows and their keys, if the manifest's entry vouches for the file at this table version. The
        table's files are compared with the entry's fingerprint (`verify`) once per mapping, not per query."""
        record = manifest.get("rows") or {}
        if not record.get("index_uuid") or record.get("index_uuid") != manifest.get("uuid"):
            return None
        if record.get("table_version") != version:
            return None
        if self._mapped is not None and self._mapped[0] == record:
            return self._mapped[1], self._mapped[2]
        if verify and record.get("table_state") != self.store.state(IMAGES):  # damaged: the table says so
            return None
        try:
            if self.path.stat().st_size != record.get("bytes"):
                return None
            rows = ipc.open_file(pa.memory_map(str(self.path))).read_all()
        except (OSError, pa.ArrowInvalid):  # missing, a folder, torn or not an Arrow file: scan instead
            return None
        if rows.column_names != record.get("columns") or rows.num_rows != record.get("n"):
            return None
        keys = rows.column("key").to_numpy()
        self._mapped = (record, rows, keys)
        return rows, keys

    def rebuild(self) -> dict[str, Any]:
        """Write the file from the whole table; returns the updated manifest."""
        return self._write(self.store.scan(IMAGES, row_columns(self.store)))

    def refresh(self, changed_ids: Sequence[str], written_keys: Sequence[int], version_before: int) -> dict[str, Any]:
        """After a write (under the writer lock) that changed the rows with these ids or keys: their rows read
        again, the others kept, the deleted flags read again. Returns the updated manifest."""
        manifest = self.store.read_manifest()
        before = self._read(manifest, version_before, verify=False)  # (the table has moved on since)
        if before is None:
            return self.rebuild()
        if self.store.version() == version_before:
            return manifest
        columns = before[0].column_names
        fresh = [
            self.store.scan(IMAGES, columns, clause)
            for values, column in ((changed_ids, "id"), (written_keys, "key"))
            for clause in sql_in_chunks(column, list(values))
        ]
        fresh_rows = pa.concat_tables([before[0].schema.empty_table(), *(t.cast(before[0].schema) for t in fresh)])
        fresh_rows = fresh_rows.take(pc.unique(pc.index_in(fresh_rows.column("id"), fresh_rows.column("id"))))
        replaced = pa.concat_arrays([pa.array(list(changed_ids), pa.string()), *fresh_rows.column("id").chunks])
        kept = before[0].filter(pc.invert(pc.is_in(before[0].column("id"), value_set=replaced)))
        deleted = self.store.scan(IMAGES, ["key"], DELETED_ROWS).column("key")
        flags = pc.is_in(kept.column("key"), value_set=deleted.combine_chunks())
        kept = kept.set_column(columns.index("deleted"), "deleted", flags)
        rows = pa.concat_tables([kept, fresh_rows])
        if rows.num_rows != self.store.count(IMAGES):  # rows gone some other way: read them all
            return self.rebuild()
        return self._write(rows)

    def _write(self, rows: pa.Table) -> dict[str, Any]:
        rows = rows.sort_by("key").combine_chunks()

        def write(handle: Any) -> None:
            with ipc.new_file(handle, rows.schema) as writer:
                writer.write_table(rows)

        atomic_write(self.path, write)
        uuid = self.store.read_manifest().get("uuid") or uuid4().hex  # (the FAISS file's save sets it first)
        record = {
            "file": ROWS_FILE,
            "bytes": self.path.stat().st_size,
            "n": rows.num_rows,
            "columns": rows.column_names,
            "table_version": self.store.version(),
            "table_state": self.store.state(IMAGES),
            "index_uuid": uuid,
        }
        return self.store.update_manifest(uuid=uuid, rows=record)
