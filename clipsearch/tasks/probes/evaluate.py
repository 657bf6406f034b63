"""Using a trained probe on an index: its accuracy on a split, and labelling every stored image.

Both work on the stored vectors only; results are returned (`outputs.write_probe_eval` writes
an evaluation's files), and applying changes label columns only, so the FAISS file stays valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...index.index import Index
from ..metrics import classification_report
from ..zeroshot import softmax
from .features import split_features
from .probe import Probe


def evaluate_probe(index: Index, probe: Probe, split: str = "test") -> dict[str, Any]:
    """Top-1, top-5, mean per-class recall, per-class accuracy and confusion on a split's stored vectors."""
    probe.check_index(index)
    started = time.perf_counter()
    features = split_features(index, split, probe.class_names)
    report = classification_report(probe.scores(features.vectors), features.labels, probe.class_names)
    return {
        "index": index.name,
        "model": index.spec.identity(),
        "probe": probe.name,
        "kind": probe.kind,
        "shots": probe.shots,
        "split": split,
        "excluded": features.excluded,
        **report,
        "seconds": round(time.perf_counter() - started, 3),
    }


def apply_probe(index: Index, probe: Probe, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Label every live image: probe_label (class), probe_score (its softmax probability), probe_name."""
    probe.check_index(index)
    started = time.perf_counter()

    def most_probable(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probability = softmax(probe.scores(vectors))
        return probability.argmax(axis=1), probability.max(axis=1)

    counts = index.write_labels(
        most_probable, probe.class_names, "probe_label", "probe_score", {"probe_name": probe.name}, on_batch
    )
    return {
        "index": index.name,
        "probe": probe.name,
        "kind": probe.kind,
        "shots": probe.shots,
        "n": sum(counts.values()),
        "counts": counts,
        "seconds": round(time.perf_counter() - started, 3),
    }
