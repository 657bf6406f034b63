"""Zero-shot and the three probes side by side, on the same rows of a split and the same classes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...errors import ClipsearchError
from ...index.index import Index
from ..metrics import classification_report
from ..prompts import resolve_templates
from ..zeroshot import class_prototypes, zero_shot_report
from .features import Hyperparameters, ProgressFn, probe_classes, split_features, templates_for
from .probe import KINDS, Probe, default_probe_path
from .train import train_probe

ZERO_SHOT = "zero-shot"


def _reusable(
    path: Path, index: Index, class_names: list[str], train_split: str, val_split: str, templates: str
) -> Probe | None:
    """The saved probe at `path` when it was trained on this index's model, classes and splits (all images),
    and for a joint head, from the same prompt templates."""
    if not path.is_file():
        return None
    try:
        probe = Probe.load(path)
    except ClipsearchError:
        return None
    meta = probe.meta
    same = (
        meta.get("model_id") == index.spec.identity()
        and probe.class_names == class_names
        and meta.get("shots") is None
        and meta.get("train_split") == train_split
        and meta.get("val_split") == val_split
        and (probe.kind != "joint" or meta.get("templates") == templates)
    )
    return probe if same else None


def compare_methods(
    index: Index,
    *,
    labels: str | None = None,
    templates: str | None = None,
    split: str = "test",
    train_split: str = "train",
    val_split: str = "val",
    seed: int = 0,
    retrain: bool = False,
    hyper: Hyperparameters | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Zero-shot, linear, mlp and joint on the same rows of a split and the same classes.

    The classes are those the probes can learn (the label set's classes with
    training images), so zero-shot is scored over exactly these classes too.
    Probes saved in the index's probes folder for the same model, classes and
    splits are reused; the others are trained (all training images, `seed`) and saved there.
    """
    started = time.perf_counter()
    class_names, without_images = probe_classes(index, labels, train_split)
    template_spec = templates_for(index, labels, templates)
    features = split_features(index, split, class_names)
    prototypes = class_prototypes(index.encoder, resolve_templates(template_spec, class_names))
    methods = {ZERO_SHOT: zero_shot_report(features.vectors, features.labels, class_names, prototypes)}
    probes, trained = {}, []
    for kind in KINDS:
        path = default_probe_path(index, kind)
        probe = None if retrain else _reusable(path, index, class_names, train_split, val_split, template_spec)
        if probe is None:
            options = {"train_split": train_split, "val_split": val_split, "seed": seed, "hyper": hyper}
            probe = train_probe(index, kind, labels=labels, templates=template_spec, progress=progress, **options)
            probe.save(path)
            trained.append(kind)
        methods[kind] = classification_report(probe.scores(features.vectors), features.labels, class_names)
        probes[kind] = str(path)
    return {
        "index": index.name,
        "model": index.spec.identity(),
        "split": split,
        "labels": labels,
        "templates": template_spec,
        "class_names": class_names,
        "classes_without_images": without_images,
        "excluded": features.excluded,
        "n": len(features),
        "methods": methods,
        "probes": probes,
        "trained": trained,
        "seconds": round(time.perf_counter() - started, 3),
    }
