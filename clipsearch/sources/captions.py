"""The one reader of caption files: JSONL, CSV, Flickr8k token files, Karpathy split JSON.

Pure parsing: no model, no store. `read_caption_file` dispatches on the file
kind, so indexing a folder, indexing a named dataset and training all read a
caption file the same way (a Flickr8k token file always with the split lists
beside it). A malformed line is skipped and reported as a problem string
"<file name>:<line>: <what is wrong>"; the rest of the file is kept. Only a
file that cannot be read at all (missing, not text, not JSON, a CSV without
the needed columns) raises `ClipsearchError`.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import ClipsearchError

SIDECAR_NAMES: tuple[str, ...] = ("captions.jsonl", "captions.csv", "Flickr8k.token.txt")
FLICKR8K_SPLIT_FILES: dict[str, str] = {
    "Flickr_8k.trainImages.txt": "train",
    "Flickr_8k.devImages.txt": "val",
    "Flickr_8k.testImages.txt": "test",
}
# Names datasets use for their splits, mapped onto ours. Karpathy's "restval"
# is the part of COCO val2014 that is trained on.
_SPLIT_NAMES: dict[str, str] = {
    "train": "train",
    "restval": "train",
    "val": "val",
    "dev": "val",
    "valid": "val",
    "validation": "val",
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


Entries = dict[str, CaptionEntry]  # by `file`, in the order the caption file first names them


def find_sidecar(folder: Path) -> Path | None:
    """The caption file directly in `folder` (captions.jsonl, captions.csv or Flickr8k.token.txt), if any."""
    for name in SIDECAR_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_caption_file(path: Path) -> tuple[Entries, list[str]]:
    """Read any caption file into (entries by file, problems); files are relative to the file's folder.

    - `.jsonl`: one object per line, {"file", "captions": [...] or "caption": "...", "label"?, "split"?};
    - `.csv`: a header with `file` and `caption` (optionally `label`, `split`);
      several rows (or JSONL lines) for one file add up their captions;
    - `.txt`: a Flickr8k token file (`image.jpg#N<TAB>caption`), with the splits of the
      Flickr_8k.{train,dev,test}Images.txt lists found beside it;
    - `.json`: a Karpathy split file (dataset_flickr8k/flickr30k/coco.json), `restval` read as train.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read_flickr8k(path)
    if suffix == ".jsonl":
        return _read_by_line(path, _jsonl_line)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _read_karpathy(path)
    raise ClipsearchError(
        f"unsupported caption file {path}: use .jsonl, .csv, a Flickr8k .token.txt or a Karpathy .json"
    )


def check_known_files(entries: Entries, known: set[str], source_name: str) -> list[str]:
    """Problems for entries whose file is not in `known` (the image files that exist)."""
    problems = []
    for file, entry in entries.items():
        if file not in known:
            where = source_name if entry.line is None else f"{source_name}:{entry.line}"
            problems.append(f"{where}: image not found: {file}")
    return problems


def _read_flickr8k(path: Path) -> tuple[Entries, list[str]]:
    """A Flickr8k token file (or the lemma one), each image with its split from the lists beside it."""
    entries, problems = _read_by_line(path, _token_line)
    splits = _read_flickr8k_splits(path.parent)
    for file, entry in entries.items():
        entry.split = splits.get(file)
    return entries, problems


def _token_line(entries: Entries, line: str, number: int, where: str, folder: Path) -> str | None:
    """One `image.jpg#N<TAB>caption` line merged into `entries`; a problem string if it is skipped."""
    key, tab, caption = line.partition("\t")
    file, hash_sign, index = key.strip().rpartition("#")
    if not tab:
        return f"{where}: no tab between 'image#N' and the caption"
    if not hash_sign or not file:
        return f"{where}: expected 'image#N' before the tab, got {key.strip()!r}"
    if not index.isdigit():
        return f"{where}: caption number {index!r} is not a whole number"
    return _accept_row(entries, {"file": file}, [caption], folder, where, number)


def _read_flickr8k_splits(text_dir: Path) -> dict[str, str]:
    """Map image file -> train/val/test from the Flickr_8k.{train,dev,test}Images.txt lists found in `text_dir`."""
    splits: dict[str, str] = {}
    for name, split in FLICKR8K_SPLIT_FILES.items():
        path = text_dir / name
        if path.is_file():
            for _, line in _numbered_lines(path):
                splits[line.strip()] = split
    return splits


def _read_karpathy(path: Path) -> tuple[Entries, list[str]]:
    """Problems name the image by its index in the "images" list (JSON has no useful line numbers)."""
    try:
        data = json.loads(_read_text(path))
    except ValueError as error:
        raise ClipsearchError(f"{path} is not valid JSON ({error}); download it again") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ClipsearchError(f'{path} has no "images" list; is it a Karpathy split file (dataset_*.json)?')
    entries: Entries = {}
    problems: list[str] = []
    for index, image in enumerate(images):
        where = f"{path.name}: images[{index}]"
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str) or not image["filename"]:
            problems.append(f"{where}: no filename")
            continue
        raw_file = posixpath.join(image.get("filepath") or "", image["filename"])
        file = _relative_file(raw_file, path.parent)
        if file is None:
            problems.append(f"{where}: image path {raw_file!r} leaves the dataset folder; refused")
            continue
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
        entries[file] = CaptionEntry(file, captions, split=_SPLIT_NAMES.get(split))
    return entries, problems


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


def _accept_row(entries: Entries, row: dict, captions: list, folder: Path, where: str, number: int) -> str | None:
    """Validate one row (a JSONL object, a CSV row, a token line's file) and merge it in; a problem string
    if it is skipped."""
    file = row.get("file")
    if not isinstance(file, str) or not file.strip():
        return f'{where}: missing "file"'
    relative = _relative_file(file, folder)
    if relative is None:
        return f"{where}: image path {file!r} leaves the folder of the caption file"
    if not captions:
        return f'{where}: no caption (give "caption": "..." or "captions": ["..."])'
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


def _read_by_line(path: Path, parse_line: Callable[..., str | None]) -> tuple[Entries, list[str]]:
    """Entries of a line-based caption file: `parse_line(entries, line, number, where, folder)` merges
    one non-blank line in and returns a problem string when it skips the line."""
    entries: Entries = {}
    problems: list[str] = []
    for number, line in _numbered_lines(path):
        problem = parse_line(entries, line, number, f"{path.name}:{number}", path.parent)
        if problem is not None:
            problems.append(problem)
    return entries, problems


def _jsonl_line(entries: Entries, line: str, number: int, where: str, folder: Path) -> str | None:
    try:
        row = json.loads(line)
    except ValueError as error:
        return f"{where}: not valid JSON ({error.msg})"
    if not isinstance(row, dict):
        return f"{where}: expected a JSON object"
    captions = row.get("captions", [row["caption"]] if "caption" in row else [])
    if not isinstance(captions, list):
        captions = [captions]  # "captions": "one string" is forgiven
    return _accept_row(entries, row, captions, folder, where, number)


def _read_csv(path: Path) -> tuple[Entries, list[str]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = [name.strip().lower() for name in reader.fieldnames or []]
    if "file" not in columns or "caption" not in columns:
        raise ClipsearchError(
            f"{path}: the first line must be a header naming the columns file,caption[,label][,split]; "
            f"got {','.join(columns) or 'nothing'}"
        )
    reader.fieldnames = columns
    entries: Entries = {}
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
