"""`clipsearch check`: verify every file of an index against the others, and repair what can be.

LanceDB is the source of truth; the FAISS file, the BTree index on `key` and the manifest's
counts are derived from it and are rebuilt by a repair. A table whose newest version cannot be
read is rolled back to its newest version that can (LanceDB keeps versions), and the rows of the
damaged version that are still readable are kept. The manifest itself cannot be derived (it names
the model): a broken one is reported with its fix, never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ClipsearchError
from . import ann
from .ann_file import FAISS_FILE, load_recorded
from .index import Index
from .integrity import damage_message, error_summary
from .rows_file import ROWS_FILE, RowsFile, row_columns
from .schema import vectors_of
from .store import CAPTIONS, IMAGES, SKIPPED, Store, sql_in

UNIT_TOLERANCE = 1e-3  # |norm - 1| above this is not a unit vector (float32 rounding is ~1e-7)
READ_CHUNK = 4096  # rows per read when salvaging a damaged table
# What the checks read of each table at once; vectors are streamed (VECTOR_BATCH rows at a time).
_COLUMNS = {IMAGES: ["id", "key", "deleted"], CAPTIONS: ["image_id"], SKIPPED: ["id"]}
VECTOR_BATCH = 65536


@dataclass
class CheckReport:
    """What `check` found (one line per problem) and, with --repair, what it did."""

    name: str
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "healthy": self.healthy, "problems": self.problems, "repaired": self.repaired}


def check_index(name: str, root: Path | None = None, repair: bool = False) -> CheckReport:
    """Check index `name`; with `repair`, rebuild what is derived, roll damaged tables back, check again."""
    path = Store.folder(name, root)
    if not Store.exists(path):
        raise ClipsearchError(f"unknown index '{name}' in {path.parent} (see 'clipsearch list')")
    report = inspect(path)
    if repair and not report.healthy:
        repaired = repair_index(path)
        report = inspect(path)
        report.repaired = repaired
    return report


# -- checking ------------------------------------------------------------------
def inspect(path: Path) -> CheckReport:
    """Every problem of the index folder at `path`, one line each; changes nothing."""
    report = CheckReport(path.name)
    store = Store(path)
    try:
        manifest = store.read_manifest()
    except ClipsearchError as error:
        report.problems.append(str(error))
        return report
    tables = {name: _read_table(store, name, report.problems) for name in _COLUMNS}
    images, captions = tables[IMAGES], tables[CAPTIONS]
    dim = int(manifest["dim"])
    if images is not None:
        report.problems += _vector_problems(store, IMAGES, dim) + _image_problems(images, store.recorded_counts())
        report.problems += _key_index_problems(store, images)
        report.problems += _faiss_problems(store, images, manifest) + _rows_file_problems(store)
    if captions is not None:
        report.problems += _vector_problems(store, CAPTIONS, dim)
        if images is not None:
            live = set(_live(images).column("id").to_pylist())
            orphans = len(set(captions.column("image_id").to_pylist()) - live)
            if orphans:
                report.problems.append(f"table {CAPTIONS}: captions of {orphans} images that are not live")
    return report


def _read_table(store: Store, name: str, problems: list[str]) -> pa.Table | None:
    """All rows of a table (the columns checks need), or None with a problem when it cannot be read."""
    if not (store.path / "db" / f"{name}.lance").is_dir():
        problems.append(f"table {name}: missing ({store.path / 'db' / name}.lance)")
        return None
    try:
        return store.db.open_table(name).search().select(_COLUMNS[name]).limit(None).to_arrow()
    except Exception as error:  # any failure to read means the same: the table is damaged
        problems.append(f"table {name}: cannot be read ({error_summary(error)})")
        return None


def _live(images: pa.Table) -> pa.Table:
    return images.filter(pa.compute.invert(images.column("deleted").fill_null(False)))


def _image_problems(images: pa.Table, counts: dict[str, int] | None) -> list[str]:
    """Duplicate ids or keys; recorded counts (when current: recorded at these table versions) that are wrong."""
    problems = []
    for column in ("id", "key"):
        values = images.column(column).to_numpy(zero_copy_only=False)
        duplicates = len(values) - len(np.unique(values))
        if duplicates:
            problems.append(f"table {IMAGES}: {duplicates} duplicate {column}s")
    counts = counts or {}
    live = _live(images).num_rows
    if "images" in counts and counts["images"] != live:
        problems.append(f"manifest counts {counts['images']} images, the table holds {live}")
    return problems


def _vector_problems(store: Store, name: str, dim: int) -> list[str]:
    """Every vector has the manifest's width and unit length (read in batches: memory stays bounded)."""
    table = store.db.open_table(name)
    width = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(width) or width.list_size != dim:
        return [f"table {name}: vectors are {width}, the manifest says {dim} dimensions"]
    bad = 0
    try:
        for batch in table.search().select(["vector"]).limit(None).to_batches(VECTOR_BATCH):
            norms = np.linalg.norm(vectors_of(pa.Table.from_batches([batch])), axis=1)
            bad += int(np.sum(~(np.abs(norms - 1) <= UNIT_TOLERANCE)))  # NaN counts as bad
    except Exception as error:  # a data file holding vectors is damaged
        return [f"table {name}: vectors cannot be read ({error_summary(error)})"]
    return [f"table {name}: {bad} vectors are not unit length"] if bad else []


