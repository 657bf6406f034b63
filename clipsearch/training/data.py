"""What the trainer learns from: (image, captions) examples split into train and val.

Three kinds of DATA, one result (`TrainingData`):

- a folder with a captions file (captions.jsonl / captions.csv / Flickr8k.token.txt),
  e.g. the generated shapes dataset;
- a named caption dataset (flickr8k, flickr30k, coco) found in its data folder;
- CIFAR-10/100, whose captions are the class prompts ("a photo of a {class}.").

Splits come from the data (train for training, val for validation). A folder
without any split gets a deterministic 90/10 split by a hash of each file name,
so it does not depend on listing order and survives added files.

When the images have labels, the trainer also measures zero-shot accuracy; for
that `TrainingData` carries the class names, each class's prompt sentences and
the classes never seen in training ("held-out", e.g. the shapes holdout pairs).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipsearchError
from ..tasks.prompts import default_templates, resolve_labels, resolve_templates
from ..sources.captions import (
    CAPTION_DATASETS,
    CaptionEntry,
    find_sidecar,
    locate_caption_dataset,
    read_flickr8k_splits,
    read_sidecar,
)
from ..sources.folder import scan_folder

CIFAR_NAMES = ("cifar10", "cifar100")
VAL_FRACTION = 0.1  # of a folder that has no splits
SHAPES_META = "meta.json"
GENERIC_TEMPLATES = "simple"  # prompts for the labels of a folder that is not a known label set


@dataclass(frozen=True)
class Example:
    """One training or validation image: where its pixels are, its captions, its label (if any)."""

    uri: str
    captions: tuple[str, ...]
    label: str | None = None


@dataclass
class TrainingData:
    name: str  # what the user passed as DATA, for the run config
    train: list[Example]
    val: list[Example]
    class_names: list[str] = field(default_factory=list)  # zero-shot classes; empty: no zero-shot
    class_prompts: list[list[str]] = field(default_factory=list)  # sentences per class
    heldout: frozenset[str] = frozenset()  # classes with no training image
    captions_are_prompts: bool = False  # CIFAR: retrieval over identical prompts is meaningless
    problems: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """For the run's config.json."""
        return {
            "source": self.name,
            "train_images": len(self.train),
            "val_images": len(self.val),
            "train_captions": sum(len(e.captions) for e in self.train),
            "classes": len(self.class_names),
            "heldout": sorted(self.heldout),
            "captions_are_prompts": self.captions_are_prompts,
        }


def load_training_data(data: str, data_dir: Path | None = None) -> TrainingData:
    """Resolve DATA (a captions folder, flickr8k|flickr30k|coco, cifar10|cifar100) into examples."""
    folder = Path(data).expanduser()
    if folder.is_dir():
        result = _folder_data(folder)
    elif data in CIFAR_NAMES:
        result = _cifar_data(data, data_dir)
    elif data in CAPTION_DATASETS:
        image_root, entries, problems = locate_caption_dataset(data, data_dir)
        result = _from_entries(data, {e.file: str(image_root / e.file) for e in entries}, entries, problems)
    else:
        choices = ", ".join((*CAPTION_DATASETS, *CIFAR_NAMES))
        raise ClipsearchError(f"training data not found: {data} is neither a folder nor a dataset ({choices})")
    if not result.train:
        raise ClipsearchError(f"{data}: no training images with captions (train split is empty)")
    if not result.val:
        raise ClipsearchError(f"{data}: no validation images (val split is empty); add images or a val split")
    return result


def _folder_data(folder: Path) -> TrainingData:
    sidecar = find_sidecar(folder)
    if sidecar is None:
        raise ClipsearchError(
            f"{folder} has no captions file: put captions.jsonl, captions.csv or Flickr8k.token.txt in it "
            "(one line per image: file and captions)"
        )
    entries_by_file, problems = read_sidecar(sidecar)
    if sidecar.name.lower().endswith(".token.txt"):
        for file, split in read_flickr8k_splits(sidecar.parent).items():
            if file in entries_by_file:
                entries_by_file[file].split = split
    # Match entries to image files as folder indexing does: relative path first, then bare name.
    images = scan_folder(folder)
    by_relative = {item.id: item.uri for item in images}
    by_name: dict[str, str] = {}
    for item in images:
        by_name.setdefault(Path(item.id).name, item.uri)
    uris = {}
    for file in entries_by_file:
        uri = by_relative.get(file) or by_name.get(Path(file).name)
        if uri is None:
            problems.append(f"{sidecar.name}: image not found: {file}")
        else:
            uris[file] = uri
    entries = [entry for entry in entries_by_file.values() if entry.file in uris]
    result = _from_entries(str(folder), uris, entries, problems)
    meta = _shapes_meta(folder)
    if meta is not None:
        # The built-in label set and prompts, so numbers match `eval zeroshot --labels shapes`.
        result.class_names = resolve_labels("shapes")
        result.class_prompts = resolve_templates(default_templates("shapes"), result.class_names)
        result.heldout = frozenset(meta.get("holdout", []))
    return result


def _shapes_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / SHAPES_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("name") == "shapes" else None


def _from_entries(name: str, uris: dict[str, str], entries: list[CaptionEntry], problems: list[str]) -> TrainingData:
    """Examples split by the entries' own splits, or 90/10 by file-name hash when none has one."""
    if any(entry.split for entry in entries):
        train = [e for e in entries if e.split in ("train", None)]
        val = [e for e in entries if e.split == "val"]
    else:
        by_hash = sorted(entries, key=lambda e: hashlib.blake2b(e.file.encode(), digest_size=8).digest())
        n_val = math.ceil(VAL_FRACTION * len(entries)) if len(entries) > 1 else 0
        val, train = by_hash[:n_val], sorted(by_hash[n_val:], key=lambda e: e.file)
        val.sort(key=lambda e: e.file)

    def examples(chosen: list[CaptionEntry]) -> list[Example]:
        return [Example(uris[e.file], tuple(e.captions), e.label) for e in chosen]

    result = TrainingData(name, examples(train), examples(val), problems=problems)
    labels_seen = {e.label for e in entries if e.label}
    if labels_seen:
        result.class_names = sorted(labels_seen)
        result.class_prompts = resolve_templates(GENERIC_TEMPLATES, result.class_names)
        result.heldout = frozenset(labels_seen - {e.label for e in result.train})
    return result


def _cifar_data(name: str, data_dir: Path | None) -> TrainingData:
    from ..sources.cifar import cifar_items, load_cifar

    dataset = load_cifar(name, data_dir)
    classes = dataset.classnames
    prompts = resolve_templates(default_templates(name), classes)

    def examples(split: str) -> list[Example]:
        return [Example(item.uri, tuple(prompts[item.label]), classes[item.label]) for item in cifar_items(dataset, split)]

    return TrainingData(
        name, examples("train"), examples("val"), class_names=classes, class_prompts=prompts, captions_are_prompts=True
    )
