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
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..files import atomic_write
from .store import DELETED_ROWS, IMAGES, Store, sql_in_chunks

ROWS_FILE = "images.rows.arrow"
MAX_BATCHES = 64  # record batches in the file; past this a write copies the rows into one


def row_columns(store: Store) -> list[str]:
    """Every column of the images table but the vector."""
    return [field.name for field in store.images.schema if field.name != "vector"]


@dataclass(frozen=True)
class _Mapped:
    """The rows of a mapped file (sorted by key), their keys, and where each record batch starts."""

    record: dict[str, Any]  # the manifest entry the file was read under
    rows: pa.Table
    keys: np.ndarray
    batches: list[pa.RecordBatch]
    starts: np.ndarray

    @classmethod
    def of(cls, record: dict[str, Any], rows: pa.Table) -> _Mapped:
        batches = rows.to_batches()
        starts = np.cumsum([0, *(batch.num_rows for batch in batches)])[:-1]
        return cls(record, rows, rows.column("key").to_numpy(), batches, starts)

    def take(self, positions: np.ndarray) -> pa.Table:
        """The rows at these ascending positions, taken batch by batch (a take over a table of many
        batches first joins them: 30 ms at 1M rows)."""
        batch_of = np.searchsorted(self.starts, positions, side="right") - 1
        pieces = [
            self.batches[b].take(pa.array(positions[batch_of == b] - self.starts[b], pa.int64()))
            for b in np.unique(batch_of)
        ]
        return pa.Table.from_batches(pieces, self.rows.schema)


class RowsFile:
    """The rows file of a store, and the mapped table last read from it."""

    def __init__(self, store: Store):
        self.store, self.path = store, store.path / ROWS_FILE
        self._mapped: _Mapped | None = None

    def current(self) -> pa.Table | None:
        """The stored rows (no vectors, sorted by key) for the table as it is now, or None (scan it)."""
        mapped = self._read(self.store.read_manifest(), self.store.version())
        return mapped.rows if mapped else None

    def take(self, keys: Sequence[int]) -> pa.Table | None:
        """The stored rows with these keys (any that exist, in key order), or None when the file is not current."""
        mapped = self._read(self.store.read_manifest(), self.store.version())
        if mapped is None:
            return None
        return mapped.take(_positions(mapped.keys, np.unique(np.asarray(keys, np.int64))))

    def _read(self, manifest: dict[str, Any], version: int, verify: bool = True) -> _Mapped | None:
        """The rows and their keys, if the manifest's entry vouches for the file at this table version. The
        table's files are compared with the entry's fingerprint (`verify`) once per mapping, not per query."""
        record = manifest.get("rows") or {}
        if not record.get("index_uuid") or record.get("index_uuid") != manifest.get("uuid"):
            return None
        if record.get("table_version") != version:
            return None
        if self._mapped is not None and self._mapped.record == record:
            return self._mapped
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
        self._mapped = _Mapped.of(record, rows)
        return self._mapped

    def rebuild(self) -> dict[str, Any]:
        """Write the file from the whole table; returns the updated manifest."""
        return self._write(self.store.scan(IMAGES, row_columns(self.store)).sort_by("key"))

    def refresh(self, keys: Sequence[int], version_before: int) -> dict[str, Any]:
        """After a write (under the writer lock) that wrote, changed or removed the rows with these keys: their
        rows read again, the others kept (zero-copy slices of the mapped file), every deleted flag read again.
        Returns the updated manifest."""
        manifest = self.store.read_manifest()
        before = self._read(manifest, version_before, verify=False)  # (the table has moved on since)
        if before is None:
            return self.rebuild()
        if self.store.version() == version_before:
            return manifest
        rows, stored_keys = before.rows, before.keys
        keys = np.unique(np.asarray(keys, np.int64))
        scans = [self.store.scan(IMAGES, rows.column_names, clause) for clause in sql_in_chunks("key", keys.tolist())]
        fresh = pa.concat_tables([rows.schema.empty_table(), *(t.cast(rows.schema) for t in scans)])
        fresh = fresh.sort_by("key") if fresh.num_rows else fresh
        merged, merged_keys = _merge(rows, stored_keys, _positions(stored_keys, keys), fresh)
        if merged.num_rows != self.store.count(IMAGES):  # rows gone some other way: read them all
            return self.rebuild()
        deleted = pa.array(
            np.isin(merged_keys, self.store.scan(IMAGES, ["key"], DELETED_ROWS).column("key").to_numpy())
        )
        before_flags = merged.column("deleted")  # true where marked before; a false or null one stays as it is
        flags = pc.if_else(deleted, True, pc.if_else(pc.fill_null(before_flags, False), False, before_flags))
        return self._write(merged.set_column(rows.column_names.index("deleted"), "deleted", flags))

    def _write(self, rows: pa.Table) -> dict[str, Any]:
        """Write `rows` (sorted by key) atomically; the manifest entry vouches for the file."""
        if rows.column("key").num_chunks > MAX_BATCHES:  # slices of slices pile up over many writes
            rows = rows.combine_chunks()

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


def _positions(stored_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Where the sorted, unique `keys` that are stored sit in `stored_keys` (sorted)."""
    at = np.searchsorted(stored_keys, keys)
    inside = at < len(stored_keys)
    return at[inside][stored_keys[at[inside]] == keys[inside]]


MAX_MERGED_PIECES = 2048  # more changed rows than this: one sort instead of a table of thousands of slices


def _merge(rows: pa.Table, keys: np.ndarray, gone: np.ndarray, fresh: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """`rows` (sorted by `keys`) without the positions `gone`, with `fresh` (sorted by key) in key order, and the
    merged keys. Built from slices of `rows` (no copy of the kept rows) unless the change is large."""
    kept_keys = np.delete(keys, gone)
    fresh_keys = fresh.column("key").to_numpy() if fresh.num_rows else np.zeros(0, np.int64)
    merged_keys = np.concatenate([kept_keys, fresh_keys])
    if len(gone) + len(fresh_keys) > MAX_MERGED_PIECES:
        order = np.argsort(merged_keys, kind="stable")
        kept = rows.take(pa.array(np.delete(np.arange(len(keys)), gone)))
        return pa.concat_tables([kept, fresh]).take(pa.array(order)), merged_keys[order]
    # Cut `rows` at every removed position and at every fresh row's place (both in key order of `rows`).
    inserts = np.searchsorted(keys, fresh_keys)
    cuts = sorted({0, len(keys), *gone.tolist(), *(gone + 1).tolist(), *inserts.tolist()})
    removed, pieces = set(gone.tolist()), []
    places, firsts, counts = np.unique(inserts, return_index=True, return_counts=True)
    inserted = {int(p): (int(f), int(c)) for p, f, c in zip(places, firsts, counts)}  # place -> fresh rows there
    for start, end in zip(cuts, [*cuts[1:], None]):
        if start in inserted:
            pieces.append(fresh.slice(*inserted[start]))
        if end is not None and start not in removed:
            pieces.append(rows.slice(start, end - start))
    merged = pa.concat_tables([rows.schema.empty_table(), *pieces]) if pieces else rows.schema.empty_table()
    return merged, np.sort(merged_keys, kind="stable")
