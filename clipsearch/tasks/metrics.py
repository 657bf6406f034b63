"""Evaluation metrics as pure numpy functions: no I/O, no model, no store.

Every command that reports a number (zero-shot eval, probe eval, trainer
validation, retrieval eval) computes it here, so the same rule gives the same
number everywhere.

One ordering rule throughout: items are ranked by descending score, and equal
scores keep their index order (exactly what a stable argsort of ``-scores``
gives). Ties therefore favour the lower class index / gallery index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Either a list with one array of positive gallery indices per query, or the
# same in CSR form as a tuple (indptr of length nq + 1, concatenated indices).
Positives = list[np.ndarray] | tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------


def topk_predictions(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best classes per row of ``scores`` (n, C), best first, shape (n, k).

    Ties are broken by the lower class index (stable argsort of ``-scores``).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, C), got shape {scores.shape}")
    n_classes = scores.shape[1]
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be between 1 and the number of classes ({n_classes}), got {k}")
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k best-scored classes."""
    return _hit_rate(topk_predictions(scores, k), _check_labels(labels, len(scores)))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be equal-length 1-D arrays")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes}), got range [{values.min()}, {values.max()}]")
    flat = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall (= per-class accuracy) per true class; NaN for classes with no samples."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1)
    correct = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / support, np.nan)


def mean_per_class_recall(confusion: np.ndarray) -> float:
    """Mean recall over the classes that have samples (balanced accuracy); NaN if none do."""
    recalls = per_class_recall(confusion)
    present = recalls[~np.isnan(recalls)]
    return float(present.mean()) if present.size else float("nan")


def classification_report(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1, top-5, mean per-class recall, per-class accuracy and the confusion matrix.

    Plain Python numbers only, so the dict can go straight into JSON: the
    accuracy of a class with no samples is ``None``. ``top5`` is top-min(5, C)
    accuracy; ``top5_k`` says which k that was.
    """
    scores = np.asarray(scores)
    n_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise ValueError(f"scores shape {scores.shape} does not match {n_classes} class names")
    if len(scores) == 0:
        raise ValueError("cannot report on zero samples")
    labels = _check_labels(labels, len(scores))
    k5 = min(5, n_classes)
    ranked = topk_predictions(scores, k5)
    confusion = confusion_matrix(labels, ranked[:, 0], n_classes)
    support = confusion.sum(axis=1)
    return {
        "top1": _hit_rate(ranked[:, :1], labels),
        "top5": _hit_rate(ranked, labels),
        "top5_k": k5,
        "mean_per_class_recall": _json_float(mean_per_class_recall(confusion)),
        "n": len(labels),
        "per_class": [
            {"name": str(name), "n": int(count), "accuracy": _json_float(recall)}
            for name, count, recall in zip(class_names, support, per_class_recall(confusion))
        ],
        "confusion": confusion.tolist(),
    }


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    return labels


def _hit_rate(ranked: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``ranked`` (n, k) that contain their label."""
    return float((ranked == labels[:, None]).any(axis=1).mean())


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


# --------------------------------------------------------------------------
# Retrieval with several true matches per query
# --------------------------------------------------------------------------


def first_positive_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    positives: Positives,
    block_size: int = 1024,
) -> np.ndarray:
    """1-based rank of each query's best-ranked true match, shape (nq,) int64.

    Scores are dot products (cosine for L2-normalised vectors), ranked in
    descending order with ties kept in gallery-index order: the result is
    exactly the position of the first positive in a stable argsort of
    ``-scores``. Only ``block_size`` query rows of the score matrix exist at a
    time, so memory is O(block_size * ng), not O(nq * ng).

    ``positives`` lists each query's true gallery indices: a list of arrays,
    one per query, or a tuple ``(indptr, indices)`` in CSR layout (query i's
    positives are ``indices[indptr[i]:indptr[i + 1]]``). Every query needs at
    least one positive (a query with none has no rank).
    """
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries {queries.shape} and gallery {gallery.shape} must be 2-D with equal width")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    indptr, indices = _as_csr(positives, n_queries=len(queries), n_gallery=len(gallery))

    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        block_scores = queries[start:stop] @ gallery.T
        lo, hi = indptr[start], indptr[stop]
        ranks[start:stop] = _best_positive_ranks(block_scores, indptr[start : stop + 1] - lo, indices[lo:hi])
    return ranks