def _key_index_problems(store: Store, images: pa.Table) -> list[str]:
    """The BTree index on `key` exists and answers a look-up."""
    if images.num_rows == 0:
        return []
    table = store.db.open_table(IMAGES)
    if not any(index.columns == ["key"] for index in table.list_indices()):
        return [f"table {IMAGES}: no BTree index on key (searches would scan the table)"]
    key = int(images.column("key")[0].as_py())
    try:
        found = table.search().where(f"key = {key}").select(["key"]).limit(None).to_arrow().num_rows
    except Exception as error:
        return [f"table {IMAGES}: the BTree index on key is broken ({error_summary(error)})"]
    return [] if found == 1 else [f"table {IMAGES}: the BTree index on key finds {found} rows for key {key}"]


def _rows_file_problems(store: Store) -> list[str]:
    """A rows file the manifest vouches for holds the table's rows (one not vouched for is never read)."""
    rows = RowsFile(store).current()
    if rows is None or rows.equals(store.scan(IMAGES, row_columns(store)).sort_by("key")):
        return []
    return [f"{ROWS_FILE}: its rows differ from the table's"]


def _faiss_problems(store: Store, images: pa.Table, manifest: dict[str, Any]) -> list[str]:
    """The FAISS file is the one the manifest describes, built from this table version, holding its live rows."""
    record, path = manifest.get("ann") or {}, store.path / FAISS_FILE
    if not record:
        return [f"{FAISS_FILE}: the manifest records none (an interrupted write)"]
    if not path.is_file():
        return [f"{FAISS_FILE}: {'not a file' if path.exists() else 'missing'} ({path})"]
    if record.get("index_uuid") != manifest.get("uuid"):
        return [f"{FAISS_FILE}: the manifest's entry is not for this index (uuid {record.get('index_uuid')})"]
    if record.get("table_version") != int(store.db.open_table(IMAGES).version):
        return [f"{FAISS_FILE}: built from table version {record.get('table_version')}, the table is newer"]
    loaded, problem = load_recorded(store.path, record, int(manifest["dim"]))  # the base file, then its delta
    if loaded is None:
        return [problem]
    index = loaded[0]
    live = _live(images)
    keys = live.column("key").to_numpy()
    if index.ntotal != len(keys) or not np.array_equal(np.sort(ann.stored_keys(index)), np.sort(keys)):
        return [f"{FAISS_FILE}: holds {index.ntotal} vectors, not the table's {len(keys)} live rows"]
    if ann.is_exact(index) and len(keys):
        sample = sorted({int(keys[i]) for i in np.linspace(0, len(keys) - 1, min(len(keys), 64)).astype(np.int64)})
        query = store.db.open_table(IMAGES).search().where(sql_in("key", sample)).select(["key", "vector"])
        try:
            rows = query.limit(None).to_arrow().sort_by("key")
        except Exception:  # a broken key index, reported by its own check
            return []
        stored = np.stack([index.reconstruct(key) for key in rows.column("key").to_pylist()])
        if not np.allclose(stored, vectors_of(rows), atol=1e-5):
            return [f"{FAISS_FILE}: its vectors differ from the table's"]
    return []


