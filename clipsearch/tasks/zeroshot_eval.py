"""Zero-shot evaluation over an index: accuracy of a split, optionally under an image corruption.

Zero-shot evaluation follows the standard protocol: the label set's class names,
each template set's prototypes (see zeroshot.py), top-1 / top-5 / mean per-class
recall / per-class accuracy / confusion matrix from `zeroshot.zero_shot_report`.
Stored vectors are used as they are; with a corruption the split's images are
decoded, corrupted and encoded again in memory, and nothing is written to the index.
The result is returned, not written: `outputs.write_zero_shot` writes its files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ClipsearchError
from ..index.index import Index
from ..index.schema import vectors_of
from ..model.interface import EncoderLike
from ..sources.images import ImageDecodeError, open_uri
from ..sources.items import class_display_name
from ..sources.shapes import shapes_meta
from .corruptions import Corruption
from .prompts import LABEL_SETS, default_templates, resolve_labels, resolve_templates
from .zeroshot import class_prototypes, label_indices, zero_shot_report

# -- what to evaluate ------------------------------------------------------------------


def _label_set_of_source(source: str) -> str | None:
    if source in LABEL_SETS:  # a named dataset such as cifar10
        return source
    if source.startswith("/") and shapes_meta(Path(source)) is not None:
        return "shapes"
    return None


def inferred_labels(index: Index) -> str:
    """The label set of the dataset the index holds (cifar10, cifar100, shapes)."""
    sources = index.manifest.get("sources", [])
    found = {_label_set_of_source(source) for source in sources}
    if len(found) == 1 and None not in found:
        return found.pop()
    raise ClipsearchError(
        f"cannot tell the classes of index '{index.name}' (sources: {', '.join(sources) or 'none'}): "
        f"name its labels: {'|'.join(LABEL_SETS)}, a file with one label per line, or a comma list"
    )


def stored_class_names(index: Index, split: str) -> list[str]:
    """The label names stored in a split, as classes (underscores read as spaces), sorted; [] when unlabelled."""
    stored = index.split_rows(split, ["label_name"]).column("label_name").to_pylist()
    return sorted({class_display_name(name) for name in stored if name}, key=str.lower)


def default_labels(index: Index, split: str) -> tuple[str, list[str]]:
    """(label spec, class names) when none is given: the label set of the indexed dataset when it names every
    stored label (cifar10, cifar100, shapes: their prompt names and templates), else the index's own stored
    label names (a CIFAR-format folder with other classes, a labelled photo folder)."""
    stored = stored_class_names(index, split)
    try:
        label_set = inferred_labels(index)
    except ClipsearchError:
        if not stored:
            raise
        return ",".join(stored), stored
    names = resolve_labels(label_set)
    if not stored or (label_indices(stored, names) >= 0).all():
        return label_set, names
    return ",".join(stored), stored


def _template_family(index: Index) -> str:
    """The label set whose templates fit the indexed dataset (cifar for a CIFAR folder with other names)."""
    try:
        return inferred_labels(index)
    except ClipsearchError:
        return "simple"


def shapes_holdout(index: Index) -> list[str] | None:
    """The held-out classes of a shapes dataset the index holds, if any."""
    for source in index.manifest.get("sources", []):
        meta = shapes_meta(Path(source)) if source.startswith("/") else None
        if meta and meta.get("holdout"):
            return list(meta["holdout"])
    return None


# -- corrupted images, encoded again ---------------------------------------------------------


class _CorruptedImages:
    """Decode, corrupt and preprocess in DataLoader workers (a map-style dataset: len and getitem)."""

    def __init__(self, ids: Sequence[str], uris: Sequence[str], corruption: Corruption, preprocess: Callable):
        self.ids, self.uris, self.corruption, self.preprocess = ids, uris, corruption, preprocess

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Any:
        try:
            image = open_uri(self.uris[i])
        except (ImageDecodeError, ClipsearchError) as err:
            return f"cannot read {self.uris[i]} ({err}): re-index to bring the index up to date"
        return self.preprocess(self.corruption.apply(image, self.ids[i]))


def _collate(batch: list) -> list:
    return batch


def corrupted_vectors(
    encoder: EncoderLike,
    ids: Sequence[str],
    uris: Sequence[str],
    corruption: Corruption,
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Unit vectors of the images at `uris` with `corruption` applied (noise seeded by id),
    decoded in `workers` processes (0: in this one)."""
    import torch  # only when re-encoding: evaluating stored vectors needs no torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _CorruptedImages(ids, uris, corruption, encoder.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
    )
    vectors = []
    for batch in loader:
        problem = next((item for item in batch if isinstance(item, str)), None)
        if problem is not None:
            raise ClipsearchError(problem)
        stack = np.stack if isinstance(batch[0], np.ndarray) else torch.stack  # exported backends: numpy pixels
        vectors.append(encoder.encode_image_tensors(stack(batch)))
        if on_batch:
            on_batch(len(batch))
    return np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)


