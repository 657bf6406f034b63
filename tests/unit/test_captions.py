"""The caption-file reader: good lines kept, bad lines reported with their line number; datasets located."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.sources.captions import CaptionEntry, check_known_files, find_sidecar, read_caption_file
from clipsearch.sources.datasets import CAPTION_DATASETS, locate_caption_dataset


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _line_numbers(problems: list[str], file_name: str) -> list[int]:
    """The line number in each problem, checking every problem names the file."""
    assert all(p.startswith(file_name + ":") for p in problems), problems
    return [int(p.split(":")[1]) for p in problems]


def test_jsonl_keeps_good_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    lines = [
        {"file": "a.png", "captions": ["a cat", "a small cat"], "label": "cat", "split": "train"},  # 1
        None,  # 2: blank, ignored
        {"file": "sub\\b.png", "caption": "a dog\u2028on grass"},  # 3: Windows separator; U+2028 is not a newline
        "{not json",  # 4
        {"file": "c.png", "captions": ["fine", "  "]},  # 5: empty caption
        {"file": "./a.png", "caption": "a third", "split": "restval"},  # 6: same file, restval is train
        {"captions": ["no file"]},  # 7
        ["a", "list"],  # 8
        {"file": "../outside.png", "caption": "escapes"},  # 9
        {"file": "d.png", "caption": "x", "split": "holdout"},  # 10: unknown split
        {"file": "a.png", "caption": "contradiction", "label": "dog"},  # 11
        {"file": "e.png", "captions": []},  # 12
        {"file": "f.png", "caption": "one", "label": 7},  # 13: numeric label becomes text
    ]
    text = "\n".join("" if x is None else x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
    entries, problems = read_caption_file(_write(tmp_path / "captions.jsonl", text + "\n"))

    assert _line_numbers(problems, "captions.jsonl") == [4, 5, 7, 8, 9, 10, 11, 12]
    assert "empty caption" in problems[1] and "contradicts" in problems[6]
    assert list(entries) == ["a.png", "sub/b.png", "f.png"]
    assert entries["a.png"] == CaptionEntry("a.png", ["a cat", "a small cat", "a third"], "cat", "train")
    assert entries["a.png"].line == 1
    assert entries["sub/b.png"].captions == ["a dog\u2028on grass"] and entries["sub/b.png"].split is None
    assert entries["f.png"].label == "7"


def test_jsonl_absolute_paths_inside_the_folder_become_relative(tmp_path: Path) -> None:
    inside, outside = tmp_path / "imgs" / "x.png", tmp_path.parent / "y.png"
    text = "\n".join(json.dumps({"file": str(path), "caption": "c"}) for path in (inside, outside))
    entries, problems = read_caption_file(_write(tmp_path / "captions.jsonl", text))
    assert list(entries) == ["imgs/x.png"]
    assert _line_numbers(problems, "captions.jsonl") == [2]


def test_csv_accumulates_rows_and_counts_physical_lines(tmp_path: Path) -> None:
    text = (
        "File, Caption ,label,split\n"  # header names are trimmed and case-insensitive
        "a.png,a red car,car,train\n"  # 2
        'a.png,"a car, red",car,\n'  # 3: comma inside quotes; empty split keeps the earlier one
        'b.png,"a caption over\ntwo lines",boat,test\n'  # 4-5
        "c.png,only two\n"  # 6: missing columns
        "d.png,,dog,train\n"  # 7: empty caption
        "e.png,x,e,train,surplus\n"  # 8: too many columns
        "\n"  # 9: blank
        "b.png,a boat,boat,val\n"  # 10: contradicts the test split
        "a.png,a third car,car,train\n"  # 11
    )
    entries, problems = read_caption_file(_write(tmp_path / "captions.csv", text))
    assert _line_numbers(problems, "captions.csv") == [6, 7, 8, 10]
    assert entries["a.png"] == CaptionEntry("a.png", ["a red car", "a car, red", "a third car"], "car", "train")
    assert entries["b.png"] == CaptionEntry("b.png", ["a caption over\ntwo lines"], "boat", "test")
    assert list(entries) == ["a.png", "b.png"]


def test_csv_without_caption_column_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ClipsearchError, match="file,caption"):
        read_caption_file(_write(tmp_path / "captions.csv", "file,label\na.png,cat\n"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("captions.tsv", "a.png\tcat\n"),
        ("missing.jsonl", None),
        ("missing.token.txt", None),
        ("latin1.jsonl", b'{"file": "caf\xe9.png"}\n'),
        ("dataset_flickr8k.json", b"\xff\xfe"),
    ],
)
def test_unreadable_sidecar_is_a_user_error(tmp_path: Path, name: str, content: str | bytes | None) -> None:
    if isinstance(content, str):
        _write(tmp_path / name, content)
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ClipsearchError):
        read_caption_file(tmp_path / name)


FLICKR_TOKENS = (
    "1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"  # 1
    "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"  # 2
    "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"  # 3
    "1001773457_577c3a7d70.jpg 1\tno hash sign\n"  # 4
    "1001773457_577c3a7d70.jpg#2 no tab here\n"  # 5
    "1001773457_577c3a7d70.jpg#x\tbad index\n"  # 6
    "1002674143_1b742ab4b8.jpg#0\t   \n"  # 7: empty caption
    "\n"  # 8
    "1000268201_693b08cb0e.jpg#2\tA little girl climbing stairs .\n"  # 9
    "2258277193_586949ec62.jpg.1#0\tA known quirk of the real file .\n"  # 10
)


@pytest.mark.parametrize("name", ["Flickr8k.token.txt", "Flickr8k.lemma.token.txt"])
def test_flickr8k_tokens(tmp_path: Path, name: str) -> None:
    entries, problems = read_caption_file(_write(tmp_path / name, FLICKR_TOKENS))
    assert _line_numbers(problems, name) == [4, 5, 6, 7]
    assert [len(entry.captions) for entry in entries.values()] == [3, 1, 1]  # different caption counts
    assert entries["1000268201_693b08cb0e.jpg"].captions[2] == "A little girl climbing stairs ."
    assert entries["1001773457_577c3a7d70.jpg"].line == 3
    assert "2258277193_586949ec62.jpg.1" in entries  # a name like any other; check_known_files flags it
    assert all(entry.split is None for entry in entries.values())  # no split lists beside it


def test_flickr8k_token_file_takes_the_splits_of_the_lists_beside_it(tmp_path: Path) -> None:
    tokens = "".join(f"{name}#0\t{name} caption\n" for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"))
    path = _write(tmp_path / "Flickr8k.token.txt", tokens)
    _write(tmp_path / "Flickr_8k.trainImages.txt", "a.jpg\nb.jpg\n\n")
    _write(tmp_path / "Flickr_8k.devImages.txt", "c.jpg\n")
    _write(tmp_path / "Flickr_8k.testImages.txt", "d.jpg\r\n")
    entries, problems = read_caption_file(path)
    assert problems == []
    assert {file: entry.split for file, entry in entries.items()} == {
        "a.jpg": "train",
        "b.jpg": "train",
        "c.jpg": "val",
        "d.jpg": "test",
        "e.jpg": None,  # in no list
    }


def _karpathy_image(filename: str, split: str, captions: list[str], filepath: str | None = None) -> dict:
    image = {"filename": filename, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in captions]}
    if filepath is not None:
        image["filepath"] = filepath
    return image


def test_karpathy(tmp_path: Path) -> None:
    images = [
        _karpathy_image("COCO_val2014_1.jpg", "test", ["one", "two", "three", "four", "five"], "val2014"),
        _karpathy_image("COCO_val2014_2.jpg", "restval", ["six"], "val2014"),
        _karpathy_image("COCO_train2014_3.jpg", "train", ["seven", "  "], "train2014"),
        {"split": "val", "sentences": [{"raw": "no filename"}]},
        _karpathy_image("nothing.jpg", "val", []),
        _karpathy_image("plain.jpg", "val", ["flickr style, no filepath"]),
    ]
    path = _write(tmp_path / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))
    entries, problems = read_caption_file(path)
    assert list(entries.values()) == [
        CaptionEntry("val2014/COCO_val2014_1.jpg", ["one", "two", "three", "four", "five"], split="test"),
        CaptionEntry("val2014/COCO_val2014_2.jpg", ["six"], split="train"),
        CaptionEntry("train2014/COCO_train2014_3.jpg", ["seven"], split="train"),
        CaptionEntry("plain.jpg", ["flickr style, no filepath"], split="val"),
    ]
    assert [p.split(":")[1].strip().split()[0] for p in problems] == ["images[2]", "images[3]", "images[4]"]


def test_karpathy_file_that_is_not_json_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ClipsearchError, match="not valid JSON"):
        read_caption_file(_write(tmp_path / "dataset_flickr8k.json", '{"images": ['))
    with pytest.raises(ClipsearchError, match="images"):
        read_caption_file(_write(tmp_path / "dataset_flickr30k.json", "[]"))


def test_find_sidecar_prefers_jsonl(tmp_path: Path) -> None:
    assert find_sidecar(tmp_path) is None
    _write(tmp_path / "Flickr8k.token.txt", "")
    assert find_sidecar(tmp_path) == tmp_path / "Flickr8k.token.txt"
    _write(tmp_path / "captions.csv", "file,caption\n")
    assert find_sidecar(tmp_path) == tmp_path / "captions.csv"
    _write(tmp_path / "captions.jsonl", "")
    assert find_sidecar(tmp_path) == tmp_path / "captions.jsonl"
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "deeper" / "captions.jsonl", "")
    assert find_sidecar(tmp_path / "sub") is None


def test_check_known_files_names_the_line(tmp_path: Path) -> None:
    text = '{"file": "here.png", "caption": "a"}\n{"file": "gone.png", "caption": "b"}\n'
    entries, _ = read_caption_file(_write(tmp_path / "captions.jsonl", text))
    assert check_known_files(entries, {"here.png"}, "captions.jsonl") == ["captions.jsonl:2: image not found: gone.png"]
    no_lines = {"x.jpg": CaptionEntry("x.jpg", ["c"])}
    assert check_known_files(no_lines, set(), "dataset_coco.json") == ["dataset_coco.json: image not found: x.jpg"]


def test_locate_flickr8k(tmp_path: Path) -> None:
    for name in ("1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"):
        _write(tmp_path / "Flicker8k_Dataset" / name, "")
    _write(tmp_path / "Flickr8k_text" / "Flickr8k.token.txt", FLICKR_TOKENS)
    _write(tmp_path / "Flickr8k_text" / "Flickr_8k.trainImages.txt", "1000268201_693b08cb0e.jpg\n")
    _write(tmp_path / "Flickr8k_text" / "Flickr_8k.devImages.txt", "1001773457_577c3a7d70.jpg\n")

    image_root, entries, problems = locate_caption_dataset("flickr8k", tmp_path)
    assert image_root == tmp_path / "Flicker8k_Dataset"
    assert [(e.file, e.split, len(e.captions)) for e in entries] == [
        ("1000268201_693b08cb0e.jpg", "train", 3),
        ("1001773457_577c3a7d70.jpg", "val", 1),
    ]
    assert len(problems) == 4 + 1  # four malformed lines, one caption naming a missing image
    assert problems[-1] == "Flickr8k.token.txt:10: image not found: 2258277193_586949ec62.jpg.1"


def test_locate_coco_reports_a_missing_folder_once(tmp_path: Path) -> None:
    _write(tmp_path / "val2014" / "COCO_val2014_1.jpg", "")
    images = [
        _karpathy_image("COCO_val2014_1.jpg", "test", ["a"], "val2014"),
        _karpathy_image("COCO_val2014_2.jpg", "restval", ["b"], "val2014"),  # file missing
        _karpathy_image("COCO_train2014_3.jpg", "train", ["c"], "train2014"),  # folder missing
        _karpathy_image("COCO_train2014_4.jpg", "train", ["d"], "train2014"),
    ]
    _write(tmp_path / "caption_datasets" / "dataset_coco.json", json.dumps({"images": images}))

    image_root, entries, problems = locate_caption_dataset("coco", tmp_path)
    assert image_root == tmp_path
    assert [e.file for e in entries] == ["val2014/COCO_val2014_1.jpg"]
    assert problems[0].startswith("dataset_coco.json: 2 captioned images skipped: folder")
    assert problems[0].endswith("train2014 not found")
    assert problems[1:] == ["dataset_coco.json: image not found: val2014/COCO_val2014_2.jpg"]


@pytest.mark.parametrize("name", sorted(CAPTION_DATASETS))
def test_locate_missing_dataset_says_what_and_how(tmp_path: Path, name: str) -> None:
    with pytest.raises(ClipsearchError) as caught:
        locate_caption_dataset(name, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message and "--data-dir" in message
    assert CAPTION_DATASETS[name].caption_files[0] in message and CAPTION_DATASETS[name].image_dirs[0] in message
    if name == "flickr30k":
        assert "no open download" in message


def test_locate_without_data_dir_looks_in_the_default_place(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_DATA", str(tmp_path))
    with pytest.raises(ClipsearchError, match=str(tmp_path / "flickr30k")):
        locate_caption_dataset("flickr30k", None)
    with pytest.raises(ClipsearchError, match="choose one of"):
        locate_caption_dataset("imagenet", tmp_path)


def test_every_dataset_has_download_urls() -> None:
    for dataset in CAPTION_DATASETS.values():
        assert dataset.urls and all(url.startswith(("http://", "https://")) for url in dataset.urls)
