"""Indexing a folder (acceptance check 3 and the storage layout): what lands on disk, and that
re-indexing encodes only what changed — touched, moved, copied, deleted, restored and broken
files, an interrupted run, and a FAISS file that went stale behind the index's back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import faiss
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from clipsearch.index import sync as indexer
from clipsearch.index.index import Index
from clipsearch.errors import ClipsearchError
from imagegen import distinct_image, write_distinct_images
from index_helpers import count_encoded
from search_reference import assert_same_ranking, brute_force, image_vector, live_rows

# One name with a quote: ids go into SQL filters and must be escaped there.
NAMES = ["a/pic00.png", "a/pic01.jpg", "b/pic02.png", "b/pic03.jpg", "c/pic04.png", "c/pic05.jpg", "d/pic06 it's.png",
         "d/pic07.jpg", "e/pic08.png", "e/pic09.jpg"]
DESIGN_COLUMNS = ["id", "key", "uri", "source", "split", "label", "label_name", "captions", "mtime", "size",
                  "content_hash", "width", "height", "vector", "deleted"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_distinct_images(tmp_path / "photos", NAMES)
    return tmp_path / "photos"


@pytest.fixture
def index(tmp_path: Path, tiny_encoder) -> Index:
    return Index.create("photos", tmp_path / "indexes", encoder=tiny_encoder)


def _vectors_by_id(index: Index, include_deleted: bool = False) -> dict[str, np.ndarray]:
    rows = lancedb.connect(str(index.store.path / "db")).open_table("images").to_arrow().to_pylist()
    return {r["id"]: np.asarray(r["vector"], np.float32) for r in rows if include_deleted or not r["deleted"]}


def _faiss_keys(index: Index) -> set[int]:
    loaded = faiss.read_index(str(index.faiss_path))
    return set(faiss.vector_to_array(faiss.downcast_index(loaded).id_map).tolist())


def test_storage_layout_matches_the_design(index: Index, folder: Path) -> None:
    stats = index.add_folder(folder, workers=0, progress=False)
    assert (stats.new, stats.encoded, stats.skipped) == (10, 10, 0)
    path = index.store.path
    db = lancedb.connect(str(path / "db"))
    assert {"images", "captions", "skipped"} <= set(db.list_tables().tables)
    table = db.open_table("images")
    schema = table.schema
    assert set(DESIGN_COLUMNS) <= set(schema.names)
    assert schema.field("vector").type == pa.list_(pa.float32(), 64) and schema.field("key").type == pa.int64()
    rows = table.to_arrow().to_pylist()
    assert sorted(r["id"] for r in rows) == NAMES
    assert len({r["key"] for r in rows}) == 10
    for row in rows:
        stat = os.stat(folder / row["id"])
        assert row["uri"] == str(folder / row["id"]) and row["source"] == str(folder)
        assert (row["size"], row["mtime"], row["deleted"]) == (stat.st_size, stat.st_mtime, False)
        assert (row["width"], row["height"]) == (48, 40) and len(row["content_hash"]) == 32
        assert abs(np.linalg.norm(row["vector"]) - 1) < 1e-5

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model"] == {"arch": "tiny", "pretrained": "none", "checkpoint_sha256": None}
    assert manifest["dim"] == 64 and manifest["preprocessing"]["mean"] and manifest["sources"] == [str(folder)]
    assert manifest["ann"]["kind"] == "flat" and manifest["ann"]["table_version"] == table.version
    assert manifest["counts"] == {"images": 10, "deleted": 0, "skipped": 0, "captions": 0}

    # The FAISS file: exact inner product over exactly the live keys, same vectors as the table.
    loaded = faiss.read_index(str(index.faiss_path))
    assert isinstance(faiss.downcast_index(loaded), faiss.IndexIDMap2) and loaded.ntotal == 10
    assert isinstance(faiss.downcast_index(faiss.downcast_index(loaded).index), faiss.IndexFlatIP)
    for row in rows:
        assert np.allclose(faiss.downcast_index(loaded).reconstruct(row["key"]), row["vector"], atol=1e-7)
    assert not list(path.glob("*.tmp"))  # atomic writes leave no temp files


def test_incremental_reindex_encodes_only_changes(index: Index, folder: Path, tiny_encoder, monkeypatch) -> None:
    index.add_folder(folder, workers=0, progress=False)
    keys = {r["id"]: r["key"] for r in index.rows(columns=["id", "key"]).to_pylist()}
    before = _vectors_by_id(index)

    # Unchanged: nothing decoded or encoded.
    calls = count_encoded(monkeypatch, tiny_encoder)  # (query images would count too: none here)
    stats = index.add_folder(folder, workers=0, progress=False)
    assert sum(calls) == 0 and (stats.unchanged, stats.encoded, stats.new, stats.updated) == (10, 0, 0, 0)

    # Touch 3 files: exactly those 3 are encoded again, keeping their keys.
    touched = NAMES[1:4]
    for name in touched:
        stat = os.stat(folder / name)
        os.utime(folder / name, (stat.st_atime, stat.st_mtime + 100))
    calls.clear()
    stats = index.add_folder(folder, workers=0, progress=False)
    assert sum(calls) == 3 and (stats.updated, stats.new, stats.unchanged) == (3, 0, 7)
    assert {r["id"]: r["key"] for r in index.rows(columns=["id", "key"]).to_pylist()} == keys
    assert all(np.allclose(_vectors_by_id(index)[n], before[n], atol=1e-6) for n in touched)  # same pixels

    # New pixels under the same name: one encode, and the new vector is the new picture's.
    distinct_image(50).save(folder / NAMES[0])
    calls.clear()
    stats = index.add_folder(folder, workers=0, progress=False)
    assert sum(calls) == 1 and stats.updated == 1
    assert float(_vectors_by_id(index)[NAMES[0]] @ image_vector(tiny_encoder, folder / NAMES[0])) > 0.99999
    assert index.search(image=folder / NAMES[0], k=1)[0].id == NAMES[0]


def test_moved_copied_deleted_restored_and_pruned(index: Index, folder: Path, tiny_encoder, monkeypatch) -> None:
    index.add_folder(folder, workers=0, progress=False)
    before = _vectors_by_id(index)
    calls = count_encoded(monkeypatch, tiny_encoder)  # query images count too: cleared before each run

    def reindex(**options):
        calls.clear()
        return index.add_folder(folder, workers=0, progress=False, **options)

    # Move: no encode; the vector follows the file, searchable at its new path.
    moved_from, moved_to = NAMES[4], "elsewhere/renamed.png"
    (folder / "elsewhere").mkdir()
    os.rename(folder / moved_from, folder / moved_to)
    stats = reindex()
    assert sum(calls) == 0 and (stats.moved, stats.deleted, stats.new, stats.unchanged) == (1, 0, 0, 9)
    assert moved_from not in _vectors_by_id(index, include_deleted=True)
    assert np.array_equal(_vectors_by_id(index)[moved_to], before[moved_from])
    top = index.search(image=folder / moved_to, k=1)[0]
    assert (top.id, top.uri) == (moved_to, str(folder / moved_to)) and top.score > 0.9999

    # Copy: no encode; both paths present with the same vector under different keys.
    shutil.copy2(folder / NAMES[5], folder / "copy.jpg")
    stats = reindex()
    assert sum(calls) == 0 and stats.moved == 1 and index.counts()["images"] == 11
    assert np.array_equal(_vectors_by_id(index)["copy.jpg"], before[NAMES[5]])
    assert {h.id for h in index.search(image=folder / NAMES[5], k=2)} == {NAMES[5], "copy.jpg"}

    # Delete: marked deleted, never returned, gone from the FAISS file.
    gone = NAMES[6]
    gone_bytes = (folder / gone).read_bytes()
    (folder / gone).unlink()
    stats = reindex()
    assert sum(calls) == 0 and stats.deleted == 1
    assert gone not in {h.id for h in index.search("anything", k=50)}
    assert index.search(image=tmp_copy(gone_bytes, folder.parent / "query.jpg"), k=1)[0].id != gone
    assert index.rows("id = '%s'" % gone.replace("'", "''"), include_deleted=True).column("deleted").to_pylist() == [True]
    assert index.counts()["deleted"] == 1 and len(_faiss_keys(index)) == index.counts()["images"] == 10
    assert_same_ranking([(h.id, h.score) for h in index.search("a cat", k=20)],
                        brute_force(live_rows(index.store.path), index.query_vector("a cat"), 20))

    # Restore it: the deleted row's vector is reused (same content), nothing encoded.
    (folder / gone).write_bytes(gone_bytes)
    stats = reindex()
    assert sum(calls) == 0 and (index.counts()["images"], index.counts()["deleted"]) == (11, 0)
    assert index.search(image=folder / gone, k=1)[0].id == gone

    # --prune removes deleted rows for good.
    (folder / NAMES[7]).unlink()
    stats = reindex(prune=True)
    assert stats.deleted == 1 and index.counts()["deleted"] == 0
    assert NAMES[7] not in _vectors_by_id(index, include_deleted=True)
    assert Index.open("photos", index.store.path.parent).counts()["images"] == 10


def tmp_copy(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


def test_captions_follow_their_images(tmp_path: Path, tiny_encoder) -> None:
    """A deleted file's captions are not returned by caption search; restoring it brings them back."""
    folder = tmp_path / "captioned"
    names = [f"im{i}.png" for i in range(4)]
    write_distinct_images(folder, names)
    (folder / "captions.jsonl").write_text("".join(json.dumps({"file": n, "caption": f"caption of {n}"}) + "\n" for n in names))
    index = Index.create("captioned", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_folder(folder, workers=0, progress=False)
    assert index.counts()["captions"] == 4
    data = (folder / "im1.png").read_bytes()
    (folder / "im1.png").unlink()
    index.add_folder(folder, workers=0, progress=False)
    assert "im1.png" not in {h.row["image_id"] for h in index.search_captions("caption of im1.png", k=10)}
    assert index.counts()["captions"] == 3
    (folder / "im1.png").write_bytes(data)
    index.add_folder(folder, workers=0, progress=False)
    assert index.search_captions("caption of im1.png", k=1)[0].row["image_id"] == "im1.png"
    assert index.counts()["captions"] == 4


def test_file_turned_corrupt_loses_its_vector(index: Index, folder: Path) -> None:
    index.add_folder(folder, workers=0, progress=False)
    (folder / NAMES[2]).write_bytes(b"\xff\xd8\xff garbage now")
    stats = index.add_folder(folder, workers=0, progress=False)
    assert stats.skipped == 1 and [r["id"] for r in index.skipped()] == [NAMES[2]]
    assert NAMES[2] not in {h.id for h in index.search("x", k=50)} and index.counts()["images"] == 9
    distinct_image(77).save(folder / NAMES[2])  # fixed again
    stats = index.add_folder(folder, workers=0, progress=False)
    assert stats.encoded == 1 and stats.skipped == 0 and index.skipped() == [] and index.counts()["images"] == 10


def test_interrupted_run_is_usable_and_resumes(tmp_path: Path, tiny_encoder, monkeypatch) -> None:
    names = [f"pic{i:02d}.png" for i in range(14)]
    folder = tmp_path / "photos"
    write_distinct_images(folder, names)
    monkeypatch.setattr(indexer, "WRITE_BATCH", 4)
    count_encoded(monkeypatch, tiny_encoder, fail_on_call=2)  # Ctrl-C after the first written batch
    index = Index.create("photos", tmp_path / "indexes", encoder=tiny_encoder)
    with pytest.raises(KeyboardInterrupt):
        index.add_folder(folder, workers=0, progress=False, batch_size=4)

    reopened = Index.open("photos", tmp_path / "indexes", encoder=tiny_encoder)
    assert reopened.counts()["images"] == 4
    hits = reopened.search("a dog", k=10)
    assert_same_ranking([(h.id, h.score) for h in hits], brute_force(live_rows(reopened.store.path), reopened.query_vector("a dog"), 10))
    assert len(hits) == 4

    calls = count_encoded(monkeypatch, tiny_encoder)
    stats = reopened.add_folder(folder, workers=0, progress=False, batch_size=4)
    assert sum(calls) == 10 and (stats.new, stats.unchanged) == (10, 4)

    clean = Index.create("clean", tmp_path / "indexes", encoder=tiny_encoder)
    clean.add_folder(folder, workers=0, progress=False)
    resumed, fresh = _vectors_by_id(reopened), _vectors_by_id(clean)
    assert sorted(resumed) == sorted(fresh) == names
    assert all(np.allclose(resumed[n], fresh[n], atol=1e-6) for n in names)
    assert len(_faiss_keys(reopened)) == 14


def test_stale_faiss_file_is_rebuilt_not_trusted(index: Index, folder: Path, tiny_encoder) -> None:
    index.add_folder(folder, workers=0, progress=False)
    root = index.store.path.parent
    # Change the table behind the index's back: drop one row, turn another's vector around.
    table = lancedb.connect(str(index.store.path / "db")).open_table("images")
    table.delete(f"id = '{NAMES[0]}'")
    flipped = (-np.asarray(table.search().where(f"id = '{NAMES[1]}'").to_arrow().to_pylist()[0]["vector"])).tolist()
    table.update(where=f"id = '{NAMES[1]}'", values={"vector": flipped})

    reopened = Index.open("photos", root, encoder=tiny_encoder)
    query = reopened.query_vector("a dog")
    assert_same_ranking([(h.id, h.score) for h in reopened.search(vector=query, k=10)],
                        brute_force(live_rows(reopened.store.path), query, 10))
    assert len(_faiss_keys(reopened)) == 9
    assert reopened.manifest["ann"]["table_version"] == table.version == json.loads(
        (reopened.store.path / "manifest.json").read_text())["ann"]["table_version"]

    # A missing FAISS file is rebuilt as well.
    index.faiss_path.unlink()
    again = Index.open("photos", root, encoder=tiny_encoder)
    assert [h.id for h in again.search(vector=query, k=3)] == [h.id for h in reopened.search(vector=query, k=3)]
    assert index.faiss_path.is_file()


def test_decoding_workers_give_the_same_vectors(folder: Path, tmp_path: Path, tiny_encoder) -> None:
    serial = Index.create("serial", tmp_path / "indexes", encoder=tiny_encoder)
    serial.add_folder(folder, workers=0, progress=False)
    parallel = Index.create("parallel", tmp_path / "indexes", encoder=tiny_encoder)
    parallel.add_folder(folder, workers=2, progress=False, batch_size=3)
    a, b = _vectors_by_id(serial), _vectors_by_id(parallel)
    assert sorted(a) == sorted(b) == NAMES and all(np.allclose(a[n], b[n], atol=1e-6) for n in NAMES)


def test_one_writer_at_a_time_and_one_model_per_index(index: Index, folder: Path) -> None:
    index.add_folder(folder, workers=0, progress=False)
    version = index.store.version()
    with index.store.writer_lock():
        with pytest.raises(ClipsearchError, match="being written by another process"):
            Index.open("photos", index.store.path.parent, encoder=index.encoder).add_folder(folder, progress=False)
    with pytest.raises(ClipsearchError, match="was built with tiny@random-seed0, not mini@random-seed0"):
        Index.create("photos", index.store.path.parent, model="mini", pretrained="none")
    with pytest.raises(ClipsearchError, match="already holds folder"):
        index.add_folder(folder.parent / "indexes", progress=False)
    assert index.store.version() == version and index.counts()["images"] == 10