# -- zero-shot evaluation --------------------------------------------------------------


def _template_names(specs: Sequence[str]) -> list[str]:
    """A short unique name per template spec: the set name, or a file's stem."""
    names: list[str] = []
    for spec in specs:
        base = Path(spec).stem if ("/" in spec or "." in spec) else spec
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def parse_template_specs(text: str | None) -> list[str] | None:
    """`cifar,imagenet` -> ["cifar", "imagenet"]; None stays None (the label set's default)."""
    if text is None:
        return None
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise ClipsearchError("templates need at least one template set, e.g. cifar or cifar,imagenet,simple")
    return specs


def _labelled_rows(index: Index, split: str, labels: str, class_names: Sequence[str]) -> tuple[pa.Table, np.ndarray]:
    """(rows of the split whose label is a class, their class indices); refused when there are none."""
    rows = index.split_rows(split, ["id", "uri", "label_name", "vector"])
    truth = label_indices(rows.column("label_name").to_pylist(), class_names)
    keep = truth >= 0
    if not keep.any():
        examples = sorted({n for n in rows.column("label_name").to_pylist() if n})[:5]
        raise ClipsearchError(
            f"none of the {rows.num_rows} images of split {split!r} has a label in '{labels}' "
            f"(stored labels: {', '.join(examples) or 'none'}); name the matching labels"
        )
    return rows, truth


def _classes_and_prompts(
    index: Index, labels: str | None, templates: Sequence[str] | None, split: str
) -> tuple[str, list[str], dict[str, list[list[str]]]]:
    """(label spec, class names, each template set's prompts by its short name), defaults filled in."""
    if labels:
        class_names, family = resolve_labels(labels), labels
    else:
        (labels, class_names), family = default_labels(index, split), _template_family(index)
    specs = list(templates or [default_templates(family)])
    return (
        labels,
        class_names,
        {name: resolve_templates(s, class_names) for name, s in zip(_template_names(specs), specs)},
    )


def evaluate_zero_shot(
    index: Index,
    labels: str | None = None,
    templates: Sequence[str] | None = None,
    split: str = "test",
    corruption: Corruption | None = None,
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Zero-shot accuracy of a split for one or several template sets: (result, class names).

    The result holds the first template set's classification report at the top
    level (top1, top5, mean_per_class_recall, n, per_class, confusion) plus the
    run's settings; with several sets, `template_sets` maps each name to its report.
    Rows whose label is not in the label set are left out and counted in `excluded`.
    With a corruption, `on_start(n)` gets the number of images to re-encode and
    `on_batch(n)` each batch encoded. Nothing is written.
    """
    started = time.perf_counter()
    labels, class_names, prompts = _classes_and_prompts(index, labels, templates, split)
    rows, truth = _labelled_rows(index, split, labels, class_names)
    kept = rows.filter(pa.array(truth >= 0))
    if corruption is None:
        vectors = vectors_of(kept)
    else:
        if on_start:
            on_start(kept.num_rows)
        ids, uris = kept.column("id").to_pylist(), kept.column("uri").to_pylist()
        vectors = corrupted_vectors(index.encoder, ids, uris, corruption, batch_size, workers, on_batch)
    holdout = shapes_holdout(index) if labels == "shapes" else None
    reports = {
        name: {
            "templates": name,
            "n_prompts": sum(len(s) for s in sentences),
            **zero_shot_report(
                vectors, truth[truth >= 0], class_names, class_prototypes(index.encoder, sentences), holdout
            ),
        }
        for name, sentences in prompts.items()
    }
    result = {
        "index": index.name,
        "model": index.spec.identity(),
        "labels": labels,
        "split": split,
        "corruption": str(corruption) if corruption else None,
        "excluded": rows.num_rows - kept.num_rows,
        **next(iter(reports.values())),
    }
    if len(reports) > 1:
        result["template_sets"] = reports
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result, class_names
