"""Indexing a folder (acceptance check 3 and the storage layout): what lands on disk, and that
re-indexing encodes only what changed — touched, moved, copied, deleted, restored and broken
files, an interrupted run, a prune, and a FAISS file that went stale behind the index's back;
the row readers the tasks use; and `clipsearch.api.Index`, which joins storage and tasks."""

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
import torch
import torch.nn.functional as F
from caption_fixture import brute_force_recall, table_rows
from cifar_fixture import make_cifar_archive
from imagegen import distinct_image, write_distinct_images
from index_helpers import count_encoded
from search_reference import assert_same_ranking, brute_force, image_vector, live_rows

from clipsearch import api
from clipsearch.errors import ClipsearchError
from clipsearch.files import file_digest
from clipsearch.index import sync as indexer
from clipsearch.index.index import Index
from clipsearch.tasks.prompts import default_templates, resolve_labels, resolve_templates

# One name with a quote: ids go into SQL filters and must be escaped there.
NAMES = [
    "a/pic00.png",
    "a/pic01.jpg",
    "b/pic02.png",
    "b/pic03.jpg",
    "c/pic04.png",
    "c/pic05.jpg",
    "d/pic06 it's.png",
    "d/pic07.jpg",
    "e/pic08.png",
    "e/pic09.jpg",
]
DESIGN_COLUMNS = [
    "id",
    "key",
    "uri",
    "source",
    "split",
    "label",
    "label_name",
    "captions",
    "mtime",
    "size",
    "content_hash",
    "width",
    "height",
    "vector",
    "deleted",
]


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

    # Touch 3 files: their content hash is unchanged, so nothing is encoded; the vectors and keys stay,
    # the new mtimes are stored (the next run finds them unchanged without hashing).
    touched = NAMES[1:4]
    for name in touched:
        stat = os.stat(folder / name)
        os.utime(folder / name, (stat.st_atime, stat.st_mtime + 100))
    calls.clear()
    stats = index.add_folder(folder, workers=0, progress=False)
    assert sum(calls) == 0 and (stats.updated, stats.new, stats.unchanged, stats.touched) == (0, 0, 10, 3)
    assert {r["id"]: r["key"] for r in index.rows(columns=["id", "key"]).to_pylist()} == keys
    assert all(np.array_equal(_vectors_by_id(index)[n], before[n]) for n in touched)
    mtimes = {r["id"]: r["mtime"] for r in index.rows(columns=["id", "mtime"]).to_pylist()}
    assert all(mtimes[n] == os.stat(folder / n).st_mtime for n in touched)
    assert index.add_folder(folder, workers=0, progress=False).touched == 0

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
    assert sum(calls) == 0 and (stats.copied, stats.moved) == (1, 0) and index.counts()["images"] == 11
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
    assert index.rows("id = '{}'".format(gone.replace("'", "''")), include_deleted=True).column(
        "deleted"
    ).to_pylist() == [True]
    assert index.counts()["deleted"] == 1 and len(_faiss_keys(index)) == index.counts()["images"] == 10
    assert_same_ranking(
        [(h.id, h.score) for h in index.search("a cat", k=20)],
        brute_force(live_rows(index.store.path), index.query_vector("a cat"), 20),
    )

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
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps({"file": n, "caption": f"caption of {n}"}) + "\n" for n in names)
    )
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


