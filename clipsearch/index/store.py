"""One index = one folder: LanceDB tables (the source of truth), manifest.json, a writer lock.

The FAISS file beside them is derived data (see ann.py); this module only
knows where it lives. lancedb (seconds of start-up: its REST client's models) is imported
when a table is first opened, so reading a manifest (`clipsearch list`, `--help`) needs none.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import platformdirs
import pyarrow as pa

from ..errors import ClipsearchError
from ..files import atomic_write_text
from .integrity import FORMAT_VERSION, damage_message, guarded, is_damage, read_manifest
from .lance_folder import files_fingerprint, table_version
from .schema import SKIPPED_SCHEMA, captions_schema, images_schema, vectors_of

if TYPE_CHECKING:  # annotations only; the connection imports lancedb where it is made
    import lancedb

os.environ.setdefault("LANCEDB_LOG", "error")  # lance logs a warning for every new table

MANIFEST = "manifest.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 255  # a file name's limit on every common file system

IMAGES, CAPTIONS, SKIPPED = "images", "captions", "skipped"
# Rows of files gone from disk stay (marked) until a prune; every reader of images means the others.
LIVE_ROWS, DELETED_ROWS = "deleted = false", "deleted = true"


COMPACT_SMALL_FRAGMENTS = 16  # lancedb's advice: optimize after ~20 modifications or 100k rows


def default_root() -> Path:  # $CLIPSEARCH_HOME, else the per-user data folder (~/.local/share/clipsearch on Linux)
    home = os.environ.get("CLIPSEARCH_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_data_dir("clipsearch", appauthor=False))


def index_root(root: Path | None) -> Path:
    base = root or default_root()
    if base.exists() and not base.is_dir():
        raise ClipsearchError(f"index root {base} is not a folder; give a folder (or a new path) as the root")
    return base


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sql_quote(value: str) -> str:
    """A string literal for LanceDB SQL (the one quoting rule: double the single quotes)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Sequence[Any]) -> str:
    items = ", ".join(sql_quote(v) if isinstance(v, str) else str(int(v)) for v in values)
    return f"{column} IN ({items})"


def sql_in_chunks(column: str, values: Sequence[Any], size: int = 2000) -> Iterator[str]:
    """`sql_in` clauses of at most `size` values each: one clause for 10^5 ids would be slow to parse."""
    for start in range(0, len(values), size):
        yield sql_in(column, values[start : start + size])