# -- repairing -------------------------------------------------------------------
def repair_index(path: Path) -> list[str]:
    """Roll damaged tables back (keeping rows still readable), then rebuild the key index, the
    FAISS file and the counts. Returns one line per thing done."""
    store = Store(path)
    try:
        store.read_manifest()
    except ClipsearchError:
        return []  # the manifest names the model: nothing can be rebuilt without it
    done: list[str] = []
    with store.writer_lock():
        for name in _COLUMNS:
            if not (path / "db" / f"{name}.lance").is_dir():
                if name != SKIPPED:
                    continue  # rows cannot be made up; the problem stays reported
                store.table(SKIPPED)  # recreated empty: a re-index records unreadable files again
                done.append(f"table {SKIPPED}: recreated empty")
            else:
                done += _restore_table(store, name)
        store.rebuild_key_index()
        done.append(f"table {IMAGES}: key index rebuilt")
        Index(store).rebuild_derived()
        done.append(f"{FAISS_FILE}, {ROWS_FILE}: rebuilt from the table; manifest counts recorded")
    return done


_ROW_KEYS = {IMAGES: ["id"], CAPTIONS: ["image_id", "caption_index"], SKIPPED: ["id"]}


def _restore_table(store: Store, name: str) -> list[str]:
    """A table that cannot be opened or read: its newest version that can, plus every row of the damaged
    version that is still readable (the readable rows win over the older version's)."""
    done, table = _open_rolling_back(store, name)
    if table is None:
        return done
    try:
        table.to_arrow()
        return done
    except Exception:  # some data file is damaged
        pass
    salvaged = _readable_rows(table)
    older = _newest_readable_version(table)
    keys = _ROW_KEYS[name]
    have = set(zip(*(salvaged.column(k).to_pylist() for k in keys))) if salvaged.num_rows else set()
    if older is not None and older.num_rows:
        mask = [row not in have for row in zip(*(older.column(k).to_pylist() for k in keys))]
        salvaged = pa.concat_tables([salvaged, older.filter(pa.array(mask, pa.bool_()))])
    store.db.create_table(name, data=salvaged, schema=table.schema, mode="overwrite")
    return [*done, f"table {name}: rewritten with the {salvaged.num_rows} rows still readable"]


def _open_rolling_back(store: Store, name: str) -> tuple[list[str], Any]:
    """Open a table, setting aside (into `_damaged/`) each newest version file that cannot be opened."""
    folder = store.path / "db" / f"{name}.lance"
    done: list[str] = []
    while True:
        try:
            return done, store.db.open_table(name)
        except Exception as error:
            manifests = sorted(folder.glob("_versions/*.manifest"), key=_version_of, reverse=True)
            if len(manifests) <= 1:
                return [
                    *done,
                    f"table {name}: no readable version left ({damage_message(store.path.name, error)})",
                ], None
            (folder / "_damaged").mkdir(exist_ok=True)
            os.replace(manifests[0], folder / "_damaged" / manifests[0].name)
            (folder / "_versions" / "latest_version_hint.json").unlink(missing_ok=True)
            done.append(
                f"table {name}: version {_version_of(manifests[0])} is damaged, set aside in {folder.name}/_damaged"
            )


def _version_of(manifest: Path) -> int:
    number = int(manifest.stem)
    return 2**64 - 1 - number if number >= 2**63 else number  # lance's v2 names count down from u64::MAX


def _readable_rows(table: Any) -> pa.Table:
    """The rows of the current version that can still be read, in chunks (a damaged file loses only its own)."""
    total, parts = table.count_rows(), [table.schema.empty_table()]
    for start in range(0, total, READ_CHUNK):
        try:
            parts.append(table.take_offsets(list(range(start, min(total, start + READ_CHUNK)))).to_arrow())
        except Exception:  # this chunk's data file is damaged
            continue
    return pa.concat_tables([part.select(table.schema.names).cast(table.schema) for part in parts])


def _newest_readable_version(table: Any) -> pa.Table | None:
    current = int(table.version)
    try:
        for version in sorted((int(v["version"]) for v in table.list_versions()), reverse=True):
            if version >= current:
                continue
            try:
                table.checkout(version)
                return table.to_arrow()
            except Exception:  # damaged too: try an older one
                continue
        return None
    finally:
        table.checkout_latest()
