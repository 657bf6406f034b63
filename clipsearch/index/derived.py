"""What a write derives from the tables, kept together: compaction, the FAISS file (ann_file.py), the
rows file (rows_file.py) and the counts, each recorded in the manifest with the table version it holds.
A write that changed no table (an unchanged re-index) finds them current and leaves them alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .ann_file import AnnFile
from .rows_file import RowsFile, row_columns
from .store import IMAGES, Store, sql_in


class DerivedFiles:
    """The FAISS file and the rows file of one store."""

    def __init__(self, store: Store, dim: int):
        self.store, self.ann, self.rows = store, AnnFile(store, dim), RowsFile(store)

    def update(self, written_keys: Sequence[int], changed_keys: Sequence[int], version_before: int) -> dict[str, Any]:
        """After a write (under the writer lock): compaction, then both files and the counts brought up to
        the table; returns the updated manifest."""
        self.store.compact()
        self.ann.update(list(written_keys), version_before)
        return self.rows.refresh([*written_keys, *changed_keys], version_before)

    def rebuild(self) -> dict[str, Any]:
        """Both files built from the table (the source of truth); returns the updated manifest."""
        self.ann.rebuild()
        return self.rows.rebuild()

    def current(self) -> bool:
        """Whether both files and the counts are recorded for the tables as they are now (then a write
        that changed no table, such as an unchanged re-index, has nothing more to do)."""
        manifest, version = self.store.read_manifest(), self.store.version()
        ann_record, rows_record = manifest.get("ann") or {}, manifest.get("rows") or {}
        uuid = manifest.get("uuid")
        ours = bool(uuid) and ann_record.get("index_uuid") == rows_record.get("index_uuid") == uuid
        recorded = ann_record.get("table_version") == rows_record.get("table_version") == version
        return ours and recorded and self.store.recorded_counts() is not None

    def rows_of_keys(self, keys: Sequence[int]) -> pa.Table:
        """The stored rows (without vectors) with these keys: from the rows file when it is current."""
        rows = self.rows.take(keys)
        return rows if rows is not None else self.store.scan(IMAGES, row_columns(self.store), sql_in("key", keys))