def test_touched_file_with_new_captions_keeps_its_vector_and_takes_the_captions(
    tmp_path: Path, tiny_encoder, monkeypatch
) -> None:
    folder = tmp_path / "captioned"
    names = [f"im{i}.png" for i in range(3)]
    write_distinct_images(folder, names)
    sidecar = folder / "captions.jsonl"
    sidecar.write_text("".join(json.dumps({"file": n, "caption": f"old {n}"}) + "\n" for n in names))
    index = Index.create("captioned", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_folder(folder, workers=0, progress=False)
    before = _vectors_by_id(index)
    os.utime(folder / "im1.png", (1, os.stat(folder / "im1.png").st_mtime + 50))
    sidecar.write_text("".join(json.dumps({"file": n, "caption": f"new {n}"}) + "\n" for n in names))
    calls = count_encoded(monkeypatch, tiny_encoder)
    stats = index.add_folder(folder, workers=0, progress=False)
    assert sum(calls) == 0 and (stats.touched, stats.unchanged, stats.updated) == (1, 3, 0)
    assert np.array_equal(_vectors_by_id(index)["im1.png"], before["im1.png"])
    rows = {r["id"]: r["captions"] for r in index.rows(columns=["id", "captions"]).to_pylist()}
    assert rows == {n: [f"new {n}"] for n in names}
    assert sorted(index.captions_of(names).column("caption").to_pylist()) == [f"new {n}" for n in names]


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
    # The recorded counts are of the table versions before the write: not trusted, the table is counted instead.
    assert reopened.store.recorded_counts() is None
    hits = reopened.search("a dog", k=10)
    assert_same_ranking(
        [(h.id, h.score) for h in hits], brute_force(live_rows(reopened.store.path), reopened.query_vector("a dog"), 10)
    )
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
    assert_same_ranking(
        [(h.id, h.score) for h in reopened.search(vector=query, k=10)],
        brute_force(live_rows(reopened.store.path), query, 10),
    )
    assert len(_faiss_keys(reopened)) == 9
    assert (
        reopened.manifest["ann"]["table_version"]
        == table.version
        == json.loads((reopened.store.path / "manifest.json").read_text())["ann"]["table_version"]
    )

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
    with index.store.writer_lock(), pytest.raises(ClipsearchError, match="being written by another process"):
        Index.open("photos", index.store.path.parent, encoder=index.encoder).add_folder(folder, progress=False)
    with pytest.raises(ClipsearchError, match="was built with tiny@random-seed0, not mini@random-seed0"):
        Index.create("photos", index.store.path.parent, model="mini", pretrained="none")
    with pytest.raises(ClipsearchError, match="already holds folder"):
        index.add_folder(folder.parent / "indexes", progress=False)
    assert index.store.version() == version and index.counts()["images"] == 10


def test_prune_removes_deleted_rows_and_the_faiss_file_follows(index: Index, folder: Path, tiny_encoder) -> None:
    index.add_folder(folder, workers=0, progress=False)
    gone = NAMES[2:5]
    for name in gone:
        (folder / name).unlink()
    index.add_folder(folder, workers=0, progress=False)  # marks them deleted, keeps the rows
    assert index.counts()["deleted"] == 3 and len(_vectors_by_id(index, include_deleted=True)) == 10

    assert index.prune() == 3
    kept = sorted(set(NAMES) - set(gone))
    assert sorted(_vectors_by_id(index, include_deleted=True)) == kept  # gone from the table itself
    assert index.counts() == index.store.recorded_counts() == {"images": 7, "deleted": 0, "skipped": 0, "captions": 0}
    assert _faiss_keys(index) == {row["key"] for row in live_rows(index.store.path)}
    manifest = json.loads((index.store.path / "manifest.json").read_text())
    assert manifest["ann"]["table_version"] == index.store.version()  # the FAISS file is current, not rebuilt later
    query = index.query_vector("a red square")
    expected = brute_force(live_rows(index.store.path), query, 10)
    for searched in (index, Index.open("photos", index.store.path.parent, encoder=tiny_encoder)):
        assert_same_ranking([(h.id, h.score) for h in searched.search(vector=query, k=10)], expected)
    assert index.prune() == 0


def test_row_readers_for_the_tasks(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "captioned"
    names = ["a.png", "b it's.png", "c.png"]
    write_distinct_images(folder, names)
    lines = [{"file": n, "captions": [f"{n} caption {j}" for j in range(i + 1)]} for i, n in enumerate(names)]
    (folder / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    index = Index.create("captioned", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_folder(folder, workers=0, progress=False)
    stored = {row["id"]: np.asarray(row["vector"], np.float32) for row in table_rows(index.store.path, "images")}
    for name in names:  # a quote in an id is escaped, not an SQL error
        assert np.array_equal(index.vector_of(name), stored[name])
    with pytest.raises(ClipsearchError, match=r"no image 'nope\.png' in index 'captioned'"):
        index.vector_of("nope.png")

    captions = sorted(table_rows(index.store.path, "captions"), key=lambda r: (r["image_id"], r["caption_index"]))
    wanted = [r for r in captions if r["image_id"] in ("b it's.png", "c.png")]
    got = index.captions_of(["c.png", "b it's.png"])
    assert got.column_names == ["image_id", "caption_index", "caption", "vector"] and got.to_pylist() == wanted
    assert index.captions_of([]).num_rows == 0 and index.captions_of([]).schema == got.schema

    (folder / "a.png").unlink()
    index.add_folder(folder, workers=0, progress=False)
    assert index.live_count() == 2 == sum(not r["deleted"] for r in table_rows(index.store.path, "images"))
    with pytest.raises(ClipsearchError, match=r"no image 'a\.png'"):  # deleted rows are not served
        index.vector_of("a.png")


def test_dataset_is_read_before_its_index_is_created(tmp_path: Path, tiny_encoder) -> None:
    root = tmp_path / "indexes"
    with pytest.raises(ClipsearchError, match=r"cannot download .*offline mode is on"):  # nothing there
        Index.from_dataset("cifar10", data_dir=tmp_path / "nothing", root=root, encoder=tiny_encoder)
    assert not (root / "cifar10").exists()
    archive = make_cifar_archive(tmp_path, "cifar10")
    index, stats = api.Index.from_dataset(
        "cifar10", "test", archive, name="c10", root=root, encoder=tiny_encoder, workers=0, progress=False
    )
    assert type(index) is api.Index and index.name == "c10" and stats.new == index.live_count() == 30
    assert {r["source"] for r in table_rows(index.store.path, "images")} == {"cifar10"}


def _prototypes(encoder, labels: str) -> tuple[list[str], np.ndarray]:
    """Class prototypes straight from the open_clip model: mean of each class's unit prompt vectors."""
    names = resolve_labels(labels)
    rows = []
    with torch.no_grad():
        for sentences in resolve_templates(default_templates(labels), names):
            prompts = F.normalize(encoder.model.encode_text(encoder.tokenizer(sentences)), dim=-1)
            rows.append(F.normalize(prompts.mean(dim=0), dim=-1).numpy())
    return names, np.asarray(rows)


def test_api_index_runs_the_tasks_over_its_storage(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "pets"
    names = [f"pet{i:02d}.png" for i in range(12)]
    labels = ["cat", "dog", "bird", "ship"]
    write_distinct_images(folder, names)
    lines = [
        {
            "file": n,
            "label": labels[i % 4],
            "split": "test",
            "captions": [f"a {labels[i % 4]} {j}" for j in range(i % 3 + 1)],
        }
        for i, n in enumerate(names)
    ]
    (folder / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    root = tmp_path / "indexes"
    index = api.Index.create("pets", root, encoder=tiny_encoder)
    assert type(index) is api.Index and type(api.Index.open("pets", root)) is api.Index
    index.add_folder(folder, workers=0, progress=False)

    class_names, prototypes = _prototypes(tiny_encoder, "cifar10")
    rows = sorted(live_rows(index.store.path), key=lambda r: r["id"])
    nearest = [class_names[c] for c in np.argmax(np.asarray([r["vector"] for r in rows]) @ prototypes.T, axis=1)]
    counts = index.classify("cifar10")
    assert {name: n for name, n in counts.items() if n} == {name: nearest.count(name) for name in set(nearest)}
    assert [r["zs_label"] for r in sorted(live_rows(index.store.path), key=lambda r: r["id"])] == nearest

    result = index.evaluate_zero_shot("cifar10", split="test")
    truth = [r["label_name"] for r in rows]
    assert result["n"] == 12 and result["top1"] == pytest.approx(np.mean([a == b for a, b in zip(nearest, truth)]))

    report = index.evaluate_retrieval("test")
    expected = brute_force_recall(index.store.path, "test", (1, 5, 10))
    assert {key: report[key] for key in expected} == expected


# -- the FAISS file is derived data: trusted only when the manifest vouches for it (issue 12, items 6, 7, 13, 17)
def _break_truncated(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _break_garbage(path: Path, other: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _break_empty(path: Path, other: Path) -> None:
    path.write_bytes(b"")


def _break_other_index(path: Path, other: Path) -> None:
    shutil.copy(other, path)  # a valid FAISS file, of the same width, from another index


def _break_directory(path: Path, other: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


@pytest.mark.parametrize(
    "damage", [_break_truncated, _break_garbage, _break_empty, _break_other_index, _break_directory]
)
def test_broken_or_foreign_faiss_file_is_rebuilt_not_trusted(
    index: Index, folder: Path, tmp_path: Path, tiny_encoder, damage
) -> None:
    index.add_folder(folder, workers=0, progress=False)
    other_folder = tmp_path / "other"
    write_distinct_images(other_folder, ["x1.png", "x2.png", "x3.png"], first_seed=77)
    other = Index.create("other", index.store.path.parent, encoder=tiny_encoder)
    other.add_folder(other_folder, workers=0, progress=False)
    damage(index.faiss_path, other.faiss_path)

    reopened = Index.open("photos", index.store.path.parent, encoder=tiny_encoder)
    query = reopened.query_vector("a dog")
    assert_same_ranking(
        [(h.id, h.score) for h in reopened.search(vector=query, k=10)],
        brute_force(live_rows(reopened.store.path), query, 10),
    )
    assert index.faiss_path.is_file() and _faiss_keys(reopened) == {r["key"] for r in live_rows(index.store.path)}
    record = json.loads((index.store.path / "manifest.json").read_text())["ann"]
    assert record["bytes"] == index.faiss_path.stat().st_size and record["checksum"] == file_digest(index.faiss_path)


def test_long_lived_index_sees_another_writer_on_its_next_query(index: Index, folder: Path, tiny_encoder) -> None:
    index.add_folder(folder, workers=0, progress=False)
    reader = Index.open("photos", index.store.path.parent, encoder=tiny_encoder)  # the TUI, a notebook
    query = reader.query_vector("a dog")
    assert len(reader.search(vector=query, k=50)) == 10
    (folder / NAMES[0]).unlink()
    distinct_image(60).save(folder / "new.png")
    writer = Index.open("photos", index.store.path.parent, encoder=tiny_encoder)  # another process
    writer.add_folder(folder, workers=0, progress=False)
    found = {h.id for h in reader.search(vector=query, k=50)}
    assert NAMES[0] not in found and "new.png" in found and len(found) == 10
    writer.prune()
    assert_same_ranking(
        [(h.id, h.score) for h in reader.search(vector=query, k=50)],
        brute_force(live_rows(index.store.path), query, 50),
    )
