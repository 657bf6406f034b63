"""Zero-shot classification as nearest-text-prototype search.

Each class's prompts are embedded, each embedding normalised, averaged and
re-normalised (the standard CLIP ensemble, as open_clip.build_zero_shot_classifier);
the prototypes form a small FAISS inner-product index that image vectors query,
so an image's label is its nearest prototype and logits = 100 · image · prototypeᵀ.

Every zero-shot number goes through `PrototypeIndex`, and every accuracy through
`zero_shot_report` (metrics.classification_report on its cosines): `classify`,
`predict`, `eval zeroshot` and the trainer's validation (`zero_shot_accuracy`)
agree for the same vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from ..index.index import Index
from ..model.interface import EncoderLike
from ..sources.items import class_display_name
from .metrics import classification_report, topk_accuracy, topk_predictions
from .prompts import default_templates, resolve_labels, resolve_templates

if TYPE_CHECKING:
    import faiss

LOGIT_SCALE = 100.0


def class_prototypes(encoder: EncoderLike, prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """(C, dim) unit prototypes from each class's prompt sentences."""
    flat = [sentence for sentences in prompts for sentence in sentences]
    embeddings = encoder.encode_texts(flat)  # each already unit length
    prototypes, start = [], 0
    for sentences in prompts:
        mean = embeddings[start : start + len(sentences)].mean(axis=0)
        prototypes.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(sentences)
    return np.stack(prototypes).astype(np.float32)


