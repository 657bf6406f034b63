"""Zero-shot classification as nearest-text-prototype search.

Each class's prompts are embedded, each embedding normalised, averaged and
re-normalised (the standard CLIP ensemble, as open_clip.build_zero_shot_classifier);
logits = 100 · image · prototypeᵀ.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoder import Encoder
from .prompts import resolve_labels, resolve_templates

LOGIT_SCALE = 100.0


def class_prototypes(encoder: Encoder, prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """(C, dim) unit prototypes from each class's prompt sentences."""
    flat = [sentence for sentences in prompts for sentence in sentences]
    embeddings = encoder.encode_texts(flat)  # each already unit length
    prototypes, start = [], 0
    for sentences in prompts:
        mean = embeddings[start : start + len(sentences)].mean(axis=0)
        prototypes.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(sentences)
    return np.stack(prototypes).astype(np.float32)


def prototypes_for(encoder: Encoder, labels: str, templates: str) -> tuple[list[str], np.ndarray]:
    """Class names and prototypes for a label-set spec and a template spec."""
    names = resolve_labels(labels)
    return names, class_prototypes(encoder, resolve_templates(templates, names))


def zero_shot_logits(image_vectors: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    return LOGIT_SCALE * image_vectors @ prototypes.T


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _normalise_name(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def label_indices(label_names: Sequence[str | None], class_names: Sequence[str]) -> np.ndarray:
    """Class index of each stored label name in a label set (-1 when it is not in the set).

    Names match case-insensitively with underscores as spaces, so CIFAR-100's raw
    "lawn_mower" is the prompt class "lawn mower".
    """
    lookup = {_normalise_name(name): i for i, name in enumerate(class_names)}
    return np.array([lookup.get(_normalise_name(n), -1) if n else -1 for n in label_names], dtype=np.int64)
