"""The generated shapes dataset: deterministic, holdout-clean, and its captions match its pixels."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.sources.shapes import (
    COLOURS,
    DEFAULT_HOLDOUT,
    POSITION_PHRASES,
    POSITIONS,
    SHAPE_WORDS,
    SHAPES,
    class_names,
    generate_shapes,
)


def _records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "captions.jsonl").read_text(encoding="utf-8").splitlines()]


def _all_files(out_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    # 400 images: val and test get 40 each, more than the 30 classes.
    out_dir = tmp_path_factory.mktemp("shapes")
    meta = generate_shapes(out_dir, n=400, size=32, seed=3)
    return out_dir, meta, _records(out_dir)


def test_class_names_are_colour_major() -> None:
    names = class_names()
    assert len(names) == len(COLOURS) * len(SHAPES) == len(set(names))
    assert names[: len(SHAPES)] == [f"red {shape}" for shape in SHAPES]
    assert set(DEFAULT_HOLDOUT) < set(names)


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    generate_shapes(tmp_path / "a", n=60, size=32, seed=1)
    generate_shapes(tmp_path / "b", n=60, size=32, seed=1)
    first, second = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert len(first) == 60 + 2  # images + captions.jsonl + meta.json
    assert first == second


def test_other_seed_gives_other_images(tmp_path: Path) -> None:
    generate_shapes(tmp_path / "a", n=30, size=32, seed=1)
    generate_shapes(tmp_path / "b", n=30, size=32, seed=2)
    first, second = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert first.keys() == second.keys()
    images = [name for name in first if name.endswith(".png")]
    assert sum(first[name] != second[name] for name in images) > 0.9 * len(images)


def test_layout_and_meta(dataset) -> None:
    out_dir, meta, records = dataset
    assert json.loads((out_dir / "meta.json").read_text(encoding="utf-8")) == meta
    assert meta["counts"] == {"train": 320, "val": 40, "test": 40}
    assert (meta["n"], meta["size"], meta["seed"]) == (400, 32, 3)
    assert meta["colours"] == list(COLOURS) and meta["shapes"] == list(SHAPES)
    assert meta["class_names"] == class_names()
    assert meta["holdout"] == list(DEFAULT_HOLDOUT)
    for split, count in meta["counts"].items():
        assert len(list((out_dir / split).glob("*.png"))) == count
        assert sum(meta["class_counts"][split].values()) == count
    on_disk = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert sorted(r["file"] for r in records) == on_disk
    for record in records:
        assert record["file"].startswith(record["split"] + "/")
        with Image.open(out_dir / record["file"]) as image:
            assert (image.size, image.mode) == ((32, 32), "RGB")


def test_holdout_only_in_val_and_test_and_every_class_there(dataset) -> None:
    _, _, records = dataset
    labels = {split: Counter(r["label"] for r in records if r["split"] == split) for split in ("train", "val", "test")}
    assert not set(DEFAULT_HOLDOUT) & set(labels["train"])
    assert set(labels["train"]) == set(class_names()) - set(DEFAULT_HOLDOUT)
    for split in ("val", "test"):
        assert set(labels[split]) == set(class_names())
        # Held-out classes are as frequent as seen ones, so their accuracy is measurable.
        assert min(labels[split][name] for name in DEFAULT_HOLDOUT) >= min(labels[split].values())


def test_held_out_pairs_never_drawn_in_train(dataset) -> None:
    """Not even as the small second object: train captions never name a held-out pair."""
    _, _, records = dataset
    for record in records:
        if record["split"] == "train":
            for caption in record["captions"]:
                for pair in DEFAULT_HOLDOUT:
                    colour, shape = pair.split()
                    assert not any(f"{colour} {word}" in caption for word in SHAPE_WORDS[shape]), caption


def test_captions_are_varied_and_name_colour_and_shape(dataset) -> None:
    _, _, records = dataset
    for record in records:
        captions = record["captions"]
        assert 2 <= len(captions) <= 5 and len(set(captions)) == len(captions)
        colour, shape = record["label"].split()
        for caption in captions:
            assert any(f"{colour} {word}" in caption for word in SHAPE_WORDS[shape]), caption
    second_object_mentions = sum(" small " in c and "next to" in c for r in records for c in r["captions"])
    assert second_object_mentions > 0


def _label_pixels(out_dir: Path, record: dict) -> np.ndarray:
    """(row, col) of the pixels painted in the label's colour."""
    pixels = np.asarray(Image.open(out_dir / record["file"]), dtype=np.float32)
    target = np.array(COLOURS[record["label"].split()[0]], dtype=np.float32)
    return np.argwhere(np.linalg.norm(pixels - target, axis=2) < 30)


