"""`clipsearch import` (issue 11 part 7): precomputed unit vectors with their metadata, in
clip-retrieval's layout, through the store writer and the in-place FAISS update; wrong dims,
non-unit vectors, another model and a length mismatch are refused with one line."""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runner import run_cli, run_json

from clipsearch.index.index import Index

DIM = 64  # the shipped `tiny` architecture's embedding width


def unit_rows(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clip_retrieval_output(folder: Path, parts: list[np.ndarray]) -> Path:
    """img_emb/img_emb_N.npy (float16, as clip-retrieval writes) + metadata/metadata_N.parquet."""
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    start = 0
    for n, vectors in enumerate(parts):
        np.save(folder / "img_emb" / f"img_emb_{n}.npy", vectors.astype(np.float16))
        paths = [f"/data/img{start + i:04d}.jpg" for i in range(len(vectors))]
        captions = [f"caption {start + i}" for i in range(len(vectors))]
        pq.write_table(
            pa.table({"image_path": paths, "caption": captions}), folder / "metadata" / f"metadata_{n}.parquet"
        )
        start += len(vectors)
    return folder


def test_clip_retrieval_layout_imports_as_is(tmp_path: Path) -> None:
    parts = [unit_rows(30, 0), unit_rows(25, 1)]
    out = clip_retrieval_output(tmp_path / "emb", parts)
    root = tmp_path / "indexes"
    summary = run_json("import", "emb", "--vectors", out, "--model", "tiny", "--pretrained", "none", "--root", root)
    assert (summary["new"], summary["updated"], summary["rows"], summary["encoded"]) == (55, 0, 55, 0)
    assert summary["seconds"] >= summary["sync_seconds"] > 0

    rows = lancedb.connect(str(root / "emb" / "db")).open_table("images").to_arrow().to_pylist()
    by_id = {r["id"]: r for r in rows}
    vectors = np.concatenate(parts).astype(np.float16).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert sorted(by_id) == [f"/data/img{i:04d}.jpg" for i in range(55)]
    for i in (0, 29, 30, 54):  # across both files: row i of the concatenation, with its own metadata
        row = by_id[f"/data/img{i:04d}.jpg"]
        assert np.allclose(row["vector"], vectors[i], atol=1e-6) and row["captions"] == [f"caption {i}"]
    assert len({r["key"] for r in rows}) == 55

    index = Index.open("emb", root)
    hits = index.search(vector=vectors[40], k=3)
    assert hits[0].id == "/data/img0040.jpg" and hits[0].score > 0.9999
    assert index.manifest["ann"]["n"] == 55 and index.manifest["model_id"] == "tiny@random-seed0"

    # Again, with one more file: existing ids are updated in place, new ones added; the FAISS file follows.
    np.save(out / "img_emb" / "img_emb_2.npy", unit_rows(5, 2).astype(np.float16))
    pq.write_table(
        pa.table({"image_path": [f"/data/new{i}.jpg" for i in range(5)], "caption": ["x"] * 5}),
        out / "metadata" / "metadata_2.parquet",
    )
    again = run_json("import", "emb", "--vectors", out, "--model", "tiny", "--pretrained", "none", "--root", root)
    assert (again["new"], again["updated"]) == (5, 55)
    assert Index.open("emb", root).manifest["ann"]["n"] == 60


def test_streamed_in_batches_that_straddle_files_each_row_keeps_its_own_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vectors and metadata are read a batch at a time (not all at once): with batches of 7 rows, two
    .npy files of 30 and 25 rows and three parquet files of 20, 20 and 15 rows never line up."""
    from clipsearch.index import imported

    monkeypatch.setattr(imported, "IMPORT_BATCH", 7)
    out = tmp_path / "emb"
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    vectors = np.concatenate([unit_rows(30, 0), unit_rows(25, 1)])
    np.save(out / "img_emb" / "img_emb_0.npy", vectors[:30])
    np.save(out / "img_emb" / "img_emb_1.npy", vectors[30:])
    for n, (start, stop) in enumerate([(0, 20), (20, 40), (40, 55)]):
        table = pa.table(
            {"id": [f"r{i}" for i in range(start, stop)], "caption": [f"c{i}" for i in range(start, stop)]}
        )
        pq.write_table(table, out / "metadata" / f"metadata_{n}.parquet", row_group_size=6)
    root = tmp_path / "indexes"
    summary = run_json("import", "emb", "--vectors", out, "--model", "tiny", "--pretrained", "none", "--root", root)
    assert summary["new"] == 55
    rows = {r["id"]: r for r in lancedb.connect(str(root / "emb" / "db")).open_table("images").to_arrow().to_pylist()}
    assert sorted(rows) == sorted(f"r{i}" for i in range(55))
    for i in range(55):
        assert rows[f"r{i}"]["captions"] == [f"c{i}"] and np.allclose(rows[f"r{i}"]["vector"], vectors[i], atol=1e-6)
    assert Index.open("emb", root).search(vector=vectors[33], k=1)[0].id == "r33"


def test_plain_npy_without_metadata_gets_positional_ids(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", unit_rows(7, 3))
    root = tmp_path / "indexes"
    run_json(
        "import", "plain", "--vectors", tmp_path / "v.npy", "--model", "tiny", "--pretrained", "none", "--root", root
    )
    ids = Index.open("plain", root).rows(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(f"import:{(tmp_path / 'v.npy').resolve()}#{i}" for i in range(7))


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_dim", "holds 32-d vectors, but tiny@random-seed0 makes 64-d ones"),
        ("not_unit", "vectors are not unit length (row 0 has norm 2); pass --normalize"),
        ("length", "40 metadata rows for 30 vectors"),
        ("other_model", "was built with tiny@random-seed0, not tiny-rn@random-seed0"),
        ("not_floats", "not rows of float vectors"),
    ],
)
def test_bad_imports_are_refused_with_one_line(tmp_path: Path, case: str, message: str) -> None:
    root = tmp_path / "indexes"
    vectors, meta, model = tmp_path / "v.npy", None, "tiny"
    np.save(vectors, unit_rows(30, 0))
    if case == "wrong_dim":
        np.save(vectors, unit_rows(30, 0, dim=32))
    elif case == "not_unit":
        np.save(vectors, 2 * unit_rows(30, 0))
    elif case == "length":
        meta = tmp_path / "m.parquet"
        pq.write_table(pa.table({"image_path": [f"{i}.jpg" for i in range(40)]}), meta)
    elif case == "other_model":
        run_json("import", "v", "--vectors", vectors, "--model", "tiny", "--pretrained", "none", "--root", root)
        model = "tiny-rn"  # 64-d as well: refused for being another model, not for its width
    elif case == "not_floats":
        np.save(vectors, np.arange(30 * DIM).reshape(30, DIM))
    args = ["import", "v", "--vectors", vectors, "--model", model, "--pretrained", "none", "--root", root]
    code, _, stderr = run_cli(*args, *(["--metadata", meta] if meta else []))
    assert code == 1 and stderr.startswith("error: ") and message in stderr and len(stderr.strip().splitlines()) == 1
    if case != "other_model":
        assert not (root / "v").exists()  # refused before an index was created

    if case == "not_unit":  # asked for: renormalised
        run_json(*args, "--normalize")
        stored = Index.open("v", root).vectors()[1]
        assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-6)
