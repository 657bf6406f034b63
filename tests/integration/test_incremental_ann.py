"""The FAISS index is changed in place by a re-index (issue 11 part 4): after a sequence of adds,
moves, copies, new pixels and deletes it answers exactly as a rebuild from the table would (exact
index), or with the same recall (approximate index, with a small forced exact limit); it is saved
only when it changed, a small change as a delta file beside the FAISS file (the base untouched),
and rebuilt only when its type or its training goes stale."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from imagegen import distinct_image, write_distinct_images
from search_reference import live_rows

from clipsearch.files import file_digest
from clipsearch.index import ann, ann_delta
from clipsearch.index.imported import Embeddings
from clipsearch.index.index import Index
from clipsearch.index.store import IMAGES, sql_in
from clipsearch.index.sync import SyncStats

DIM = 64


def clustered(n: int, seed: int, centers: int = 40) -> np.ndarray:
    """Unit vectors around a few directions (as CLIP embeddings are), not uniform on the sphere."""
    rng = np.random.default_rng(1234)
    middle = rng.standard_normal((centers, DIM))
    rng = np.random.default_rng(seed)
    x = middle[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    builds: list[int] = []
    real = ann.build_streamed

    def counting(n, *args, **kwargs):
        builds.append(n)
        return real(n, *args, **kwargs)

    monkeypatch.setattr(ann, "build_streamed", counting)
    return builds


def _exact(index: Index, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """(key, score) of the k best live rows by brute force over the table read with lancedb."""
    rows = live_rows(index.store.path)
    keys = np.array([r["key"] for r in rows])
    vectors = np.array([r["vector"] for r in rows], np.float64)
    ranked = []
    for q in queries:
        scores = vectors @ q.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        ranked.append([(int(keys[i]), float(scores[i])) for i in order])
    return ranked


def _exact_top(index: Index, queries: np.ndarray, k: int) -> list[list[int]]:
    return [[key for key, _ in row] for row in _exact(index, queries, k)]


def _held_keys(index: Index) -> list[int]:
    return sorted(ann.stored_keys(index.ann_index).tolist())


def _write_deltas(monkeypatch: pytest.MonkeyPatch, fraction: float = 1.0) -> None:
    """Small changes go to the delta file even for these tiny indexes (whose base is otherwise saved in full)."""
    monkeypatch.setattr(ann_delta, "FULL_SAVE_BYTES", 0)
    monkeypatch.setattr(ann_delta, "DELTA_FRACTION", fraction)


def _files_state(index: Index) -> tuple[int, int | None]:
    """(the base file's mtime, the delta file's mtime or None)."""
    delta = index.store.path / ann_delta.DELTA_FILE
    return index.faiss_path.stat().st_mtime_ns, delta.stat().st_mtime_ns if delta.is_file() else None


@pytest.mark.parametrize("saving", ["full", "delta"])
def test_exact_index_after_adds_moves_and_deletes_equals_a_rebuild(
    tmp_path: Path, tiny_encoder, monkeypatch: pytest.MonkeyPatch, saving: str
) -> None:
    if saving == "delta":
        _write_deltas(monkeypatch)
    folder = tmp_path / "photos"
    write_distinct_images(folder, [f"p{i:02d}.png" for i in range(12)])
    index = Index.create("photos", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_folder(folder, workers=0, progress=False)
    builds = _count_builds(monkeypatch)
    queries = clustered(5, seed=9)
    steps = [
        lambda: distinct_image(40).save(folder / "new.png"),  # add
        lambda: os.rename(folder / "p03.png", folder / "moved.png"),  # move
        lambda: shutil.copy2(folder / "p04.png", folder / "copy.png"),  # copy
        lambda: distinct_image(41).save(folder / "p05.png"),  # new pixels under an old key
        lambda: (folder / "p06.png").unlink(),  # delete
        lambda: [(folder / f"p0{i}.png").unlink() for i in (7, 8)],
    ]
    for step in steps:
        step()
        base, delta = _files_state(index)
        index.add_folder(folder, workers=0, progress=False)
        if saving == "full":
            assert _files_state(index)[0] != base  # the index changed, so it was saved
        else:  # the base untouched, the change in the delta file
            assert _files_state(index)[0] == base and _files_state(index)[1] not in (None, delta)
        assert _held_keys(index) == sorted(r["key"] for r in live_rows(index.store.path))
        got = _search_keys(index, queries, 6)
        _assert_same_top(index, queries, got)  # what a rebuild of an exact index gives
        # The saved file is the loaded index.
        reopened = Index.open("photos", index.store.path.parent, encoder=tiny_encoder)
        assert _search_keys(reopened, queries, 6) == got
    assert builds == []  # never rebuilt: every step changed the index in place

    # Nothing changed: nothing rewritten.
    before = _files_state(index)
    index.add_folder(folder, workers=0, progress=False)
    assert _files_state(index) == before and builds == []
    index.prune()  # deleted rows were out of the index already: nothing to do there either
    assert _files_state(index) == before and builds == []


def _assert_same_top(index: Index, queries: np.ndarray, got: list[list[tuple[float, int]]]) -> None:
    """The k best scores of a brute-force ranking over the table, each returned key with its own true
    score (identical vectors, e.g. a copy, may swap places, also at the k-th place)."""
    rows = live_rows(index.store.path)
    vectors = np.array([r["vector"] for r in rows], np.float64)
    for q, found in zip(queries, got):
        scores = vectors @ q.astype(np.float64)
        true = dict(zip((r["key"] for r in rows), scores.tolist()))
        best = np.sort(scores)[::-1][: len(found)]
        assert np.allclose([s for s, _ in found], best, atol=1e-5, rtol=0)
        assert all(abs(true[k] - s) < 1e-5 for s, k in found) and len({k for _, k in found}) == len(found)


def _search_keys(index: Index, queries: np.ndarray, k: int) -> list[list[tuple[float, int]]]:
    scores, keys = ann.search(index.ann_index, queries, k)
    return [list(zip(s.tolist(), kk.tolist())) for s, kk in zip(scores, keys)]


def _import(index: Index, vectors: np.ndarray, ids: list[str]) -> SyncStats:
    import pyarrow as pa

    embeddings = Embeddings.from_arrays(vectors, pa.table({"id": ids}))
    return index.add_embeddings(embeddings, "import:test")


def _delete(index: Index, ids: list[str]) -> None:
    def mark() -> SyncStats:
        index.store.update(IMAGES, sql_in("id", ids), {"deleted": True})
        return SyncStats()

    index.write_rows(mark, "import:test")


def _recall(index: Index, queries: np.ndarray) -> float:
    truth = _exact_top(index, queries, 10)
    found = [[k for _, k in row] for row in _search_keys(index, queries, 10)]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))


def test_approximate_index_updated_in_place_keeps_its_recall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "EXACT_LIMIT", 500)
    index = Index.create("vectors", tmp_path, model="tiny", pretrained="none", dim=DIM)
    _import(index, clustered(2000, seed=0), [f"v{i}" for i in range(2000)])
    record = index.manifest["ann"]
    assert record["kind"] == "ivf" and record["trained_n"] == 2000 and record["recall@10"] >= ann.RECALL_GOAL
    builds = _count_builds(monkeypatch)
    queries = clustered(50, seed=7)

    _import(index, clustered(600, seed=1), [f"w{i}" for i in range(600)])  # adds
    _import(index, clustered(100, seed=2), [f"v{i}" for i in range(100)])  # new vectors under old ids
    _delete(index, [f"v{i}" for i in range(100, 400)])  # deletes
    assert builds == []
    assert _held_keys(index) == sorted(r["key"] for r in live_rows(index.store.path))
    incremental = _recall(index, queries)

    rebuilt = Index.open("vectors", tmp_path)
    rebuilt.rebuild_derived()
    assert abs(incremental - _recall(rebuilt, queries)) <= 0.03 and incremental >= 0.9

    # Grown past 4x its training set (2,300 rows when rebuilt): retrained, once.
    _import(index, clustered(7000, seed=3), [f"x{i}" for i in range(7000)])
    assert builds == [2300, index.live_count()] and index.manifest["ann"]["trained_n"] == index.live_count()
    # Shrunk to half the exact limit: exact again.
    _delete(index, [r for r in index.rows(columns=["id"]).column("id").to_pylist() if r != "w0"][:-200])
    assert index.manifest["ann"]["kind"] == "flat" and ann.is_exact(index.ann_index)
    assert isinstance(faiss.downcast_index(index.ann_index), faiss.IndexIDMap2)


def _brute_top(index: Index, queries: np.ndarray, k: int) -> list[list[int]]:
    """The k best live keys per query by brute force over the table (distinct scores here: no ties)."""
    rows = live_rows(index.store.path)
    keys, vectors = np.array([r["key"] for r in rows]), np.array([r["vector"] for r in rows], np.float64)
    return [keys[np.argsort(-(vectors @ q))[:k]].tolist() for q in queries.astype(np.float64)]


def test_a_small_change_writes_a_delta_and_a_large_one_folds_it_into_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_deltas(monkeypatch, fraction=0.1)
    saves: list[int] = []
    real_save = ann.save
    monkeypatch.setattr(ann, "save", lambda index, path: saves.append(index.ntotal) or real_save(index, path))
    index = Index.create("vectors", tmp_path, model="tiny", pretrained="none", dim=DIM)
    _import(index, clustered(1000, seed=0), [f"v{i}" for i in range(1000)])
    assert saves == [1000]
    base = index.faiss_path.stat()
    queries = clustered(20, seed=5)

    _import(index, clustered(1, seed=1), ["new"])  # add one
    _import(index, clustered(1, seed=2), ["v3"])  # new vector under an old id
    _delete(index, ["v7", "new"])  # delete one old row and the added one
    _import(index, clustered(1, seed=3), ["new2"])
    record = index.manifest["ann"]
    delta_file = index.store.path / ann_delta.DELTA_FILE
    assert saves == [1000]  # never saved in full: the base file is the one written first
    assert (index.faiss_path.stat().st_mtime_ns, index.faiss_path.stat().st_size) == (base.st_mtime_ns, base.st_size)
    assert record["checksum"] == file_digest(index.faiss_path)
    assert record["delta"]["checksum"] == file_digest(delta_file) and record["n"] == 1000
    assert (record["delta"]["added"], record["delta"]["removed"]) == (2, 3)  # v3, new2; v3, v7, new
    assert delta_file.stat().st_size < base.st_size / 50  # O(change) bytes, not the whole index
    assert _search_top(index, queries) == _brute_top(index, queries, 10)
    reopened = Index.open("vectors", tmp_path)  # base + delta read back from disk
    assert _search_top(reopened, queries) == _brute_top(index, queries, 10)

    # Past a tenth of the rows: folded into one full save, the delta file gone.
    _import(index, clustered(150, seed=4), [f"w{i}" for i in range(150)])
    assert saves == [1000, 1150] and index.manifest["ann"]["delta"] is None and not delta_file.exists()
    assert index.manifest["ann"]["checksum"] == file_digest(index.faiss_path)
    assert _search_top(Index.open("vectors", tmp_path), queries) == _brute_top(index, queries, 10)


def _search_top(index: Index, queries: np.ndarray) -> list[list[int]]:
    return [[key for _, key in row] for row in _search_keys(index, queries, 10)]