def test_captions_match_pixels(dataset) -> None:
    """The label's colour is drawn, where the caption says, and "large" objects are larger than "small" ones."""
    out_dir, _, records = dataset
    area_by_size: dict[str, list[int]] = {"small": [], "medium": [], "large": []}
    positions_checked = 0
    for record in records:
        found = _label_pixels(out_dir, record)
        assert len(found) >= 6, record
        captions = record["captions"]
        words = {word for caption in captions for word in re.findall(r"[a-z]+", caption)}
        if len(words & set(COLOURS)) > 1:
            continue  # a second object is mentioned; its position phrase would confuse the check
        for size in area_by_size:
            if any(f" {size} " in caption for caption in captions):
                area_by_size[size].append(len(found))
        said = {p for p in POSITIONS for caption in captions for phrase in POSITION_PHRASES[p] if phrase in caption}
        assert len(said) <= 1, captions
        if said:
            row, col = divmod(POSITIONS.index(said.pop()), 3)
            centre_row, centre_col = (found.min(axis=0) + found.max(axis=0) + 1) / 2 / 32  # bounding-box centre
            assert int(centre_row * 3) == row and int(centre_col * 3) == col, record
            positions_checked += 1
    assert positions_checked > 100
    means = [np.mean(area_by_size[size]) for size in ("small", "medium", "large")]
    assert means[0] < means[1] < means[2]


def test_custom_and_empty_holdout(tmp_path: Path) -> None:
    meta = generate_shapes(tmp_path / "none", n=60, size=32, holdout=[])
    assert meta["holdout"] == [] and set(meta["class_counts"]["train"]) == set(class_names())
    assert all(count > 0 for count in meta["class_counts"]["train"].values())
    meta = generate_shapes(tmp_path / "one", n=60, size=32, holdout=["orange cross"])
    assert meta["class_counts"]["train"]["orange cross"] == 0
    assert meta["class_counts"]["train"]["red star"] > 0
    # With a single seen class there is no valid second object; generation still works.
    meta = generate_shapes(tmp_path / "almost_all", n=60, size=32, holdout=class_names()[1:])
    assert meta["class_counts"]["train"] == {**dict.fromkeys(class_names(), 0), "red circle": 48}


@pytest.mark.parametrize(
    "arguments",
    [
        {"holdout": ["pink circle"]},
        {"holdout": class_names()},
        {"split_fractions": (0.5, 0.1, 0.1)},
        {"n": 0},
        {"size": 8},
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ClipsearchError):
        generate_shapes(tmp_path / "out", **{"n": 10, "size": 32, **arguments})


def test_existing_folder_reused_only_when_identical(tmp_path: Path) -> None:
    meta = generate_shapes(tmp_path, n=30, size=32, seed=5)
    before = _all_files(tmp_path)
    assert generate_shapes(tmp_path, n=30, size=32, seed=5) == meta
    assert _all_files(tmp_path) == before
    with pytest.raises(ClipsearchError, match="not empty"):
        generate_shapes(tmp_path, n=30, size=32, seed=6)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ClipsearchError, match="not empty"):
        generate_shapes(tmp_path / "other", n=30, size=32)