def _best_positive_ranks(scores: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Stable-descending rank of each row's best positive, without sorting the row."""
    n_rows, n_gallery = scores.shape
    segment_starts = indptr[:-1]
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    positive_scores = scores[rows, indices]
    best_score = np.maximum.reduceat(positive_scores, segment_starts)
    # Among positives sharing the best score, the lowest gallery index comes first in a stable sort.
    best_index = np.minimum.reduceat(np.where(positive_scores == best_score[rows], indices, n_gallery), segment_starts)
    strictly_above = (scores > best_score[:, None]).sum(axis=1)
    tied_before = ((scores == best_score[:, None]) & (np.arange(n_gallery) < best_index[:, None])).sum(axis=1)
    return 1 + strictly_above + tied_before


def _as_csr(positives: Positives, n_queries: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalise either positives form to (indptr, indices) and validate it."""
    if isinstance(positives, tuple):
        indptr, indices = (np.asarray(part, dtype=np.int64) for part in positives)
        if indptr.shape != (n_queries + 1,):
            raise ValueError(f"positives indptr must have shape ({n_queries + 1},), got {indptr.shape}")
    else:
        if len(positives) != n_queries:
            raise ValueError(f"need one positives array per query ({n_queries}), got {len(positives)}")
        arrays = [np.asarray(p, dtype=np.int64).ravel() for p in positives]
        indptr = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        indices = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError("positives indptr must start at 0, never decrease and end at len(indices)")
    if np.any(np.diff(indptr) == 0):
        empty = int(np.flatnonzero(np.diff(indptr) == 0)[0])
        raise ValueError(f"query {empty} has no positives; drop such queries before ranking")
    if indices.size and (indices.min() < 0 or indices.max() >= n_gallery):
        raise ValueError(f"positive indices must lie in [0, {n_gallery})")
    return indptr, indices


def recall_at_k(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """{"R@k": fraction of queries whose first true match ranks within k}."""
    ranks = _check_ranks(ranks)
    result = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        result[f"R@{k}"] = float((ranks <= k).mean())
    return result


def recall_curve(ranks: np.ndarray, max_k: int = 50) -> np.ndarray:
    """Recall@k for k = 1..max_k, shape (max_k,)."""
    ranks = _check_ranks(ranks)
    if max_k < 1:
        raise ValueError(f"max_k must be positive, got {max_k}")
    # Cumulative histogram of ranks: recall@k = #(rank <= k) / n.
    hits_per_rank = np.bincount(np.minimum(ranks, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return np.cumsum(hits_per_rank) / len(ranks)


def mean_rank(ranks: np.ndarray) -> float:
    return float(_check_ranks(ranks).mean())


def median_rank(ranks: np.ndarray) -> float:
    return float(np.median(_check_ranks(ranks)))


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if ranks.min() < 1:
        raise ValueError("ranks are 1-based; got a rank below 1")
    return ranks


def retrieval_report(
    image_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_image_index: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    curve_max_k: int = 50,
    block_size: int = 1024,
) -> dict[str, Any]:
    """Recall@k, mean and median rank for text->image and image->text retrieval.

    ``caption_image_index[j]`` is the image row of caption j. Text->image: each
    caption queries all images and has one true image. Image->text: each image
    queries all captions and is a hit at k when ANY of its captions is in the
    top k. Images without captions cannot be hit, so they are left out of the
    image->text queries (but stay in the text->image gallery);
    ``n_image_queries`` says how many images did query.
    """
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    caption_vectors = np.asarray(caption_vectors, dtype=np.float32)
    caption_image_index = np.asarray(caption_image_index, dtype=np.int64)
    n_images, n_captions = len(image_vectors), len(caption_vectors)
    if caption_image_index.shape != (n_captions,):
        raise ValueError(f"caption_image_index must have shape ({n_captions},), got {caption_image_index.shape}")
    if n_captions == 0:
        raise ValueError("retrieval needs at least one caption")

    t2i_positives = (np.arange(n_captions + 1, dtype=np.int64), caption_image_index)
    t2i_ranks = first_positive_ranks(caption_vectors, image_vectors, t2i_positives, block_size)

    captions_per_image = np.bincount(caption_image_index, minlength=n_images)
    has_captions = captions_per_image > 0
    # Captions grouped by image; images with no captions contribute empty groups, so dropping them keeps the order.
    captions_by_image = np.argsort(caption_image_index, kind="stable")
    i2t_indptr = np.concatenate([[0], np.cumsum(captions_per_image[has_captions])])
    i2t_ranks = first_positive_ranks(
        image_vectors[has_captions], caption_vectors, (i2t_indptr, captions_by_image), block_size
    )

    def summary(ranks: np.ndarray) -> dict[str, float]:
        return {**recall_at_k(ranks, ks), "mean_rank": mean_rank(ranks), "median_rank": median_rank(ranks)}

    return {
        "text_to_image": summary(t2i_ranks),
        "image_to_text": summary(i2t_ranks),
        "n_images": n_images,
        "n_captions": n_captions,
        "n_image_queries": int(has_captions.sum()),
        "curves": {
            "text_to_image": recall_curve(t2i_ranks, curve_max_k).tolist(),
            "image_to_text": recall_curve(i2t_ranks, curve_max_k).tolist(),
        },
    }


def chance_recall(n_candidates: int, relevant: int | np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Recall@k of a random ranking, for each k: the chance that at least one of a query's `relevant`
    matches among `n_candidates` lands in its top k, 1 - C(N-c, k)/C(N, k), averaged over the queries
    (`relevant`: one count, or one per query). Text→image with one image per caption gives k / N."""
    counts = np.atleast_1d(np.asarray(relevant, dtype=np.float64))
    counts = counts[counts > 0]
    steps = np.arange(min(max(ks), n_candidates))
    # The binomial ratio as a running product (finite for any N): P(the first i+1 picks all miss).
    miss = np.cumprod(np.clip((n_candidates - counts[:, None] - steps) / (n_candidates - steps), 0.0, 1.0), axis=1)
    miss_at = np.array([miss[:, min(k, n_candidates) - 1] for k in ks]).T  # (queries, ks)
    return np.mean(1.0 - miss_at, axis=0)
