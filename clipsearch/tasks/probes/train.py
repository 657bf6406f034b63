"""Training a probe of any kind on an index's stored vectors: classes, features, seeded fit, sidecar."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...errors import ClipsearchError
from ...index.index import Index
from ...index.store import now_iso
from ..prompts import resolve_templates
from ..zeroshot import class_prototypes
from .features import (
    Features,
    Hyperparameters,
    ProgressFn,
    few_shot,
    probe_classes,
    split_features,
    templates_for,
    threads_for,
    validation_summary,
)
from .heads import train_joint, train_mlp
from .linear import train_linear
from .probe import FORMAT, KINDS, Probe


def _fit(
    index: Index,
    kind: str,
    train: Features,
    val: Features,
    class_names: list[str],
    template_spec: str | None,
    hyper: Hyperparameters,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(weights, training record) of one kind, seeded without touching the caller's RNG."""
    import torch  # heavy: only when a probe trains

    with torch.random.fork_rng(devices=[]), threads_for(train.vectors.size + val.vectors.size):
        torch.manual_seed(seed)
        if kind == "linear":
            return train_linear(train, val, class_names, hyper, seed, progress)
        if kind == "mlp":
            weights, info = train_mlp(train, val, len(class_names), hyper, seed, progress)
        else:
            prototypes = class_prototypes(index.encoder, resolve_templates(template_spec, class_names))
            weights, info = train_joint(train, val, prototypes, hyper, seed, progress)
    # the best epoch's head, as saved
    info["validation"] = validation_summary(
        Probe(kind, class_names, weights).scores(val.vectors), val.labels, class_names
    )
    return weights, info


def train_probe(
    index: Index,
    kind: str,
    *,
    labels: str | None = None,
    templates: str | None = None,
    train_split: str = "train",
    val_split: str = "val",
    shots: int | None = None,
    seed: int = 0,
    hyper: Hyperparameters | None = None,
    progress: ProgressFn | None = None,
) -> Probe:
    """Train a probe on the index's stored vectors (not saved: call `.save(path)`)."""
    if kind not in KINDS:
        raise ClipsearchError(f"unknown probe kind {kind!r}: use one of {', '.join(KINDS)}")
    started = time.perf_counter()
    hyper = hyper or Hyperparameters()
    class_names, without_images = probe_classes(index, labels, train_split)
    if len(class_names) < 2:
        raise ClipsearchError(
            f"a probe needs at least two classes with training images in split {train_split!r}, found {len(class_names)}"
        )
    train = split_features(index, train_split, class_names)
    if shots is not None:
        train = few_shot(train, shots, seed)
    val = split_features(index, val_split, class_names)
    template_spec = templates_for(index, labels, templates) if kind == "joint" else None
    weights, info = _fit(index, kind, train, val, class_names, template_spec, hyper, seed, progress)

    train_counts = np.bincount(train.labels, minlength=len(class_names))
    meta = {
        "format": FORMAT,
        "kind": kind,
        "class_names": class_names,
        "labels": labels,
        "templates": template_spec,
        "classes_without_images": without_images,
        "index": index.name,
        "model": index.spec.to_dict(),
        "model_id": index.spec.identity(),
        "dim": int(index.manifest["dim"]),
        "train_split": train_split,
        "val_split": val_split,
        "shots": shots,
        "shot_ids": train.ids if shots is not None else None,
        "seed": seed,
        "n_train": len(train),
        "n_val": len(val),
        "train_counts": {name: int(n) for name, n in zip(class_names, train_counts)},
        "hyperparameters": hyper.for_kind(kind),
        **info,
        "created": now_iso(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Probe(kind, class_names, weights, meta)