class Store:
    """The LanceDB database and manifest of one index folder."""

    def __init__(self, path: Path):
        self.path, self.read_only = path, False  # read_only (`clipsearch serve`): no lock, so no write of any kind
        self._db: lancedb.DBConnection | None = None

    @property
    def db(self) -> lancedb.DBConnection:
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(str(self.path / "db"))
        return self._db

    # -- lifecycle -----------------------------------------------------------
    @staticmethod
    def folder(name: str, root: Path | None = None) -> Path:
        if len(name) > MAX_NAME_LENGTH:
            raise ClipsearchError(f"invalid index name '{name[:40]}...': at most {MAX_NAME_LENGTH} characters")
        if not _NAME_RE.match(name):
            raise ClipsearchError(f"invalid index name '{name}': use letters, digits, '.', '_' and '-'")
        return index_root(root) / name

    @classmethod
    def create(cls, path: Path, manifest: dict[str, Any]) -> Store:
        path.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        dim = int(manifest["dim"])
        store.db.create_table(IMAGES, schema=images_schema(dim), exist_ok=True)
        store.db.create_table(CAPTIONS, schema=captions_schema(dim), exist_ok=True)
        store.db.create_table(SKIPPED, schema=SKIPPED_SCHEMA, exist_ok=True)
        manifest = {
            "format": FORMAT_VERSION,
            "created": now_iso(),
            "ann": None,
            "counts": {},
            "sources": [],
            **manifest,
        }
        store.write_manifest(manifest)
        return store

    @staticmethod
    def exists(path: Path) -> bool:
        return (path / MANIFEST).is_file()

    @classmethod
    def open(cls, path: Path) -> Store:
        if not (path / MANIFEST).is_file():
            raise ClipsearchError(f"no index at {path} (create one with 'clipsearch index')")
        return cls(path)

    @staticmethod
    def list_indexes(root: Path | None = None) -> list[Path]:
        base = index_root(root)
        return sorted(p for p in base.iterdir() if (p / MANIFEST).is_file()) if base.is_dir() else []

    @staticmethod
    def remove(path: Path) -> None:
        if not (path / MANIFEST).is_file():
            raise ClipsearchError(f"no index at {path}")
        shutil.rmtree(path)

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time; a second one is refused rather than interleaved."""
        if self.read_only:  # every write of an index takes this lock first
            raise ClipsearchError(f"index {self.path.name} is open read-only")
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ClipsearchError(
                    f"index {self.path.name} is being written by another process; try again when it finishes"
                ) from None
            try:  # (recorded counts need no reset: they are trusted only in the table states they were counted in)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- manifest ------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.path / MANIFEST)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "updated": now_iso()}
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        manifest = {**self.read_manifest(), **changes}
        self.write_manifest(manifest)
        return manifest

    # -- tables --------------------------------------------------------------
    @guarded
    def table(self, name: str) -> lancedb.table.Table:
        try:
            return self.db.open_table(name)
        except ValueError as error:  # lancedb: "Table 'x' was not found"
            if "not found" not in str(error) or name != SKIPPED:
                raise ClipsearchError(damage_message(self.path.name, error)) from None
        # Only a record of unreadable files: an empty one loses nothing a re-index does not find again.
        return self.db.create_table(SKIPPED, schema=SKIPPED_SCHEMA, exist_ok=True)

    @property
    def images(self) -> lancedb.table.Table:
        return self.table(IMAGES)

    def version(self, name: str = IMAGES) -> int:
        """The table's current version: from its folder's manifest names (no lancedb), else from lancedb."""
        version = table_version(self.path / "db" / f"{name}.lance")
        return version if version is not None else self._lancedb_version(name)

    @guarded
    def _lancedb_version(self, name: str) -> int:
        return int(self.table(name).version)

    def state(self, name: str = IMAGES) -> str | None:
        """The table's version and the fingerprint of its files (None: the table is missing; none is
        created, so `check` stays a read): what recorded counts and the rows file are checked against."""
        folder = self.path / "db" / f"{name}.lance"
        return f"{self.version(name)}:{files_fingerprint(folder)}" if folder.is_dir() else None

    def states(self) -> dict[str, str | None]:
        return {name: self.state(name) for name in (IMAGES, CAPTIONS, SKIPPED)}

    @guarded
    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None) -> pa.Table:
        """Read rows (only the named columns) matching an SQL filter."""
        query = self.table(name).search()
        if where:
            query = query.where(where)
        if columns:
            query = query.select(list(columns))
        try:
            return query.limit(None).to_arrow()
        except Exception as err:  # lancedb reports SQL mistakes as several exception types
            if where and not is_damage(err):
                raise ClipsearchError(f"invalid filter {where!r}: {str(err).splitlines()[0]}") from err
            raise

    @guarded
    def count(self, name: str, where: str | None = None) -> int:
        return int(self.table(name).count_rows(where))

    def counts(self) -> dict[str, int]:
        """Live images, deleted images, skipped files, captions."""
        return {
            "images": self.count(IMAGES, LIVE_ROWS),
            "deleted": self.count(IMAGES, DELETED_ROWS),
            "skipped": self.count(SKIPPED),
            "captions": self.count(CAPTIONS),
        }

    def counts_record(self) -> dict[str, Any]:
        """The manifest entries `counts` and `counts_at` (the table states they hold for)."""
        return {"counts": self.counts(), "counts_at": self.states()}

    def recorded_counts(self) -> dict[str, int] | None:
        """The counts the manifest records, if the tables are still in the states they were counted in."""
        manifest = self.read_manifest()
        current = manifest.get("counts") and manifest.get("counts_at") == self.states()
        return dict(manifest["counts"]) if current else None

    @guarded
    def upsert(self, name: str, rows: pa.Table, on: str | list[str] = "id") -> None:
        """Insert new rows and replace rows whose key already exists (also partial columns)."""
        if rows.num_rows:
            self.table(name).merge_insert(on).when_matched_update_all().when_not_matched_insert_all().execute(rows)

    @guarded
    def update_columns(self, name: str, rows: pa.Table, on: str = "id") -> None:
        """Set some columns of existing rows (rows holds `on` plus those columns)."""
        if rows.num_rows:
            self.table(name).merge_insert(on).when_matched_update_all().execute(rows)

    @guarded
    def add(self, name: str, rows: pa.Table) -> None:
        if rows.num_rows:
            self.table(name).add(rows)

    @guarded
    def label_rows(
        self,
        name: str,
        where: str,
        score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        class_names: Sequence[str],
        label_column: str,
        score_column: str,
        constants: dict[str, str],
        on_batch: Callable[[int], None] | None,
        batch_size: int,
    ) -> np.ndarray:
        """Stream the vectors of the rows matching `where` through `score(vectors) -> (class index,
        score)` and write the class name and score (plus constant columns) back to those rows.
        Memory stays bounded by `batch_size`; returns the class index of every row."""
        ids: list[str] = []
        classes, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        for batch in self.table(name).search().where(where).select(["id", "vector"]).limit(None).to_batches(batch_size):
            table = pa.Table.from_batches([batch])
            best_class, best_score = score(vectors_of(table))
            ids += table.column("id").to_pylist()
            classes.append(np.asarray(best_class, np.int64))
            scores.append(np.asarray(best_score, np.float32))
            if on_batch:
                on_batch(table.num_rows)
        # Written after the scan, never into the snapshot being read.
        class_of_row, score_of_row = np.concatenate(classes), np.concatenate(scores)
        names = np.asarray(class_names, dtype=object)
        for start in range(0, len(ids), batch_size):
            chunk = slice(start, start + batch_size)
            n = len(ids[chunk])
            columns = {
                "id": pa.array(ids[chunk], pa.string()),
                label_column: pa.array(names[class_of_row[chunk]].tolist(), pa.string()),
                score_column: pa.array(score_of_row[chunk], pa.float32()),
                **{column: pa.array([value] * n, pa.string()) for column, value in constants.items()},
            }
            self.update_columns(name, pa.table(columns))
        return class_of_row

    @guarded
    def delete(self, name: str, where: str) -> None:
        self.table(name).delete(where)

    @guarded
    def update(self, name: str, where: str, values: dict[str, Any]) -> None:
        self.table(name).update(where=where, values=values)

    @guarded
    def compact(self) -> None:
        """Merge the small fragments that streamed writes leave behind, once a table holds
        COMPACT_SMALL_FRAGMENTS of them; drop versions over an hour old (younger ones may still be read
        by another process). Not after every small write: a merge can rewrite the large fragment beside
        the small ones (2 GB at 1M rows, ~15 s) to take in one changed row."""
        for name in (IMAGES, CAPTIONS, SKIPPED):
            table = self.table(name)
            if table.stats()["fragment_stats"]["num_small_fragments"] >= COMPACT_SMALL_FRAGMENTS:
                table.optimize(cleanup_older_than=dt.timedelta(hours=1))
        images = self.images
        if images.count_rows() and not any(i.columns == ["key"] for i in images.list_indices()):
            # Search fetches its hits by key; without this every query scans the table.
            self.rebuild_key_index()

    def rebuild_key_index(self) -> None:
        """(Re)create the BTree index on `key`, dropping a broken one first."""
        from lancedb.index import BTree

        images = self.db.open_table(IMAGES)
        for index in images.list_indices():
            if index.columns == ["key"]:
                images.drop_index(index.name)
        if images.count_rows():
            images.create_index("key", config=BTree())

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
