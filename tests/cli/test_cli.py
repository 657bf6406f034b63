"""The command line (acceptance check 5): every user mistake is one `error:` line on stderr, exit
code 1, no traceback, nothing already indexed lost; the outputs (--json, --paths, --grid,
list, info, remove) show what the API holds; `python -m clipsearch` and the console script work."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from imagegen import write_distinct_images
from PIL import Image

from clipsearch.cli.app import main
from clipsearch.index.index import Index
from clipsearch.model.encoder import Encoder

N_IMAGES = 8
TINY = ["--model", "tiny", "--pretrained", "none"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_distinct_images(folder, [f"img{i}.png" for i in range(N_IMAGES)])
    return folder


@pytest.fixture(scope="module")
def built_root(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    """An index root holding index 'base' of the photos, built once through the CLI."""
    root = tmp_path_factory.mktemp("built") / "idx"
    code, _, err = run_cli("index", photos, "--name", "base", *TINY, "--workers", "0", "--root", root, "--json")
    assert code == 0 and Index.open("base", root).counts()["images"] == N_IMAGES, err
    return root


@pytest.fixture
def root(built_root: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built root for each test (tests change and remove indexes)."""
    shutil.copytree(built_root, tmp_path / "idx")
    return tmp_path / "idx"


def snapshot(root: Path) -> tuple:
    """What must survive a failed command: the index folders, counts, table version, manifest."""
    index = Index.open("base", root)
    return (
        sorted(p.name for p in root.iterdir()),
        index.counts(),
        index.store.version(),
        (root / "base" / "manifest.json").read_text(),
    )


