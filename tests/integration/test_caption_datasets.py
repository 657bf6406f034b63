"""Caption datasets through `clipsearch index`: Flickr8k layout, Karpathy JSON with a separate image
root, generic caption files, downloads; malformed lines are reported with their place and skipped."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from caption_fixture import (
    brute_force_recall,
    karpathy_image,
    random_captions,
    table_rows,
    write_flickr8k,
    write_image,
    write_karpathy,
)
from cli_runner import run_cli

from clipsearch.errors import ClipsearchError
from clipsearch.sources.datasets import CAPTION_DATASETS, DATASETS, dataset_items
from clipsearch.training.data import load_training_data

TINY = ("--model", "tiny", "--pretrained", "none", "--workers", "0")


def _warned_places(stderr: str, file_name: str) -> list[str]:
    """The place ("12" or "images[3]") of every warning about `file_name`, in order."""
    return re.findall(rf"^warning: {re.escape(file_name)}:\s?(\d+|images\[\d+\])", stderr, re.M)


def test_flickr8k_layout_indexes_a_split_and_reports_bad_lines(tmp_path, tiny_encoder) -> None:
    data = tmp_path / "flickr8k"
    good = write_flickr8k(data, {"train": 3, "val": 1, "test": 2}, captions_per_image=3)
    names = list(good)
    n_lines = 3 * len(names)
    bad_lines = [
        f"{names[0]} 5\tno hash sign",  # missing '#'
        "999_unknown.jpg#0\ta caption of an image that is not there",  # unknown image
        f"{names[1]}#5\t   ",  # empty caption
        f"{names[2]}#6 no tab",
    ]
    (data / "Flickr8k_text" / "Flickr8k.token.txt").open("a").write("\n".join(bad_lines) + "\n")

    code, _, stderr = run_cli("index", "flickr8k", "--data-dir", data, "--name", "f8", *TINY)

    assert code == 0, stderr
    places = _warned_places(stderr, "Flickr8k.token.txt")
    assert sorted(map(int, places)) == [n_lines + 1, n_lines + 2, n_lines + 3, n_lines + 4]
    assert f"Flickr8k.token.txt:{n_lines + 2}: image not found: 999_unknown.jpg" in stderr
    index_dir = Path(os.environ["CLIPSEARCH_HOME"]) / "f8"
    images = sorted(table_rows(index_dir, "images"), key=lambda r: r["id"])
    test_names = sorted(name for name, (split, _) in good.items() if split == "test")
    assert [r["id"] for r in images] == [f"flickr8k/{name}" for name in test_names]
    for row, name in zip(images, test_names):
        assert (row["source"], row["split"], row["captions"]) == ("flickr8k", "test", good[name][1])
        assert row["uri"] == str((data / "Flicker8k_Dataset" / name).absolute())
    captions = sorted(table_rows(index_dir, "captions"), key=lambda r: (r["image_id"], r["caption_index"]))
    expected = [(f"flickr8k/{n}", i, text) for n in test_names for i, text in enumerate(good[n][1])]
    assert [(r["image_id"], r["caption_index"], r["caption"]) for r in captions] == expected
    stored = np.array([r["vector"] for r in captions], np.float32)
    assert np.allclose(stored, tiny_encoder.encode_texts([text for _, _, text in expected]), atol=1e-5)

    # Another split goes into the same index beside the first one.
    code, _, stderr = run_cli("index", "flickr8k", "--data-dir", data, "--name", "f8", "--split", "train", *TINY)
    assert code == 0, stderr
    splits = sorted(r["split"] for r in table_rows(index_dir, "images"))
    assert splits == ["test", "test", "train", "train", "train"]


def test_folder_with_a_flickr8k_token_file_and_split_lists_keeps_its_splits(tmp_path) -> None:
    """Issue 10, bug 1: indexing such a folder stored no splits (only training read the split lists),
    so `eval retrieval --split test` found no test images. Index and trainer now read the same splits."""
    written = write_flickr8k(tmp_path / "official", {"train": 3, "val": 2, "test": 3}, captions_per_image=2)
    folder = tmp_path / "photos"  # images, token file and split lists side by side
    shutil.copytree(tmp_path / "official" / "Flicker8k_Dataset", folder)
    for text_file in (tmp_path / "official" / "Flickr8k_text").iterdir():
        shutil.copy(text_file, folder / text_file.name)

    code, _, stderr = run_cli("index", folder, "--name", "f8folder", *TINY)
    assert code == 0, stderr
    index_dir = Path(os.environ["CLIPSEARCH_HOME"]) / "f8folder"
    rows = table_rows(index_dir, "images")
    assert {row["id"]: (row["split"], row["captions"]) for row in rows} == written

    code, stdout, stderr = run_cli("eval", "retrieval", "f8folder", "--split", "test", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    expected = brute_force_recall(index_dir, "test", (1, 5, 10))
    assert (report["n_images"], report["n_captions"]) == (3, 6) == (expected["n_images"], expected["n_captions"])
    for direction in ("text_to_image", "image_to_text"):
        assert report[direction] == pytest.approx(expected[direction])

    data = load_training_data(str(folder))  # the trainer sees the same splits
    assert sorted(Path(e.uri).name for e in data.train) == sorted(n for n, (s, _) in written.items() if s == "train")
    assert sorted(Path(e.uri).name for e in data.val) == sorted(n for n, (s, _) in written.items() if s == "val")


def test_karpathy_json_with_a_separate_image_root(tmp_path) -> None:
    photos = tmp_path / "photos"  # the images, in no dataset-specific folder
    texts = random_captions([5, 5, 2, 1], seed=1)
    for i in (0, 1, 2, 3, 6):
        write_image(photos / f"{i}.jpg", seed=i)
    images = [
        karpathy_image("0.jpg", "test", texts[0]),
        karpathy_image("1.jpg", "test", texts[1] + ["  "]),  # one empty sentence
        karpathy_image("2.jpg", "train", texts[2]),
        karpathy_image("3.jpg", "restval", texts[3]),  # restval is train
        karpathy_image("4.jpg", "test", ["an image that is not on disk"]),
        karpathy_image("5.jpg", "test", []),  # no captions
        karpathy_image("6.jpg", "holdout", ["unknown split"]),  # kept, without a split
    ]
    captions_file = write_karpathy(tmp_path / "annotations" / "dataset_flickr30k.json", images, "flickr30k")

    code, _, stderr = run_cli(
        "index",
        "flickr30k",
        "--captions",
        captions_file,
        "--data-dir",
        photos,
        "--name",
        "f30",
        "--split",
        "all",
        *TINY,
    )

    assert code == 0, stderr
    assert _warned_places(stderr, "dataset_flickr30k.json") == ["images[1]", "images[5]", "images[6]"]
    assert "warning: dataset_flickr30k.json: image not found: 4.jpg" in stderr
    rows = sorted(table_rows(Path(os.environ["CLIPSEARCH_HOME"]) / "f30", "images"), key=lambda r: r["id"])
    assert [(r["id"], r["split"], r["captions"]) for r in rows] == [
        ("flickr30k/0.jpg", "test", texts[0]),
        ("flickr30k/1.jpg", "test", texts[1]),
        ("flickr30k/2.jpg", "train", texts[2]),
        ("flickr30k/3.jpg", "train", texts[3]),
        ("flickr30k/6.jpg", None, ["unknown split"]),
    ]


def test_generic_caption_file_with_a_named_dataset(tmp_path) -> None:
    for i in range(3):
        write_image(tmp_path / "Flicker8k_Dataset" / f"{i}.jpg", seed=i)
    csv = tmp_path / "mine.csv"
    csv.write_text(
        "file,caption,label,split\n0.jpg,a dog,dog,test\n0.jpg,a brown dog,dog,test\n"
        "1.jpg,a cat,cat,train\n2.jpg,,bird,test\n9.jpg,gone,x,test\n",
        encoding="utf-8",
    )

    items, problems = dataset_items("flickr8k", "test", tmp_path, csv)

    assert [(i.id, i.label_name, i.split, i.captions) for i in items] == [
        ("flickr8k/0.jpg", "dog", "test", ["a dog", "a brown dog"])
    ]
    assert problems == ["mine.csv:5: empty caption", "mine.csv:6: image not found: 9.jpg"]


def test_coco_layout_keeps_folders_in_ids(tmp_path) -> None:
    for i in range(2):
        write_image(tmp_path / "val2014" / f"COCO_val2014_{i:012d}.jpg", seed=i)
    images = [karpathy_image(f"COCO_val2014_{i:012d}.jpg", "test", [f"caption {i}"], "val2014") for i in range(2)]
    write_karpathy(tmp_path / "dataset_coco.json", images, "coco")

    items, problems = dataset_items("coco", "test", tmp_path)

    assert [i.id for i in items] == [
        "coco/val2014/COCO_val2014_000000000000.jpg",
        "coco/val2014/COCO_val2014_000000000001.jpg",
    ]
    assert problems == [] and all(Path(i.uri).is_file() and i.source == "coco" for i in items)


def _zip(folder: Path, out: Path, prefix: str = "", junk: bool = False) -> Path:
    """`folder`'s files in a zip under `prefix`; `junk` adds the __MACOSX folder macOS zips carry."""
    with zipfile.ZipFile(out, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            zipped.write(path, prefix + path.relative_to(folder).as_posix())
        if junk:
            zipped.writestr("__MACOSX/._Flicker8k_Dataset", b"resource fork")
    return out


def test_missing_dataset_is_downloaded_and_unpacked(tmp_path, monkeypatch) -> None:
    upstream = tmp_path / "upstream"
    good = write_flickr8k(upstream / "unpacked", {"test": 2, "train": 1}, captions_per_image=2)
    unpacked = upstream / "unpacked"
    images_zip = _zip(
        unpacked / "Flicker8k_Dataset", upstream / "Flickr8k_Dataset.zip", "Flicker8k_Dataset/", junk=True
    )
    text_zip = _zip(unpacked / "Flickr8k_text", upstream / "Flickr8k_text.zip")  # text files at the top
    urls = (images_zip.as_uri(), text_zip.as_uri())
    monkeypatch.setitem(CAPTION_DATASETS, "flickr8k", dataclasses.replace(CAPTION_DATASETS["flickr8k"], urls=urls))
    monkeypatch.delenv("CLIPSEARCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    items, problems = dataset_items("flickr8k", "test")  # nothing in $CLIPSEARCH_DATA/flickr8k yet

    target = Path(os.environ["CLIPSEARCH_DATA"]) / "flickr8k"
    assert sorted(i.id for i in items) == sorted(f"flickr8k/{n}" for n, (s, _) in good.items() if s == "test")
    assert problems == []
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [
            "Flicker8k_Dataset",
            "Flickr8k.token.txt",
            "Flickr_8k.devImages.txt",
            "Flickr_8k.testImages.txt",
            "Flickr_8k.trainImages.txt",
            "Flickr8k_Dataset.zip",
            "Flickr8k_text.zip",
        ]
    )  # no junk, no staging left
    images_zip.unlink()
    text_zip.unlink()
    assert len(dataset_items("flickr8k", "train")[0]) == 1  # found on disk now: nothing fetched again


def test_missing_dataset_offline_is_one_clear_line(tmp_path) -> None:
    code, stdout, stderr = run_cli("index", "flickr8k", "--data-dir", tmp_path, "--name", "x", *TINY)
    assert code == 1 and stdout == ""
    error_line = stderr.strip().splitlines()[-1]  # after the tiny model's random-weights warning
    assert error_line.startswith("error: flickr8k:") and "Traceback" not in stderr
    assert "offline mode is on" in error_line and "--data-dir" in error_line


def test_flickr30k_is_never_downloaded(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CLIPSEARCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # even online: its images have no open download
    with pytest.raises(ClipsearchError, match="no open download") as caught:
        dataset_items("flickr30k", "test", tmp_path)
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_split_errors_say_what_exists(tmp_path) -> None:
    write_flickr8k(tmp_path, {"train": 2}, captions_per_image=1)
    with pytest.raises(ClipsearchError, match=r"no captioned images in split 'test'.*splits found: train"):
        dataset_items("flickr8k", "test", tmp_path)
    with pytest.raises(ClipsearchError, match="unknown split 'holdout'"):
        dataset_items("flickr8k", "holdout", tmp_path)
    with pytest.raises(ClipsearchError, match="drop --captions"):
        dataset_items("cifar10", "test", tmp_path, tmp_path / "captions.jsonl")
    assert {"cifar10", "cifar100", "flickr8k", "flickr30k", "coco"} <= set(DATASETS)
