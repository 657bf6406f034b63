"""Retrieval evaluation over an index: text -> image and image -> text recall@k of a split.

Reads the stored image vectors of the split and the vectors of their captions
(the `captions` table), and scores every query against the whole split
gallery with `metrics.retrieval_report`. Ranks are exact: mean and median rank
need every query's full rank, which a top-k FAISS search cannot give, and a
blockwise score matrix keeps memory bounded (1,024 query rows at a time).

The trainer's validation calls `report_from_vectors` with the vectors it
computes itself, so both give the same numbers for the same vectors. The report
is returned, not written: `outputs.write_retrieval` writes its files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ClipsearchError
from ..index.index import Index
from ..index.schema import vectors_of
from .metrics import retrieval_report

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
CURVE_MAX_K = 50
# Score-matrix cells held at once: query rows per block shrink as the gallery grows (128 MiB of float32),
# so memory stays bounded for COCO's 600k captions too, not only for 25k.
_BLOCK_CELLS = 32 * 2**20


@dataclass
class RetrievalSet:
    """The vectors one evaluation ranks: a split's images and their captions."""

    image_ids: list[str]
    image_vectors: np.ndarray  # (n_images, dim), unit rows
    caption_image_ids: list[str]  # the image of each caption
    caption_vectors: np.ndarray  # (n_captions, dim), unit rows


def load_retrieval_set(index: Index, split: str = "test") -> RetrievalSet:
    """The live images of `split` (in table order) and the captions of exactly those images."""
    images = index.split_rows(split, ["id", "vector"])
    image_ids, image_vectors = images.column("id").to_pylist(), vectors_of(images)
    captions = index.captions_of(image_ids)
    caption_ids = captions.column("image_id").to_pylist()
    if not caption_ids:
        raise ClipsearchError(
            f"index '{index.name}' has no captions for its {len(image_ids)} images in split {split!r}: "
            "index a caption dataset or a folder with a captions file beside its images"
        )
    return RetrievalSet(image_ids, image_vectors, caption_ids, vectors_of(captions))


def report_from_vectors(
    image_ids: Sequence[str],
    image_vectors: np.ndarray,
    caption_image_ids: Sequence[str],
    caption_vectors: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """`metrics.retrieval_report` on images and captions given by id, in one canonical order:
    images sorted by id, captions grouped by their image (keeping their given order within it).
    The order only decides exact score ties, so whoever calls this gets the same numbers
    for the same vectors, whatever order they were read in."""
    order = sorted(range(len(image_ids)), key=image_ids.__getitem__)
    row_of = {image_ids[i]: row for row, i in enumerate(order)}
    if len(row_of) != len(image_ids):
        raise ValueError("image ids must be unique")
    unknown = next((i for i in caption_image_ids if i not in row_of), None)
    if unknown is not None:
        raise ValueError(f"caption of unknown image {unknown!r}")
    caption_rows = np.fromiter((row_of[i] for i in caption_image_ids), np.int64, len(caption_image_ids))
    caption_order = np.argsort(caption_rows, kind="stable")
    block_size = int(np.clip(_BLOCK_CELLS // max(len(image_ids), len(caption_image_ids), 1), 16, 1024))
    return retrieval_report(
        np.asarray(image_vectors, np.float32)[order],
        np.asarray(caption_vectors, np.float32)[caption_order],
        caption_rows[caption_order],
        ks=ks,
        curve_max_k=CURVE_MAX_K,
        block_size=block_size,
    )


def evaluate_retrieval(index: Index, split: str = "test", ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """Recall@k both ways, mean/median rank for a split of the index, with the recall@k curves
    (k = 1..CURVE_MAX_K) and the run's settings (index, model, split, seconds)."""
    if not ks or min(ks) < 1:
        raise ClipsearchError(f"recall@k needs positive k values, got {list(ks)}")
    started = time.perf_counter()
    data = load_retrieval_set(index, split)
    report = report_from_vectors(data.image_ids, data.image_vectors, data.caption_image_ids, data.caption_vectors, ks)
    report.update(
        index=index.name, model=index.spec.identity(), split=split, seconds=round(time.perf_counter() - started, 3)
    )
    return report
