"""A newcomer's first hour (issue 14): readable tables at 80 columns, a per-user index root, the usual CLI
conventions, results on stdout and progress on stderr, searching a folder directly, dataset hits as files,
literal text queries, and the small things (counts, wall time, "–")."""

from __future__ import annotations

import json
import os
import pickle
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli, run_json
from imagegen import write_distinct_images
from PIL import Image

from clipsearch.cli import common
from clipsearch.index.index import Index

TINY = ["--model", "tiny", "--pretrained", "none"]
LONG = "2024/holidays-in-the-mountains/forest/trail-number-seven/morning"  # deeper than 80 columns allow
NAMES = [f"{LONG}/IMG_{i:04d}_a_rather_long_file_name.png" for i in range(3)] + ["top.png"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_distinct_images(folder, NAMES)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    root = tmp_path_factory.mktemp("idx")
    code, _, err = run_cli("index", photos, "--name", "photos", *TINY, "--workers", "0", "--root", root, "--json")
    assert code == 0, err
    return root


@pytest.fixture
def width80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.out, "width", 80)


def test_hit_paths_are_relative_and_keep_the_file_name_at_80_columns(root: Path, photos: Path, width80) -> None:
    code, table, err = run_cli("search", "photos", "a photo", "-k", "4", "--root", root)
    assert code == 0, err
    lines = table.splitlines()
    assert max(map(len, lines)) <= 80
    assert all(name.rsplit("/", 1)[-1] in table for name in NAMES)  # every file name whole
    assert "top.png" in table and str(photos) + "/top.png" not in table  # relative to the indexed folder
    assert "2024/" in table and "…" in table  # a long path cut in its middle, its start kept
    header = next(line for line in lines if "rank" in line)
    assert "label" not in header  # no label in this index: no empty column


