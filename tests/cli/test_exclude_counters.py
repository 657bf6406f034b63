"""`index --exclude` is remembered, and the summary's counters mean what they say (issue 14 item 10):
excluded files are "excluded", not "deleted"; a byte-identical copy is "copied", a file whose old path is
gone is "moved"; `skipped` is the number of `skipped_files`; a pattern that matches nothing is warned about."""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_runner import run_cli, run_json
from imagegen import write_distinct_images

from clipsearch.index.index import Index

TINY = ["--model", "tiny", "--pretrained", "none"]


def _index(folder: Path, root: Path, *extra: str) -> dict:
    return run_json("index", folder, "--name", "p", *TINY, "--workers", "0", "--root", root, *extra)


def _live_ids(root: Path) -> list[str]:
    return sorted(Index.open("p", root).rows(columns=["id"]).column("id").to_pylist())


def test_exclude_is_remembered_and_counted_as_excluded(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "idx"
    write_distinct_images(folder, ["a.png", "b.png", "thumbs/a.png", "thumbs/b.png", "x/thumbs/c.png"])
    first = _index(folder, root)
    assert first["new"] == 5
    stats = _index(folder, root, "--exclude", "thumbs/")  # a folder pattern: every folder named thumbs
    assert (stats["excluded"], stats["deleted"]) == (3, 0)
    assert _live_ids(root) == ["a.png", "b.png"]
    assert run_json("info", "p", "--root", root)["exclude"] == ["thumbs/"]
    again = _index(folder, root)  # a plain re-index applies the remembered pattern
    assert (again["new"], again["encoded"], again["unchanged"], again["excluded"]) == (0, 0, 2, 0)
    assert _live_ids(root) == ["a.png", "b.png"]
    code, table, _ = run_cli("info", "p", "--root", root)
    assert code == 0 and any(line.split() == ["│", "exclude", "│", "thumbs/", "│"] for line in table.splitlines())
    cleared = _index(folder, root, "--exclude", "")  # replaced by nothing: the thumbnails come back
    assert cleared["new"] == 3 and cleared["encoded"] == 0  # their vectors are still stored
    assert len(_live_ids(root)) == 5 and run_json("info", "p", "--root", root)["exclude"] == []


def test_pattern_matching_nothing_is_warned_about(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "idx"
    write_distinct_images(folder, ["a.png", "thumbs/t.png"])
    code, _, err = run_cli(
        "index", folder, "--name", "p", *TINY, "--workers", "0", "--root", root, "--exclude", "nothumbs/", "--json"
    )
    assert code == 0 and "warning: --exclude 'nothumbs/' matches no file or folder" in err
    assert "thumbs" not in err.replace("nothumbs", "")


def test_copies_are_copied_and_moves_are_moved(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "idx"
    write_distinct_images(folder, ["a.png", "b.png"])
    _index(folder, root)
    shutil.copyfile(folder / "a.png", folder / "a-copy.png")
    copied = _index(folder, root)
    assert (copied["copied"], copied["moved"], copied["new"], copied["encoded"]) == (1, 0, 0, 0)
    (folder / "b.png").rename(folder / "b-moved.png")
    moved = _index(folder, root)
    assert (moved["moved"], moved["copied"], moved["deleted"], moved["encoded"]) == (1, 0, 0, 0)
    assert _live_ids(root) == ["a-copy.png", "a.png", "b-moved.png"]


def test_skipped_counts_the_listed_files_in_every_run(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "idx"
    write_distinct_images(folder, ["a.png"])
    (folder / "broken.png").write_bytes(b"not an image")
    for _ in range(2):  # the second run: the broken file is unchanged, still skipped, still listed
        stats = _index(folder, root)
        assert stats["skipped"] == len(stats["skipped_files"]) == 1
        assert stats["skipped_files"][0][0] == "broken.png"
