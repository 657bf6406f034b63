"""`clipsearch check` (issue 12, acceptance 4): each corruption of items 6-13 is detected, one line
each, and `--repair` gives back a searchable index whose answers equal a clean index's. The tests
only corrupt files and then call the command, as a user's disk or hands would."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from cli_runner import run_cli, run_json
from index_helpers import GOOD, build_clean_indexes, private_root

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clean indexes of different folders under <dir>/indexes: 'photos' and 'other'."""
    return build_clean_indexes(tmp_path_factory.mktemp("check"), {"photos": GOOD, "other": ["x.png", "y.png", "z.png"]})


@pytest.fixture
def root(clean: Path, tmp_path: Path) -> Path:
    return private_root(clean, tmp_path)


def check(root: Path, *extra: str) -> tuple[int, dict]:
    code, stdout, stderr = run_cli("check", "photos", "--root", root, "--json", *extra)
    assert "Traceback" not in stderr, stderr
    return code, json.loads(stdout)


def answers(root: Path) -> list[tuple[str, float]]:
    code, stdout, stderr = run_cli("search", "photos", "red", "+", "blue", "-k", "5", "--root", root, "--json")
    assert code == 0 and "Traceback" not in stderr, stderr
    return [(hit["id"], round(hit["score"], 5)) for hit in json.loads(stdout)]


def images_table(root: Path) -> Path:
    return root / "photos" / "db" / "images.lance"


def _newest_version(table: Path) -> str:
    return sorted(glob.glob(str(table / "_versions" / "*.manifest")))[0]  # lance names count down


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# Corruptions that --repair fully undoes (every row is still readable): name -> (corrupt, words of the problem).
REPAIRABLE = {
    "6: faiss truncated": (lambda r: os.truncate(r / "photos" / "images.faiss", 60), "images.faiss"),
    "6: faiss garbage": (lambda r: _write(r / "photos" / "images.faiss", b"\x07" * 4096), "images.faiss"),
    "6: faiss empty": (lambda r: _write(r / "photos" / "images.faiss", b""), "images.faiss"),
    "7: another index's faiss": (
        lambda r: shutil.copy(r / "other" / "images.faiss", r / "photos" / "images.faiss"),
        "images.faiss",
    ),
    "11: key index deleted": (
        lambda r: [shutil.rmtree(d) for d in glob.glob(str(images_table(r) / "_indices" / "*"))],
        "BTree",
    ),
    "12: skipped table deleted": (lambda r: shutil.rmtree(r / "photos" / "db" / "skipped.lance"), "skipped"),
    "13: faiss is a folder": (
        lambda r: (os.remove(r / "photos" / "images.faiss"), os.mkdir(r / "photos" / "images.faiss")),
        "not a file",
    ),
    "counts wrong": (lambda r: _edit_manifest(r, counts={"images": 99}), "counts"),
    "rows file altered": (lambda r: _alter_rows_file(r / "photos" / "images.rows.arrow"), "images.rows.arrow"),
}


def _alter_rows_file(path: Path) -> None:
    """Another uri in the first row, in a file the manifest vouches for (its new size recorded)."""
    rows = ipc.open_file(pa.memory_map(str(path))).read_all()
    uris = rows.column("uri").to_pylist()
    uris[0] = uris[0][:-5] + ("X" if uris[0][-5] != "X" else "Y") + uris[0][-4:]
    altered = rows.set_column(rows.column_names.index("uri"), "uri", pa.array(uris, pa.string()))
    with ipc.new_file(str(path), altered.schema) as writer:
        writer.write_table(altered)
    record = json.loads((path.parent / "manifest.json").read_text())["rows"]
    _edit_manifest(path.parent.parent, rows={**record, "bytes": path.stat().st_size})


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / "photos" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_clean_index_is_healthy(root: Path) -> None:
    assert check(root) == (0, {"name": "photos", "healthy": True, "problems": [], "repaired": []})


@pytest.mark.parametrize("case", REPAIRABLE)
def test_each_corruption_is_detected_and_repaired(root: Path, clean: Path, case: str) -> None:
    corrupt, words = REPAIRABLE[case]
    corrupt(root)
    code, report = check(root)
    assert code == 1 and not report["healthy"], report
    assert any(words in problem for problem in report["problems"]), report
    assert all("\n" not in problem for problem in report["problems"])
    code, report = check(root, "--repair")
    assert code == 0 and report["healthy"] and report["repaired"], report
    assert answers(root) == answers(clean / "indexes")
    assert check(root)[0] == 0


