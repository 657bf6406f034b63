"""Caption file parsers: generic sidecars, Flickr8k token files, Karpathy split JSON.

Pure parsing: no model, no store. A malformed line is skipped and reported
as a problem string "<file name>:<line>: <what is wrong>"; the rest of the file
is kept. Only a file that cannot be read at all (missing, not text, not JSON,
a CSV without the needed columns) raises `ClipsearchError`.

Also knows where the caption datasets (Flickr8k, Flickr30k, COCO) live inside
a data folder and where they can be downloaded; downloading itself belongs to
`sources/download.py`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import ClipsearchError
from .download import data_root

SIDECAR_NAMES: tuple[str, ...] = ("captions.jsonl", "captions.csv", "Flickr8k.token.txt")
FLICKR8K_SPLIT_FILES: dict[str, str] = {
    "Flickr_8k.trainImages.txt": "train",
    "Flickr_8k.devImages.txt": "val",
    "Flickr_8k.testImages.txt": "test",
}
# Names datasets use for their splits, mapped onto ours. Karpathy's "restval"
# is the part of COCO val2014 that is trained on.
_SPLIT_NAMES: dict[str, str] = {
    "train": "train", "restval": "train",
    "val": "val", "dev": "val", "valid": "val", "validation": "val",
    "test": "test",
}


@dataclass
class CaptionEntry:
    """One image and its captions; `file` is relative to the image root, with forward slashes."""

    file: str
    captions: list[str]
    label: str | None = None
    split: str | None = None
    line: int | None = field(default=None, compare=False)  # first line that named the file, for messages


def find_sidecar(folder: Path) -> Path | None:
    """The caption file directly in `folder` (captions.jsonl, captions.csv or Flickr8k.token.txt), if any."""
    for name in SIDECAR_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_sidecar(path: Path) -> tuple[dict[str, CaptionEntry], list[str]]:
    """Read a JSONL, CSV or Flickr8k token caption file; keys are files relative to its folder.

    JSONL: one object per line, {"file", "captions": [...] or "caption": "...", "label"?, "split"?}.
    CSV: a header with `file` and `caption` (optionally `label`, `split`);
    several rows (or JSONL lines) for one file add up their captions.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_flickr8k_tokens(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    raise ClipsearchError(f"unsupported caption file {path}: use .jsonl, .csv or a Flickr8k .token.txt")


def read_flickr8k_tokens(path: Path) -> tuple[dict[str, CaptionEntry], list[str]]:
    """Read `Flickr8k.token.txt` (or `Flickr8k.lemma.token.txt`): lines `image.jpg#N<TAB>caption`."""
    path = Path(path)
    entries: dict[str, CaptionEntry] = {}
    problems: list[str] = []
    for number, line in _numbered_lines(path):
        where = f"{path.name}:{number}"
        key, tab, caption = line.partition("\t")
        file, hash_sign, index = key.strip().rpartition("#")
        if not tab:
            problems.append(f"{where}: no tab between 'image#N' and the caption")
        elif not hash_sign or not file:
            problems.append(f"{where}: expected 'image#N' before the tab, got {key.strip()!r}")
        elif not index.isdigit():
            problems.append(f"{where}: caption number {index!r} is not a whole number")
        elif not caption.strip():
            problems.append(f"{where}: empty caption")
        else:
            relative = _relative_file(file, path.parent)
            if relative is None:
                problems.append(f"{where}: image path {file!r} leaves the folder")
            else:
                entry = entries.setdefault(relative, CaptionEntry(relative, [], line=number))
                entry.captions.append(caption.strip())
    return entries, problems


def read_flickr8k_splits(text_dir: Path) -> dict[str, str]:
    """Map image file -> train/val/test from the Flickr_8k.{train,dev,test}Images.txt lists found in `text_dir`."""
    splits: dict[str, str] = {}
    for name, split in FLICKR8K_SPLIT_FILES.items():
        path = Path(text_dir) / name
        if path.is_file():
            for _, line in _numbered_lines(path):
                splits[line.strip()] = split
    return splits


def read_karpathy(path: Path) -> tuple[list[CaptionEntry], list[str]]:
    """Read a Karpathy split JSON (dataset_flickr8k/flickr30k/coco.json); `restval` becomes `train`.

    Problems name the image by its index in the "images" list (JSON has no useful line numbers).
    """
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except ValueError as error:
        raise ClipsearchError(f"{path} is not valid JSON ({error}); download it again") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ClipsearchError(f"{path} has no \"images\" list; is it a Karpathy split file (dataset_*.json)?")
    entries: list[CaptionEntry] = []
    problems: list[str] = []
    for index, image in enumerate(images):
        where = f"{path.name}: images[{index}]"
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str) or not image["filename"]:
            problems.append(f"{where}: no filename")
            continue
        file = posixpath.join(image.get("filepath") or "", image["filename"])
        sentences = image.get("sentences")
        raw = [s.get("raw") for s in sentences if isinstance(s, dict)] if isinstance(sentences, list) else []
        captions = [text.strip() for text in raw if isinstance(text, str) and text.strip()]
        if not captions:
            problems.append(f"{where} ({file}): no captions")
            continue
        if len(captions) < len(sentences):
            problems.append(f"{where} ({file}): {len(sentences) - len(captions)} empty caption(s) skipped")
        split = image.get("split")
        if split not in _SPLIT_NAMES:
            problems.append(f"{where} ({file}): unknown split {split!r}, image kept without a split")
        entries.append(CaptionEntry(file, captions, split=_SPLIT_NAMES.get(split)))
    return entries, problems