USER_ERRORS = {
    "unknown index": (["search", "nope", "a dog"], "unknown index 'nope'"),
    "missing folder": (["index", "/no/such/folder", "--name", "other", *TINY], "folder not found"),
    "k = 0": (["search", "base", "a dog", "-k", "0"], "-k must be a positive"),
    "negative k": (["search", "base", "a dog", "-k", "-3"], "-k must be a positive"),
    "no query": (["search", "base"], "empty query"),
    "blank query": (["search", "base", "  "], "empty query"),
    "unknown model": (
        ["index", "PHOTOS", "--name", "other", "--model", "NoSuchNet", "--pretrained", "none"],
        "unknown model 'NoSuchNet'",
    ),
    "missing weights offline": (
        ["index", "PHOTOS", "--name", "other", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k"],
        "--pretrained PATH",
    ),
    "default model offline": (["index", "PHOTOS", "--name", "other"], "not in the Hugging Face cache"),
    "search with another model": (
        ["search", "base", "a dog", "--model", "ViT-B-32", "--pretrained", "none"],
        "was built with tiny@random-seed0, not ViT-B-32@random-seed0",
    ),
    "index with another model": (
        ["index", "PHOTOS", "--name", "base", "--model", "mini", "--pretrained", "none"],
        "was built with",
    ),
    "unknown column in --where": (["search", "base", "a dog", "--where", "no_such_column = 1"], "invalid filter"),
    "broken --where": (["search", "base", "a dog", "--where", "width >"], "invalid filter"),
    "missing query image": (["search", "base", "--image", "/no/such.png"], "query image not found"),
    "--json with --paths": (
        ["search", "base", "a dog", "--json", "--paths"],
        "choose one of --json, --paths and --export",
    ),
    "bad index name": (["search", "no good!", "a dog"], "invalid index name"),
    "dangling operator": (["search", "base", "a dog", "+"], "the query ends with '+'"),
    "folder not indexed, --no-update": (["search", "/tmp", "a dog", "--no-update"], "no index of /tmp yet"),
    "info of unknown index": (["info", "nope"], "unknown index"),
    "remove unknown index": (["remove", "nope"], "no index at"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_one_line_and_lose_nothing(case: str, root: Path, photos: Path) -> None:
    args, message = USER_ERRORS[case]
    before = snapshot(root)
    code, out, err = run_cli(*[str(photos) if a == "PHOTOS" else a for a in args], "--root", root)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (case, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err
    assert snapshot(root) == before


def test_interrupted_index_exits_130_and_keeps_what_was_written(root: Path, photos: Path, monkeypatch) -> None:
    more = photos.parent / "more"
    write_distinct_images(more, [f"new{i}.png" for i in range(6)], first_seed=100)
    calls = []

    def interrupt_second_batch(self, pixels):
        calls.append(len(pixels))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, pixels)

    original = Encoder.encode_image_tensors
    monkeypatch.setattr("clipsearch.index.sync.WRITE_BATCH", 2)
    monkeypatch.setattr(Encoder, "encode_image_tensors", interrupt_second_batch)
    code, out, err = run_cli(
        "index", more, "--name", "more", *TINY, "--workers", "0", "--batch-size", "2", "--root", root
    )
    assert code == 130 and "interrupted" in err and "Traceback" not in err, (out, err)
    assert "2/6" in err and "img/s" in err and "eta" in err  # the progress bar (on stderr), as far as it got
    monkeypatch.setattr(Encoder, "encode_image_tensors", original)
    assert Index.open("more", root).counts()["images"] == 2
    code, out, _ = run_cli("index", more, "--name", "more", *TINY, "--workers", "0", "--root", root, "--json")
    assert code == 0 and (json.loads(out)["new"], json.loads(out)["unchanged"]) == (4, 2)


def test_unchanged_reindex_loads_no_model(root: Path, photos: Path, monkeypatch) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although nothing needed encoding")

    monkeypatch.setattr("clipsearch.model.encoder.build_model", no_model)
    code, out, _ = run_cli("index", photos, "--name", "base", *TINY, "--json", "--root", root)
    assert code == 0 and (json.loads(out)["unchanged"], json.loads(out)["encoded"]) == (N_IMAGES, 0)


def test_search_outputs(root: Path, photos: Path, tmp_path: Path) -> None:
    expected = Index.open("base", root).search("a red square", k=5)

    code, out, _ = run_cli("search", "base", "a red square", "-k", "5", "--json", "--root", root)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 5
    assert all({"id", "uri", "score", "rank"} <= set(hit) for hit in hits)
    assert [(h["id"], h["uri"], h["rank"]) for h in hits] == [(e.id, e.uri, e.rank) for e in expected]
    assert [h["score"] for h in hits] == pytest.approx([e.score for e in expected], abs=1e-6)

    code, out, _ = run_cli("search", "base", "a red square", "-k", "5", "--paths", "--root", root)
    assert code == 0 and out.splitlines() == [e.uri for e in expected]
    assert all(Path(line).is_file() for line in out.splitlines())

    code, out, _ = run_cli("search", "base", "a red square", "-k", "3", "--root", root)
    assert code == 0 and all(word in out for word in ("rank", "score", "path", "size", "48x40"))
    ranks = [
        line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│") and line.split("│")[1].strip()
    ]
    assert ranks == ["1", "2", "3"] and all(f"{e.score:.4f}" in out for e in expected[:3])  # long paths wrap

    grid = tmp_path / "sheet.png"
    code, _, err = run_cli("search", "base", "a red square", "-k", "4", "--grid", grid, "--paths", "--root", root)
    assert code == 0 and "contact sheet" in err
    with Image.open(grid) as sheet:
        assert sheet.format == "PNG" and sheet.width > 100 and sheet.height > 50


def test_index_list_info_prune_remove(root: Path, photos: Path) -> None:
    code, out, _ = run_cli("index", photos, "--name", "base", *TINY, "--workers", "0", "--root", root)
    assert code == 0 and all(col in out for col in ("new", "unchanged", "skipped", "wall s", "images/s"))

    code, out, _ = run_cli("list", "--root", root)
    assert code == 0 and "base" in out and "tiny@random-seed0" in out
    code, out, _ = run_cli("list", "--json", "--root", root)
    assert json.loads(out) == [
        {"name": "base", "model": "tiny@random-seed0", "images": N_IMAGES, "updated": json.loads(out)[0]["updated"]}
    ]

    code, out, _ = run_cli("info", "base", "--json", "--root", root)
    info = json.loads(out)
    assert code == 0 and info["model_id"] == "tiny@random-seed0" and info["dim"] == 64
    assert info["counts"] == {"images": N_IMAGES, "deleted": 0, "skipped": 0, "captions": 0}
    assert info["ann"]["kind"] == "flat" and info["disk_bytes"] > info["faiss_bytes"] > 0 and info["updated"]
    code, out, _ = run_cli("info", "base", "--root", root)
    assert code == 0 and "tiny@random-seed0" in out and "flat" in out

    # A deleted file: marked by a plain run, removed for good by --prune.
    data = (photos / "img0.png").read_bytes()
    (photos / "img0.png").unlink()
    try:
        code, out, _ = run_cli("index", photos, "--name", "base", *TINY, "--json", "--root", root)
        assert json.loads(out)["deleted"] == 1 and Index.open("base", root).counts()["deleted"] == 1
        code, out, _ = run_cli("index", photos, "--name", "base", "--prune", "--json", "--root", root)
        assert code == 0 and Index.open("base", root).counts() == {
            "images": N_IMAGES - 1,
            "deleted": 0,
            "skipped": 0,
            "captions": 0,
        }
    finally:
        (photos / "img0.png").write_bytes(data)

    code, out, _ = run_cli("remove", "base", "--root", root)
    assert code == 0 and "removed" in out and not (root / "base").exists()
    code, out, _ = run_cli("list", "--json", "--root", root)
    assert json.loads(out) == []


def _subprocess(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIPSEARCH_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "clipsearch", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    shown = _subprocess("--help", home=tmp_path)
    assert shown.returncode == 0 and all(cmd in shown.stdout for cmd in ("index", "search", "list", "info", "remove"))
    failed = _subprocess("remove", "nope", home=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.strip()] == [f"error: no index at {tmp_path / 'nope'}"]


def test_console_script_is_installed() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="clipsearch")
    assert script.value == "clipsearch.cli.app:main" and script.load() is main