def test_damaged_newest_version_rolls_back_to_the_last_good_one(root: Path, clean: Path) -> None:
    """Item 10: a truncated version file. The newest version only rebuilt derived files, so the
    previous one holds every row."""
    os.truncate(_newest_version(images_table(root)), 40)
    code, report = check(root)
    assert code == 1 and any("table images" in p for p in report["problems"]), report
    code, report = check(root, "--repair")
    assert code == 0 and any("set aside" in line for line in report["repaired"]), report
    assert answers(root) == answers(clean / "indexes")


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_damaged_data_file_keeps_what_is_readable_and_a_reindex_restores_the_rest(
    root: Path, clean: Path, damage: str
) -> None:
    """Item 10: the table's only data file is gone; repair leaves a consistent (here empty) index
    that searches, and re-indexing the folder gives the clean index's answers."""
    for path in glob.glob(str(images_table(root) / "data" / "*.lance")):
        os.truncate(path, 100) if damage == "truncated" else os.remove(path)
    code, report = check(root)
    assert code == 1 and any("table images" in p for p in report["problems"]), report
    code, report = check(root, "--repair")
    assert code == 0 and report["healthy"], report
    kept = run_json("info", "photos", "--root", root)["counts"]["images"]
    assert any(f"the {kept} rows still readable" in line for line in report["repaired"]), report
    code, _, stderr = run_cli("search", "photos", "red", "--root", root)  # searchable, if (here) empty
    assert code == 0 and "Traceback" not in stderr, stderr
    code, _, stderr = run_cli("index", clean / "photos", "--root", root, "--workers", "0")
    assert code == 0, stderr
    assert answers(root) == answers(clean / "indexes")
    assert check(root)[0] == 0


@pytest.mark.parametrize("text", ["", "{", "{}", '{"format": 1, "model": {}, "dim": 64}'])
def test_broken_manifest_is_detected_and_not_guessed(root: Path, text: str) -> None:
    """Item 8: the manifest names the model; check reports it with the fix and repairs nothing."""
    (root / "photos" / "manifest.json").write_text(text)
    for extra in ((), ("--repair",)):
        code, report = check(root, *extra)
        assert code == 1 and report["repaired"] == [] and "manifest.json" in report["problems"][0], report


def test_list_reports_a_corrupt_index_and_check_names_it(root: Path) -> None:
    """Item 9: list shows the others; check of the bad one says what is wrong."""
    (root / "photos" / "manifest.json").write_text("garbage")
    code, stdout, stderr = run_cli("list", "--root", root, "--json")
    assert code == 0 and [row["name"] for row in json.loads(stdout)] == ["other"], stderr
    assert check(root)[0] == 1


def test_unknown_index_is_one_line(root: Path) -> None:
    code, _, stderr = run_cli("check", "nope", "--root", root)
    assert code == 1 and stderr.startswith("error: unknown index 'nope'") and "Traceback" not in stderr


# How a delta file goes bad -> what fixes it: `check --repair`, or simply searching (the index is rebuilt).
DELTA_DAMAGE = {
    "missing": (lambda path: path.unlink(), "repair"),
    "truncated": (lambda path: os.truncate(path, path.stat().st_size // 2), "search"),
    "garbage": (lambda path: _write(path, b"\x07" * path.stat().st_size), "repair"),
    "an older delta": (lambda path: _write(path, path.with_suffix(".old").read_bytes()), "search"),
}


@pytest.mark.parametrize("damage", DELTA_DAMAGE)
def test_a_torn_or_missing_delta_file_is_detected_never_loaded_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """The change since the last full FAISS save lives in images.faiss.delta: without it (or with the
    wrong one) the index would silently miss rows, so check names it, and search rebuilds instead."""
    import numpy as np
    import pyarrow as pa

    from clipsearch.index import ann_delta
    from clipsearch.index.imported import Embeddings
    from clipsearch.index.index import Index

    monkeypatch.setattr(ann_delta, "FULL_SAVE_BYTES", 0)  # this small index writes deltas too
    vectors = np.random.default_rng(0).standard_normal((301, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = Index.create("photos", tmp_path, model="tiny", pretrained="none", dim=32)
    delta = index.store.path / ann_delta.DELTA_FILE
    for rows, ids in ((vectors[:300], range(300)), (vectors[300:], ["added"]), (-vectors[:1], ["0"])):
        embeddings = Embeddings.from_arrays(rows, pa.table({"id": [str(i) for i in ids]}))
        index.add_embeddings(embeddings, "import:t")
        if delta.is_file() and not delta.with_suffix(".old").exists():
            shutil.copy(delta, delta.with_suffix(".old"))
    assert index.manifest["ann"]["delta"]["added"] == 2 and check(tmp_path)[0] == 0
    corrupt, fix = DELTA_DAMAGE[damage]
    corrupt(delta)
    code, report = check(tmp_path)
    assert code == 1 and any("images.faiss.delta" in problem for problem in report["problems"]), report
    if fix == "repair":
        code, report = check(tmp_path, "--repair")
        assert code == 0 and report["healthy"] and not delta.exists(), report
    table = Index.open("photos", tmp_path).rows(columns=["id", "vector"])
    scores = np.stack(table.column("vector").to_numpy(zero_copy_only=False)) @ -vectors[0]
    truth = np.array(table.column("id").to_pylist())[np.argsort(-scores)[:5]].tolist()
    assert [hit.id for hit in Index.open("photos", tmp_path).search(vector=-vectors[0], k=5)] == truth
    assert check(tmp_path)[0] == 0