def check_known_files(entries: dict[str, CaptionEntry], known: set[str], source_name: str) -> list[str]:
    """Problems for entries whose file is not in `known` (the image files that exist)."""
    problems = []
    for file, entry in entries.items():
        if file not in known:
            where = source_name if entry.line is None else f"{source_name}:{entry.line}"
            problems.append(f"{where}: image not found: {file}")
    return problems


@dataclass(frozen=True)
class CaptionDataset:
    """Where a caption dataset's files sit inside its data folder, and where to get them."""

    name: str
    image_dirs: tuple[str, ...]  # candidate image folders, relative to the data folder; first found wins
    caption_files: tuple[str, ...]  # candidate caption files, relative to the data folder; first found wins
    urls: tuple[str, ...]  # official downloads; unpack each into the data folder
    how_to_get: str  # one sentence for error messages
    # COCO captions name files as "val2014/x.jpg", so paths are relative to the folder above.
    image_root_is_parent: bool = False


_KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"

CAPTION_DATASETS: dict[str, CaptionDataset] = {
    "flickr8k": CaptionDataset(
        name="flickr8k",
        image_dirs=("Flicker8k_Dataset", "Flickr8k_Dataset"),  # the official zip misspells it
        caption_files=(
            "Flickr8k.token.txt",
            "Flickr8k_text/Flickr8k.token.txt",
            "dataset_flickr8k.json",
            "caption_datasets/dataset_flickr8k.json",
        ),
        urls=(
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
        ),
        how_to_get="unzip Flickr8k_Dataset.zip and Flickr8k_text.zip (github.com/jbrownlee/Datasets releases) there",
    ),
    "flickr30k": CaptionDataset(
        name="flickr30k",
        image_dirs=("flickr30k-images", "flickr30k_images"),
        caption_files=("dataset_flickr30k.json", "caption_datasets/dataset_flickr30k.json"),
        urls=(_KARPATHY_URL,),
        how_to_get=(
            "Flickr30k images have no open download: request them at "
            "https://shannon.cs.illinois.edu/DenotationGraph/ and unpack flickr30k-images/ there, "
            f"with dataset_flickr30k.json from {_KARPATHY_URL}"
        ),
    ),
    "coco": CaptionDataset(
        name="coco",
        image_dirs=("val2014", "images/val2014"),
        caption_files=("dataset_coco.json", "caption_datasets/dataset_coco.json"),
        urls=("http://images.cocodataset.org/zips/val2014.zip", _KARPATHY_URL),
        how_to_get=(
            "unzip val2014.zip (images.cocodataset.org/zips; also train2014.zip for the train split) "
            f"and dataset_coco.json from {_KARPATHY_URL} there"
        ),
        image_root_is_parent=True,
    ),
}


