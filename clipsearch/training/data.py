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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipsearchError
from ..sources.annotations import matched_entries
from ..sources.captions import CaptionEntry, check_known_files, find_sidecar, read_caption_file
from ..sources.cifar import cifar_items, load_cifar
from ..sources.datasets import CAPTION_DATASETS, locate_caption_dataset
from ..sources.folder import scan_folder
from ..sources.shapes import shapes_meta
from ..tasks.prompts import default_templates, resolve_labels, resolve_templates

CIFAR_NAMES = ("cifar10", "cifar100")
VAL_FRACTION = 0.1  # of a folder that has no splits
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
        result = _from_entries(data, [(str(image_root / e.file), e) for e in entries], problems)
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
    # The images and captions folder indexing would store: the same reader, the same matching.
    entries, problems = read_caption_file(sidecar)
    matched = matched_entries(sidecar.parent, scan_folder(folder), entries)
    problems += check_known_files(entries, {entry.file for _, entry in matched}, sidecar.name)
    order = {file: position for position, file in enumerate(entries)}
    matched.sort(key=lambda pair: order[pair[1].file])  # caption-file order, as the other kinds of DATA
    result = _from_entries(str(folder), [(item.uri, entry) for item, entry in matched], problems)
    meta = shapes_meta(folder)
    if meta is not None:
        # The built-in label set and prompts, so numbers match `eval zeroshot --labels shapes`.
        result.class_names = resolve_labels("shapes")
        result.class_prompts = resolve_templates(default_templates("shapes"), result.class_names)
        result.heldout = frozenset(meta.get("holdout", []))
    return result


def _from_entries(name: str, images: list[tuple[str, CaptionEntry]], problems: list[str]) -> TrainingData:
    """Examples of (uri, entry) pairs split by the entries' own splits, or 90/10 by a hash of the
    entry's file name when none has one."""
    entries = [entry for _, entry in images]
    if any(entry.split for entry in entries):
        train = [(uri, e) for uri, e in images if e.split in ("train", None)]
        val = [(uri, e) for uri, e in images if e.split == "val"]
    else:
        by_hash = sorted(images, key=lambda pair: hashlib.blake2b(pair[1].file.encode(), digest_size=8).digest())
        n_val = math.ceil(VAL_FRACTION * len(images)) if len(images) > 1 else 0
        val, train = by_hash[:n_val], sorted(by_hash[n_val:], key=lambda pair: pair[1].file)
        val.sort(key=lambda pair: pair[1].file)

    def examples(chosen: list[tuple[str, CaptionEntry]]) -> list[Example]:
        return [Example(uri, tuple(e.captions), e.label) for uri, e in chosen]

    result = TrainingData(name, examples(train), examples(val), problems=problems)
    labels_seen = {e.label for e in entries if e.label}
    if labels_seen:
        result.class_names = sorted(labels_seen)
        result.class_prompts = resolve_templates(GENERIC_TEMPLATES, result.class_names)
        result.heldout = frozenset(labels_seen - {e.label for e in result.train})
    return result


def _cifar_data(name: str, data_dir: Path | None) -> TrainingData:
    dataset = load_cifar(name, data_dir)
    classes = dataset.classnames
    prompts = resolve_templates(default_templates(name), classes)

    def examples(split: str) -> list[Example]:
        return [
            Example(item.uri, tuple(prompts[item.label]), classes[item.label]) for item in cifar_items(dataset, split)
        ]

    return TrainingData(
        name, examples("train"), examples("val"), class_names=classes, class_prompts=prompts, captions_are_prompts=True
    )
