"""Evaluation over an index: zero-shot accuracy of a split (optionally under an image
corruption), and the output files every classifier evaluation shares (zero-shot, probes).

Zero-shot evaluation follows the standard protocol: the label set's class names,
each template set's prototypes (see zeroshot.py), top-1 / top-5 / mean per-class
recall / per-class accuracy / confusion matrix from `metrics.classification_report`.
Stored vectors are used as they are; with a corruption the split's images are
decoded, corrupted and encoded again in memory, and nothing is written to the index.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .corruptions import Corruption
from ..model.encoder import Encoder
from ..errors import ClipsearchError
from .metrics import classification_report
from .prompts import LABEL_SETS, default_templates, resolve_labels, resolve_templates
from ..present.plots import plot_confusion
from ..files import write_json
from ..sources.images import ImageDecodeError, open_uri
from ..index.store import vectors_of
from .zeroshot import PrototypeIndex, class_prototypes, holdout_accuracy, label_indices

if TYPE_CHECKING:
    from ..index.index import Index

RESULTS_FILE = "results.json"
CONFUSION_FILE = "confusion.png"
SHAPES_META = "meta.json"
# What a zero-shot run was: the keys every results.json of the run carries.
RUN_SETTINGS = ("index", "model", "labels", "split", "corruption", "excluded")


def write_classification_outputs(report: dict[str, Any], class_names: Sequence[str], out_dir: Path, title: str) -> dict[str, Path]:
    """`results.json` and `confusion.png` for a metrics.classification_report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "results": write_json(out_dir / RESULTS_FILE, report),
        "confusion": plot_confusion(np.asarray(report["confusion"]), class_names, out_dir / CONFUSION_FILE, title=title),
    }


# -- what to evaluate ------------------------------------------------------------------