class PrototypeIndex:
    """Class prototypes as an exact FAISS inner-product index (cosine, since all vectors are unit)."""

    def __init__(self, prototypes: np.ndarray):
        self.prototypes = np.ascontiguousarray(prototypes, dtype=np.float32)
        if self.prototypes.ndim != 2 or len(self.prototypes) == 0:
            raise ValueError(f"prototypes must be a non-empty (C, dim) array, got shape {self.prototypes.shape}")
        self._index: faiss.Index | None = None  # built on the first search: cosines() needs none

    @property
    def n_classes(self) -> int:
        return len(self.prototypes)

    def nearest(self, image_vectors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, class indices), each (n, k), best first."""
        queries = np.ascontiguousarray(image_vectors, dtype=np.float32)
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self._index is None:
            import faiss  # only when searched: importing this module must stay light

            self._index = faiss.IndexFlatIP(self.prototypes.shape[1])
            self._index.add(self.prototypes)
        return self._index.search(queries, k)

    def cosines(self, image_vectors: np.ndarray) -> np.ndarray:
        """(n, C) cosine of every image with every prototype, in class order.

        The same inner products the FAISS search ranks, as one matrix product: a
        k = C search would only add a heap sort of them (10x slower for 100k x 100).
        """
        vectors = np.ascontiguousarray(image_vectors, dtype=np.float32).reshape(-1, self.prototypes.shape[1])
        return vectors @ self.prototypes.T


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _match_key(name: str) -> str:
    return class_display_name(name).lower()


def label_indices(label_names: Sequence[str | None], class_names: Sequence[str]) -> np.ndarray:
    """Class index of each stored label name in a label set (-1 when it is not in the set).

    Names match case-insensitively with underscores as spaces (`class_display_name`),
    so CIFAR-100's raw "lawn_mower" is the prompt class "lawn mower".
    """
    lookup = {_match_key(name): i for i, name in enumerate(class_names)}
    return np.array([lookup.get(_match_key(n), -1) if n else -1 for n in label_names], dtype=np.int64)


# -- accuracy: one computation for eval zeroshot and the trainer ----------------------


def holdout_accuracy(scores: np.ndarray, truth: np.ndarray, class_names: Sequence[str], holdout: Sequence[str]) -> dict:
    """Top-1 over rows whose true class is seen in training vs held out of it.

    Predictions range over all classes (held-out ones included); only the rows
    are split. A part with no rows has top1 None.
    """
    held_classes = label_indices(list(holdout), class_names)
    unknown = [name for name, index in zip(holdout, held_classes) if index < 0]
    if unknown:
        raise ClipsearchError(f"held-out classes {', '.join(unknown)} are not in the label set")
    held = np.isin(truth, held_classes)

    def part(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        return {"top1": topk_accuracy(scores[mask], truth[mask], 1) if n else None, "n": n}

    return {"seen": part(~held), "held_out": {**part(held), "classes": list(holdout)}}


def zero_shot_report(
    image_vectors: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    prototypes: np.ndarray,
    holdout: Sequence[str] | None = None,
) -> dict[str, Any]:
    """metrics.classification_report of unit image vectors (n, dim) with true class indices
    `truth` against class prototypes (C, dim), and with `holdout` the seen / held-out split."""
    scores = PrototypeIndex(prototypes).cosines(image_vectors)
    report = classification_report(scores, truth, class_names)
    if holdout:
        report.update(holdout_accuracy(scores, truth, class_names, holdout))
    return report


def zero_shot_accuracy(
    image_vectors: np.ndarray,
    label_names: Sequence[str | None],
    class_names: Sequence[str],
    prototypes: np.ndarray,
    holdout: Sequence[str] | None = None,
) -> dict:
    """Zero-shot top-1 of unit image vectors (n, dim) against class prototypes (C, dim, one
    row per name of `class_names`), and with `holdout` (class names) the seen / held-out
    split of it: {"top1", "n", "excluded", "seen": {"top1", "n"}, "held_out": {"top1", "n", "classes"}}.

    Rows whose label is not a class of `class_names` are left out and counted in
    "excluded". The numbers are `zero_shot_report`'s, the function `eval zeroshot` reports.
    """
    truth = label_indices(label_names, class_names)
    keep = truth >= 0
    if not keep.any():
        raise ClipsearchError("no image has a label in the label set")
    report = zero_shot_report(
        np.asarray(image_vectors, np.float32)[keep], truth[keep], class_names, prototypes, holdout
    )
    result = {"top1": report["top1"], "n": report["n"], "excluded": int((~keep).sum())}
    result.update({part: report[part] for part in ("seen", "held_out") if part in report})
    return result


# -- predict: top-k classes of images -------------------------------------------------


@dataclass
class Prediction:
    label: str
    probability: float  # softmax(scale · cosine) over the whole label set (scale: the model's, else 100)
    cosine: float


def prediction_prompts(
    labels: str | Sequence[str], templates: str | None = None, k: int = 5, files: bool = True
) -> tuple[list[str], list[list[str]]]:
    """(class names, each class's prompt sentences) for `predict_images`, checked before any model loads:
    `labels` a label spec (resolve_labels) or the class names themselves, `templates` a template spec (default:
    the label set's usual one), `k` within the number of classes. `files=False`: the specs name no file."""
    class_names = resolve_labels(labels, files) if isinstance(labels, str) else list(labels)
    if not 1 <= k <= len(class_names):
        raise ClipsearchError(f"-k must be between 1 and the number of classes ({len(class_names)}), got {k}")
    spec = templates or default_templates(labels if isinstance(labels, str) else "")
    return class_names, resolve_templates(spec, class_names, files)


def predict_images(
    encoder: EncoderLike,
    images: Sequence[Image.Image],
    class_names: Sequence[str],
    prototypes: np.ndarray,
    k: int = 5,
) -> list[list[Prediction]]:
    """The k most probable classes of each image, best first."""
    if not 1 <= k <= len(class_names):
        raise ClipsearchError(f"-k must be between 1 and the number of classes ({len(class_names)}), got {k}")
    cosines = PrototypeIndex(prototypes).cosines(encoder.encode_images(images))
    # A transformers checkpoint carries its own temperature (HFEncoder.logit_scale); open_clip models use 100.
    scale = getattr(encoder, "logit_scale", None) or LOGIT_SCALE
    probabilities = softmax(scale * cosines.astype(np.float64))
    return [
        [Prediction(class_names[c], float(probabilities[row, c]), float(cosines[row, c])) for c in ranked]
        for row, ranked in enumerate(topk_predictions(cosines, k))
    ]


# -- classify: label every stored image ------------------------------------------------


@dataclass
class ClassifyResult:
    labelset: str
    n: int
    counts: dict[str, int] = field(default_factory=dict)  # every class, most frequent first
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"labelset": self.labelset, "n": self.n, "counts": self.counts, "seconds": round(self.seconds, 3)}


def classify(
    index: Index, labels: str, templates: str | None = None, on_batch: Callable[[int], None] | None = None
) -> ClassifyResult:
    """Label every live image with its nearest class prototype: writes zs_label, zs_score (the
    cosine) and zs_labelset (`labels`). `templates` defaults to the label set's usual ones;
    `on_batch(n)` is called after each batch of n images. Vectors are untouched, so the FAISS
    file stays valid."""
    started = time.perf_counter()
    class_names = resolve_labels(labels)
    prompts = resolve_templates(templates or default_templates(labels), class_names)
    prototype_index = PrototypeIndex(class_prototypes(index.encoder, prompts))

    def nearest(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best_scores, best_classes = prototype_index.nearest(vectors, 1)
        return best_classes[:, 0], best_scores[:, 0]

    counts = index.write_labels(nearest, class_names, "zs_label", "zs_score", {"zs_labelset": labels}, on_batch)
    return ClassifyResult(labels, sum(counts.values()), counts, time.perf_counter() - started)
