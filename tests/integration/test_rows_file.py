"""The rows file (index/rows_file.py): after every kind of write it holds exactly the images table
without its vectors (compared with the table read straight through lancedb), search answers the same
from it as from the table, and a file that is missing, torn, foreign or older than the table is never
trusted. Also the Lance version read from the table's folder against lancedb's own."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from imagegen import write_distinct_images

from clipsearch import api
from clipsearch.index import rows_file
from clipsearch.index.imported import Embeddings
from clipsearch.index.lance_folder import table_version
from clipsearch.index.rows_file import ROWS_FILE, RowsFile

NAMES = [f"d{i % 3}/pic{i:02d}.png" for i in range(12)]


def table_rows(index: api.Index) -> list[dict[str, Any]]:
    """Every row of the images table, read with lancedb (not through clipsearch), without vectors, by key."""
    table = lancedb.connect(str(index.store.path / "db")).open_table("images").to_arrow()
    return table.drop_columns(["vector"]).sort_by("key").to_pylist()


def file_rows(index: api.Index) -> list[dict[str, Any]]:
    return ipc.open_file(pa.memory_map(str(index.store.path / ROWS_FILE))).read_all().to_pylist()


def assert_current(index: api.Index) -> None:
    manifest = index.store.read_manifest()
    assert manifest["rows"]["table_version"] == index.store.version() == index.store.images.version
    assert file_rows(index) == table_rows(index)
    assert RowsFile(index.store).current() is not None  # trusted: search and re-index read it


@pytest.fixture
def index(tmp_path: Path, tiny_encoder) -> api.Index:
    return api.Index.create("photos", tmp_path / "indexes", encoder=tiny_encoder)


def test_the_rows_file_follows_every_kind_of_write(index: api.Index, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, NAMES)

    def reindex() -> None:
        index.add_folder(folder, workers=0, progress=False)
        assert_current(index)

    reindex()  # new files
    os.utime(folder / NAMES[0], (1e9, 1e9))  # touched: same content, new mtime
    write_distinct_images(folder, [NAMES[1]], first_seed=99)  # new content at an old path
    (folder / NAMES[2]).rename(folder / "moved.png")
    shutil.copy(folder / NAMES[3], folder / "copy.png")
    (folder / NAMES[4]).unlink()
    (folder / "d0" / "broken.png").write_bytes(b"not a picture")
    reindex()
    row = next(r for r in file_rows(index) if r["id"] == NAMES[0])
    assert row["mtime"] == 1e9 and next(r for r in file_rows(index) if r["id"] == NAMES[4])["deleted"]
    index.classify("cat,dog,car")  # every live row gets a label
    assert_current(index)
    assert {r["zs_label"] for r in file_rows(index) if not r["deleted"]} <= {"cat", "dog", "car"}
    assert index.prune() == 1
    assert_current(index)
    vectors = np.random.default_rng(0).normal(size=(5, index.manifest["dim"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embeddings = Embeddings.from_arrays(vectors, pa.table({"id": [f"emb{i}" for i in range(5)]}))
    index.add_embeddings(embeddings, "import:test")
    assert_current(index)


def test_an_unchanged_reindex_writes_nothing(index: api.Index, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, NAMES)
    index.add_folder(folder, workers=0, progress=False)
    manifest, versions = index.store.read_manifest(), index.store.states()
    stats = index.add_folder(folder, workers=0, progress=False)
    assert stats.unchanged == len(NAMES) and index.store.states() == versions
    after = index.store.read_manifest()
    assert {k: after[k] for k in ("ann", "rows", "counts", "counts_at")} == {
        k: manifest[k] for k in ("ann", "rows", "counts", "counts_at")
    }
    assert index.counts() == {"images": len(NAMES), "deleted": 0, "skipped": 0, "captions": 0}


def _hits(index: api.Index) -> list[list[dict[str, Any]]]:
    fresh = api.Index.open(index.name, index.store.path.parent)
    return [[h.to_dict() for h in fresh.search(query, k=5)] for query in ("a dog", "red", "a cat + 2:blue")]


def test_search_is_the_same_from_the_file_and_from_the_table(index: api.Index, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, NAMES)
    index.add_folder(folder, workers=0, progress=False)
    from_file = _hits(index)
    assert from_file and all(len(hits) == 5 for hits in from_file)
    path = index.store.path / ROWS_FILE
    data = path.read_bytes()

    path.unlink()  # missing
    assert RowsFile(index.store).current() is None and _hits(index) == from_file
    path.write_bytes(b"\0" * len(data))  # same size, not an Arrow file
    assert RowsFile(index.store).current() is None and _hits(index) == from_file
    path.write_bytes(data[: len(data) // 2])  # torn
    assert RowsFile(index.store).current() is None and _hits(index) == from_file
    path.write_bytes(data)
    assert RowsFile(index.store).current() is not None and _hits(index) == from_file

    # A write behind clipsearch's back (a new table version): the file is older than the table.
    lancedb.connect(str(index.store.path / "db")).open_table("images").update(
        where=f"id = '{NAMES[0]}'", values={"label_name": "outside"}
    )
    assert RowsFile(index.store).current() is None
    labelled = [h for hits in _hits(index) for h in hits if h["id"] == NAMES[0]]
    assert labelled and all(h["label_name"] == "outside" for h in labelled)


def test_another_index_s_rows_file_is_not_trusted(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, NAMES)
    root = tmp_path / "indexes"
    one, other = (api.Index.create(name, root, encoder=tiny_encoder) for name in ("one", "other"))
    for index in (one, other):
        index.add_folder(folder, workers=0, progress=False)
    shutil.copy(other.store.path / ROWS_FILE, one.store.path / ROWS_FILE)
    manifest = one.store.read_manifest()
    one.store.update_manifest(rows={**manifest["rows"], "index_uuid": other.store.read_manifest()["uuid"]})
    assert RowsFile(one.store).current() is None


def test_the_table_version_read_from_its_folder_is_lancedb_s(tmp_path: Path) -> None:
    db = lancedb.connect(str(tmp_path / "db"))
    table = db.create_table("images", pa.table({"id": ["a", "b"], "x": [1, 2]}))
    writes = [
        lambda: table.add(pa.table({"id": ["c"], "x": [3]})),
        lambda: table.delete("x = 1"),
        lambda: table.delete("x = 100"),  # matches nothing, still a commit
        lambda: table.update(where="x = 2", values={"x": 5}),
        lambda: (
            table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.table({"id": ["c", "d"], "x": [7, 8]}))
        ),
        lambda: table.optimize(cleanup_older_than=dt.timedelta(days=1)),
    ]
    folder = tmp_path / "db" / "images.lance"
    assert table_version(folder) == table.version
    for write in writes:
        write()
        assert table_version(folder) == table.version == db.open_table("images").version
    assert table_version(tmp_path / "nothing") is None
    (folder / "_versions" / "3.manifest").write_bytes(b"")  # two naming schemes at once: not guessed
    assert table_version(folder) is None


@pytest.mark.parametrize("seed", range(6))
def test_a_merge_of_slices_equals_a_sort(seed: int) -> None:
    """`_merge` (kept rows as slices, fresh rows in between) against concatenating and sorting."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 40))
    keys = np.sort(rng.choice(200, size=n, replace=False)).astype(np.int64)
    rows = pa.table({"key": keys, "id": [f"k{k}" for k in keys]})
    gone = np.sort(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)) if n else np.zeros(0, np.int64)
    free = np.setdiff1d(np.arange(200), np.delete(keys, gone))
    fresh_keys = np.sort(rng.choice(free, size=int(rng.integers(0, 15)), replace=False)).astype(np.int64)
    fresh = pa.table({"key": fresh_keys, "id": [f"new{k}" for k in fresh_keys]})
    expected = pa.concat_tables([rows.take(pa.array(np.delete(np.arange(n), gone), pa.int64())), fresh])
    expected = expected.sort_by("key").to_pylist()
    for pieces in (rows_file.MAX_MERGED_PIECES, 0):  # slices, then the sort a large change takes
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rows_file, "MAX_MERGED_PIECES", pieces)
            merged, merged_keys = rows_file._merge(rows, keys, gone.astype(np.int64), fresh)
        assert merged.to_pylist() == expected
        assert merged_keys.tolist() == [row["key"] for row in expected]