def shapes_meta(folder: Path) -> dict[str, Any] | None:
    """The generated shapes dataset's meta.json in `folder`, or None when it is not one."""
    try:
        meta = json.loads((folder / SHAPES_META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("name") == "shapes" else None


def _label_set_of_source(source: str) -> str | None:
    if source in LABEL_SETS:  # a named dataset such as cifar10
        return source
    if source.startswith("/") and shapes_meta(Path(source)) is not None:
        return "shapes"
    return None


def inferred_labels(index: "Index") -> str:
    """The label set of the dataset the index holds (cifar10, cifar100, shapes)."""
    sources = index.manifest.get("sources", [])
    found = {_label_set_of_source(source) for source in sources}
    if len(found) == 1 and None not in found:
        return found.pop()
    raise ClipsearchError(
        f"cannot tell the classes of index '{index.name}' (sources: {', '.join(sources) or 'none'}): "
        f"pass --labels {'|'.join(LABEL_SETS)}, a file with one label per line, or a comma list"
    )


def shapes_holdout(index: "Index") -> list[str] | None:
    """The held-out classes of a shapes dataset the index holds, if any."""
    for source in index.manifest.get("sources", []):
        meta = shapes_meta(Path(source)) if source.startswith("/") else None
        if meta and meta.get("holdout"):
            return list(meta["holdout"])
    return None


# -- corrupted images, encoded again ---------------------------------------------------------


class _CorruptedImages(Dataset):
    """Decode, corrupt and preprocess in DataLoader workers."""

    def __init__(self, ids: Sequence[str], uris: Sequence[str], corruption: Corruption, preprocess: Callable):
        self.ids, self.uris, self.corruption, self.preprocess = ids, uris, corruption, preprocess

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            image = open_uri(self.uris[i])
        except (ImageDecodeError, ClipsearchError) as err:
            return f"cannot read {self.uris[i]} ({err}): re-index to bring the index up to date"
        return self.preprocess(self.corruption.apply(image, self.ids[i]))


def _collate(batch: list) -> list:
    return batch


def corrupted_vectors(
    encoder: Encoder, ids: Sequence[str], uris: Sequence[str], corruption: Corruption, batch_size: int = 64,
    workers: int = 0, on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Unit vectors of the images at `uris` with `corruption` applied (noise seeded by id),
    decoded in `workers` processes (0: in this one)."""
    loader = DataLoader(
        _CorruptedImages(ids, uris, corruption, encoder.preprocess), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate, prefetch_factor=4 if workers else None,
    )
    vectors = []
    for batch in loader:
        problem = next((item for item in batch if isinstance(item, str)), None)
        if problem is not None:
            raise ClipsearchError(problem)
        vectors.append(encoder.encode_image_tensors(torch.stack(batch)))
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
        raise ClipsearchError("--templates needs at least one template set, e.g. cifar or cifar,imagenet,simple")
    return specs


def evaluate_zero_shot(
    index: "Index", labels: str | None = None, templates: Sequence[str] | None = None, split: str = "test",
    corruption: Corruption | None = None, batch_size: int = 64, workers: int = 0,
    on_batch: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Zero-shot accuracy of a split for one or several template sets: (result, class names).

    The result holds the first template set's classification report at the top
    level (top1, top5, mean_per_class_recall, n, per_class, confusion) plus the
    run's settings; with several sets, `template_sets` maps each name to its report.
    Rows whose label is not in the label set are left out and counted in `excluded`.
    """
    started = time.perf_counter()
    labels = labels or inferred_labels(index)
    class_names = resolve_labels(labels)
    specs = list(templates or [default_templates(labels)])
    prompts = {name: resolve_templates(spec, class_names) for name, spec in zip(_template_names(specs), specs)}

    rows = index.split_rows(split, ["id", "uri", "label_name", "vector"])
    truth = label_indices(rows.column("label_name").to_pylist(), class_names)
    keep = truth >= 0
    if not keep.any():
        examples = sorted({n for n in rows.column("label_name").to_pylist() if n})[:5]
        raise ClipsearchError(
            f"none of the {rows.num_rows} images of split {split!r} has a label in '{labels}' "
            f"(stored labels: {', '.join(examples) or 'none'}); pass the matching --labels"
        )
    kept = rows.filter(keep)
    truth = truth[keep]
    if corruption is None:
        vectors = vectors_of(kept)
    else:
        if on_start:
            on_start(kept.num_rows)
        vectors = corrupted_vectors(index.encoder, kept.column("id").to_pylist(), kept.column("uri").to_pylist(),
                                    corruption, batch_size, workers, on_batch)
    holdout = shapes_holdout(index) if labels == "shapes" else None

    reports = {}
    for name, sentences in prompts.items():
        cosines = PrototypeIndex(class_prototypes(index.encoder, sentences)).cosines(vectors)
        report = {"templates": name, "n_prompts": sum(len(s) for s in sentences), **classification_report(cosines, truth, class_names)}
        if holdout:
            report.update(holdout_accuracy(cosines, truth, class_names, holdout))
        reports[name] = report
    result = {
        "index": index.name, "model": index.spec.identity(), "labels": labels, "split": split,
        "corruption": str(corruption) if corruption else None, "excluded": int((~keep).sum()),
        **next(iter(reports.values())),
    }
    if len(reports) > 1:
        result["template_sets"] = reports
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result, class_names


def default_out_dir(index: "Index", split: str, corruption: Corruption | None = None) -> Path:
    suffix = f"-{corruption.name}-{corruption.severity}" if corruption else ""
    return index.store.path / "eval" / f"zeroshot-{split}{suffix}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_zero_shot_outputs(result: dict[str, Any], class_names: Sequence[str], out_dir: Path) -> dict[str, Path]:
    """results.json (the whole result) and confusion.png (first template set) in `out_dir`;
    with several template sets, also one folder per set with its own results.json and confusion.png."""
    setting = f"{result['index']} · {result['labels']} · {result['split']} · {result['corruption'] or 'clean'}"
    files = write_classification_outputs(result, class_names, out_dir, f"zero-shot {setting} · {result['templates']}")
    settings = {key: result[key] for key in RUN_SETTINGS}
    for name, report in result.get("template_sets", {}).items():
        written = write_classification_outputs({**settings, **report}, class_names, out_dir / _slug(name), f"zero-shot {setting} · {name}")
        files.update({f"{kind}:{name}": path for kind, path in written.items()})
    return files