def test_default_root_is_the_per_user_data_folder(tmp_path: Path, photos: Path, monkeypatch) -> None:
    monkeypatch.delenv("CLIPSEARCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for cwd in ("here", "elsewhere"):
        (tmp_path / cwd).mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert run_cli("index", photos, "--name", "mine", *TINY, "--workers", "0", "--json")[0] == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    user_root = tmp_path / "xdg" / "clipsearch"
    assert [entry["name"] for entry in run_json("list")] == ["mine"]
    assert (user_root / "mine" / "manifest.json").is_file() and not (tmp_path / "here" / "indexes").exists()
    code, listed, _ = run_cli("list")
    assert code == 0 and "1 index in" in listed and str(user_root) in re.sub(r"\s", "", listed)
    assert run_json("info", "mine")["root"] == str(user_root)
    monkeypatch.setenv("CLIPSEARCH_HOME", str(tmp_path / "own"))  # still honoured, and so is --root
    assert run_json("list") == [] and [e["name"] for e in run_json("list", "--root", user_root)] == ["mine"]


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_every_help_is_plain_and_shows_defaults() -> None:
    from clipsearch.cli.app import cli_command

    commands = [((), cli_command()), *_commands(cli_command())]
    assert len(commands) > 15
    for path, _ in commands:
        code, text, err = run_cli(*path, "-h")
        assert code == 0 and "Usage: clipsearch" in text, (path, err)
        assert not re.search(r"<(bool|int|str|float|path|Path|list\[)", text), (path, text)
        assert not re.search(r"\S \.(\s|$)", text), (path, text)  # a help string's markup eaten: "split ."
    code, text, _ = run_cli("train", "--help")
    assert "[default: 10]" in text and "[default: 1e-3]" in text
    assert "[default: 10]" in run_cli("search", "--help")[1]


def test_version_completion_verbose_and_quiet(
    root: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, text, _ = run_cli("--version")
    assert code == 0 and re.fullmatch(r"clipsearch \d+\.\d+\.\d+\S*\n", text)
    assert "--install-completion" in run_cli("--help")[1]
    # typer detects the shell from the process tree (sh under make); this lets the test name it instead
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code, text, err = run_cli("--show-completion", "bash")
    assert code == 0 and "complete" in text, err
    assert run_cli("-v", "list", "--root", root)[0] == 0
    grid = tmp_path / "hits.png"
    code, _, err = run_cli("search", "photos", "a", "--grid", grid, "--root", root)
    assert code == 0 and "contact sheet:" in err
    code, _, err = run_cli("-q", "search", "photos", "a", "--grid", grid, "--root", root)
    assert code == 0 and "contact sheet" not in err
    for quiet, bar in (([], True), (["-q"], False)):  # -q: no progress bar either
        args = ("index", photos, "--name", f"q{len(quiet)}", *TINY, "--workers", "0", "--root", tmp_path / "idx")
        code, _, err = run_cli(*quiet, *args)
        assert code == 0 and ("encoding" in err) == bar, err
    code, _, err = run_cli("-q", "search", "nope", "a", "--root", root)
    assert code == 1 and err.startswith("error: unknown index 'nope'")  # errors show even when quiet


def test_progress_goes_to_stderr_and_stdout_holds_only_the_summary(tmp_path: Path, photos: Path) -> None:
    """`clipsearch index ... > log` with stderr on a terminal: the bar is drawn there, none lands in the log."""
    log = tmp_path / "log"
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100"}
    args = [sys.executable, "-m", "clipsearch", "index", photos, "--name", "p", *TINY, "--root", tmp_path / "idx"]
    with open(log, "w") as stdout:
        done = subprocess.run([*map(str, args), "--workers", "0"], stdout=stdout, stderr=follower, env=env, timeout=240)
    os.close(follower)
    stderr = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        stderr += chunk
    os.close(leader)
    assert done.returncode == 0, stderr.decode(errors="replace")
    logged = log.read_text()
    assert "encoding" in stderr.decode(errors="replace")  # the bar was drawn, on stderr
    assert "encoding" not in logged
    assert "img/s" not in logged and "eta" not in logged and "\x1b" not in logged  # no bar, no cursor moves
    assert "index 'p'" in logged and "new" in logged


def test_searching_a_folder_indexes_it_first(tmp_path: Path, monkeypatch) -> None:
    """rclip-style: a folder in place of an index name; same-named folders get their own indexes."""
    first, second = tmp_path / "a" / "Pictures", tmp_path / "b" / "Pictures"
    write_distinct_images(first, ["one.png", "two.png"])
    write_distinct_images(second, ["three.png"], first_seed=10)
    root = tmp_path / "idx"
    code, stdout, err = run_cli("search", first, "red", *TINY, "--root", root, "--json")
    assert code == 0, err
    assert sorted(h["id"] for h in json.loads(stdout)) == ["one.png", "two.png"]
    assert "index 'Pictures'" in err and "2 new" in err  # the update's report, on stderr
    hits = run_json("search", second, "red", *TINY, "--root", root)
    assert [h["id"] for h in hits] == ["three.png"]
    assert Index.open("Pictures", root).manifest["sources"] == [str(first)]
    assert Index.open("Pictures-2", root).manifest["sources"] == [str(second)]
    write_distinct_images(first, ["new.png"], first_seed=20)
    assert len(run_json("search", first, "red", "--no-update", "--root", root)) == 2  # no scan: not seen yet
    assert len(run_json("search", first, "red", "--root", root)) == 3
    monkeypatch.chdir(tmp_path / "a")
    assert len(run_json("search", "./Pictures", "red", "--root", root)) == 3


def test_dataset_hits_are_exported_as_files_and_paths_refuse(tmp_path: Path) -> None:
    archive = make_cifar_archive(tmp_path / "data", "cifar10", n_train_per_class=1, n_test_per_class=1)
    root = tmp_path / "idx"
    args = ("index", "cifar10", "--name", "c10", "--data-dir", archive.parent, *TINY, "--root", root, "--workers", "0")
    assert run_cli(*args, "--json")[0] == 0
    code, stdout, err = run_cli("search", "c10", "a cat", "--paths", "--root", root)
    assert code == 1 and stdout == "" and err.count("\n") == 1 and "--export DIR" in err
    out_dir = tmp_path / "hits"
    code, stdout, err = run_cli("search", "c10", "a cat", "-k", "3", "--export", out_dir, "--root", root)
    assert code == 0, err
    written = [Path(line) for line in stdout.splitlines()]
    hits = run_json("search", "c10", "a cat", "-k", "3", "--root", root)
    assert [p.name.split("-", 1)[0] for p in written] == ["01", "02", "03"]
    assert sorted(out_dir.iterdir()) == sorted(written)
    with open(archive.parent / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    for path, hit in zip(written, hits):
        row = int(hit["uri"].rsplit("/", 1)[-1])  # cifar10:FOLDER#test/ROW
        expected = batch[b"data"][row].reshape(3, 32, 32).transpose(1, 2, 0)
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected)


def test_folder_hits_export_as_copies(root: Path, photos: Path, tmp_path: Path) -> None:
    code, stdout, _ = run_cli("search", "photos", "a", "-k", "2", "--export", tmp_path / "x", "--root", root)
    hits = run_json("search", "photos", "a", "-k", "2", "--root", root)
    assert code == 0
    for line, hit in zip(stdout.splitlines(), hits):
        assert Path(line).name == f"{hit['rank']:02d}-{hit['id'].rsplit('/', 1)[-1]}"
        assert Path(line).read_bytes() == Path(hit["uri"]).read_bytes()


def test_text_prefix_and_dangling_operator(root: Path, tiny_encoder) -> None:
    index = Index.open("photos", root)
    ids, vectors = index.vectors()
    expected = np.argsort(-(vectors @ tiny_encoder.encode_texts(["photo.jpg"])[0]))
    for query in (["text:photo.jpg"], ["--text", "photo.jpg"]):
        hits = run_json("search", "photos", *query, "-k", "4", "--root", root)
        assert [h["id"] for h in hits] == [ids[i] for i in expected[:4]], query
    code, stdout, err = run_cli("search", "photos", "a", "+", "--root", root)
    assert (code, stdout) == (1, "") and err.startswith("error: ") and err.count("\n") == 1


def test_small_things(root: Path, photos: Path, width80) -> None:
    hits = run_json("search", photos, "a", "--no-update", "--root", root)  # the folder's index, by any name
    assert len(hits) == len(NAMES) and [e["name"] for e in run_json("list", "--root", root)] == ["photos"]
    code, listed, _ = run_cli("list", "--root", root)
    assert "1 index in" in listed and "1 indexes" not in listed
    code, table, err = run_cli("index", photos, "--name", "photos", "--root", root, "--workers", "0")
    assert code == 0, err
    header, values = [line for line in table.splitlines() if "new" in line or "│" in line][:2]
    cells = dict(zip((c.strip() for c in header.strip("┃").split("┃")), (c.strip() for c in values.split("│")[1:])))
    assert cells["images/s"] == "–" and "wall s" in cells  # nothing encoded; the wall time since start
    stats = run_json("index", photos, "--name", "photos", "--root", root, "--workers", "0")
    assert stats["seconds"] >= stats["sync_seconds"]
    code, text, _ = run_cli("search", "photos", "a", "-k", "1", "--where", "id = 'top.png'", "--root", root)
    lines = text.splitlines()
    assert code == 0 and lines[0].strip().startswith("1 result in 'photos'") and lines[1].startswith("┏")


def test_every_environment_variable_read_is_documented() -> None:
    """Each variable the package reads (os.environ / getenv, or listed in a tuple of variable names) is in the README."""
    package = Path(__file__).resolve().parents[2] / "clipsearch"
    names: set[str] = set()
    for source in package.rglob("*.py"):
        text = source.read_text()
        names |= set(
            re.findall(r"""(?:environ(?:\.get|\.setdefault)?\(?\[?|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']""", text)
        )
        names |= set(re.findall(r"""["']((?:CLIPSEARCH|HF|XDG)_[A-Z0-9_]+)["']""", text))
    readme = (package.parent / "README.md").read_text()
    assert {"CLIPSEARCH_HOME", "CLIPSEARCH_DATA", "CLIPSEARCH_OFFLINE", "HF_HOME", "HF_HUB_OFFLINE"} <= names
    assert sorted(n for n in names if f"`{n}`" not in readme) == []


def _right_edges(table: str, column: int) -> set[int]:
    """Where the cells of a column end, over the data rows of a rendered table."""
    rows = [line for line in table.splitlines() if line.startswith("│")]
    edges = set()
    for row in rows:
        cells = row.split("│")[1:-1]
        start = sum(len(c) + 1 for c in cells[:column]) + 1
        edges.add(start + len(cells[column].rstrip()))
    return edges


def test_caption_and_image_tables_align_alike(tmp_path: Path, width80) -> None:
    folder, root = tmp_path / "captioned", tmp_path / "idx"
    names = [f"im{i}.png" for i in range(6)]
    write_distinct_images(folder, names)
    lines = [json.dumps({"file": n, "captions": [f"picture {i}", f"photo number {i}"]}) for i, n in enumerate(names)]
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    assert run_cli("index", folder, "--name", "c", *TINY, "--workers", "0", "--root", root, "--json")[0] == 0
    images = run_cli("search", "c", "a photo", "-k", "6", "--root", root)[1]
    captions = run_cli("search", "c", "a photo", "-k", "12", "--captions", "--root", root)[1]
    for table in (images, captions):  # rank and score right-aligned in both: "10" and " 9" end together
        assert len(_right_edges(table, 0)) == 1 and len(_right_edges(table, 1)) == 1, table