def default_data_dir(name: str) -> Path:
    """Where a dataset is looked for without --data-dir: $CLIPSEARCH_DATA/<name>, else ~/.cache/clipsearch/data/<name>."""
    return data_root() / name


def locate_caption_dataset(name: str, data_dir: Path | None) -> tuple[Path, list[CaptionEntry], list[str]]:
    """Find and read a caption dataset: (image root, entries whose image exists, problems).

    Entries keep the dataset's split (train/val/test); images that are named
    in the captions but missing on disk are dropped and reported (one problem
    per missing folder, else one per missing file).
    """
    dataset = CAPTION_DATASETS.get(name)
    if dataset is None:
        raise ClipsearchError(f"unknown caption dataset {name!r}; choose one of {', '.join(CAPTION_DATASETS)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    image_dir = next((data_dir / d for d in dataset.image_dirs if (data_dir / d).is_dir()), None)
    caption_file = next((data_dir / f for f in dataset.caption_files if (data_dir / f).is_file()), None)
    if image_dir is None or caption_file is None:
        looked_for = []
        if image_dir is None:
            looked_for.append("image folder (" + " or ".join(d + "/" for d in dataset.image_dirs) + ")")
        if caption_file is None:
            looked_for.append("caption file (" + " or ".join(dataset.caption_files) + ")")
        raise ClipsearchError(
            f"{name}: found no {' and no '.join(looked_for)} in {data_dir}; "
            f"{dataset.how_to_get}, or pass --data-dir with the folder that has them"
        )
    image_root = image_dir.parent if dataset.image_root_is_parent else image_dir

    if caption_file.suffix == ".txt":
        by_file, problems = read_flickr8k_tokens(caption_file)
        splits = read_flickr8k_splits(caption_file.parent)
        for file, entry in by_file.items():
            entry.split = splits.get(file)
    else:
        entries, problems = read_karpathy(caption_file)
        by_file = {entry.file: entry for entry in entries}
    present, missing_problems = _present_entries(by_file, image_root, caption_file.name)
    return image_root, present, problems + missing_problems


def _present_entries(
    by_file: dict[str, CaptionEntry], image_root: Path, source_name: str
) -> tuple[list[CaptionEntry], list[str]]:
    """Split entries into those whose image exists under `image_root` and problems for the rest."""
    folders = Counter(posixpath.dirname(file) for file in by_file)
    known: set[str] = set()
    found_folders: set[str] = set()
    problems: list[str] = []
    for folder, count in sorted(folders.items()):
        path = image_root / folder
        if not path.is_dir():
            problems.append(f"{source_name}: {count} captioned images skipped: folder {path} not found")
            continue
        found_folders.add(folder)
        # One listing per folder instead of a stat per image (COCO has 120k).
        with os.scandir(path) as items:
            known.update(posixpath.join(folder, item.name) for item in items if item.is_file())
    checkable = {file: entry for file, entry in by_file.items() if posixpath.dirname(file) in found_folders}
    problems += check_known_files(checkable, known, source_name)
    return [entry for file, entry in by_file.items() if file in known], problems


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark from Excel
    except FileNotFoundError:
        raise ClipsearchError(f"caption file not found: {path}") from None
    except UnicodeDecodeError:
        raise ClipsearchError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise ClipsearchError(f"cannot read {path}: {error.strerror}") from None


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for the non-blank lines of a text file.

    Splits on newlines only: str.splitlines would also split inside a caption
    holding U+2028 or a form feed, and shift every later line number.
    """
    lines = _read_text(path).split("\n")
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _relative_file(raw: str, folder: Path) -> str | None:
    """`raw` as a forward-slash path relative to `folder`; None if it points outside the folder."""
    text = raw.strip().replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(raw.strip()).is_absolute():
        try:
            text = Path(text).relative_to(folder.absolute()).as_posix()
        except ValueError:
            return None
    normal = posixpath.normpath(text)
    if normal == "." or normal == ".." or normal.startswith("../"):
        return None
    return normal


def _merge_label_and_split(entry: CaptionEntry, label: object, split: object, where: str) -> str | None:
    """Store a row's label and split on its entry; or, changing nothing, a problem if they are invalid
    or contradict an earlier row for the same file."""
    split_text = str(split).strip().lower() if split is not None else ""
    if split_text and split_text not in _SPLIT_NAMES:
        return f"{where}: unknown split {split_text!r}; use train, val or test"
    given = {"label": str(label).strip() if label is not None else None, "split": _SPLIT_NAMES.get(split_text)}
    given = {name: value for name, value in given.items() if value}
    for name, value in given.items():
        earlier = getattr(entry, name)
        if earlier is not None and earlier != value:
            return f"{where}: {name} {value!r} contradicts {earlier!r} given earlier for {entry.file}"
    for name, value in given.items():
        setattr(entry, name, value)
    return None


def _accept_row(
    entries: dict[str, CaptionEntry], row: dict, captions: list, folder: Path, where: str, number: int
) -> str | None:
    """Validate one sidecar row (JSONL object or CSV row) and merge it in; a problem string if it is skipped."""
    file = row.get("file")
    if not isinstance(file, str) or not file.strip():
        return f"{where}: missing \"file\""
    relative = _relative_file(file, folder)
    if relative is None:
        return f"{where}: image path {file!r} leaves the folder of the caption file"
    if not captions:
        return f"{where}: no caption (give \"caption\": \"...\" or \"captions\": [\"...\"])"
    if not all(isinstance(caption, str) for caption in captions):
        return f"{where}: captions must be text"
    if not all(caption.strip() for caption in captions):
        return f"{where}: empty caption"
    entry = entries.get(relative) or CaptionEntry(relative, [], line=number)
    problem = _merge_label_and_split(entry, row.get("label"), row.get("split"), where)
    if problem is not None:
        return problem
    entries[relative] = entry
    entry.captions.extend(caption.strip() for caption in captions)
    return None


def _read_jsonl(path: Path) -> tuple[dict[str, CaptionEntry], list[str]]:
    entries: dict[str, CaptionEntry] = {}
    problems: list[str] = []
    for number, line in _numbered_lines(path):
        where = f"{path.name}:{number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            problems.append(f"{where}: not valid JSON ({error.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        captions = row.get("captions", [row["caption"]] if "caption" in row else [])
        if not isinstance(captions, list):
            captions = [captions]  # "captions": "one string" is forgiven
        problem = _accept_row(entries, row, captions, path.parent, where, number)
        if problem is not None:
            problems.append(problem)
    return entries, problems


def _read_csv(path: Path) -> tuple[dict[str, CaptionEntry], list[str]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = [name.strip().lower() for name in reader.fieldnames or []]
    if "file" not in columns or "caption" not in columns:
        raise ClipsearchError(
            f"{path}: the first line must be a header naming the columns file,caption[,label][,split]; "
            f"got {','.join(columns) or 'nothing'}"
        )
    reader.fieldnames = columns
    entries: dict[str, CaptionEntry] = {}
    problems: list[str] = []
    for row in reader:
        number = reader.line_num
        where = f"{path.name}:{number}"
        if None in row.values():
            problems.append(f"{where}: expected {len(columns)} columns ({','.join(columns)}), got fewer")
            continue
        if None in row:  # DictReader files surplus fields under the key None
            problems.append(f"{where}: expected {len(columns)} columns ({','.join(columns)}), got more")
            continue
        problem = _accept_row(entries, row, [row["caption"]], path.parent, where, number)
        if problem is not None:
            problems.append(problem)
    return entries, problems
