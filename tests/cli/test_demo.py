"""`clipsearch demo` runs end to end offline: generate, train, index the test split, evaluate, search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.cli.app import main


def test_small_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as done:
        main(["demo", "--out", str(out), "--n", "400", "--epochs", "1"])
    captured = capsys.readouterr()
    assert (done.value.code or 0) == 0, captured.err
    for line in ("text→image R@10", "zero-shot top-1, seen pairs", "zero-shot top-1, held-out pairs",
                 "text query: 'a blue triangle'", "image query"):
        assert line in captured.out

    results = json.loads((out / "results.json").read_text())
    test, chance = results["test"], results["chance"]
    assert set(test) == set(chance)
    assert chance["t2i_R@10"] == pytest.approx(10 / 40)  # 40 test images of 400
    assert chance["zs_seen_top1"] == pytest.approx(1 / 30)
    assert all(0.0 <= value <= 1.0 for value in test.values())
    assert results["model"]["arch"] == "tiny-rn" and results["model"]["checkpoint_sha256"]
    for name in ("contact_sheet.png", "run/curves.png", "run/best.safetensors"):
        assert (out / name).is_file(), name


def test_demo_refuses_to_clear_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keep = tmp_path / "mine.txt"
    keep.write_text("precious")
    with pytest.raises(SystemExit) as done:
        main(["demo", "--out", str(tmp_path)])
    assert done.value.code == 1 and "not a demo folder" in capsys.readouterr().err
    assert keep.read_text() == "precious"
