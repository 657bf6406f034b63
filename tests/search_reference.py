"""An independent reference for search results: rows read straight from the LanceDB table with
lancedb (not through clipsearch), query vectors straight from the open_clip model, and a
brute-force numpy ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def live_rows(index_folder: Path, table: str = "images") -> list[dict[str, Any]]:
    rows = lancedb.connect(str(index_folder / "db")).open_table(table).to_arrow().to_pylist()
    return [row for row in rows if not row.get("deleted", False)]


def text_vector(encoder, text: str) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(encoder.model.encode_text(encoder.tokenizer([text])), dim=-1)[0].numpy()


def image_vector(encoder, path: Path) -> np.ndarray:
    with Image.open(path) as image:
        pixels = encoder.preprocess(image.convert("RGB"))
    with torch.no_grad():
        return F.normalize(encoder.model.encode_image(pixels[None]), dim=-1)[0].numpy()


def combine(weighted: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
    total = sum(weight * vector for weight, vector in weighted)
    return total / np.linalg.norm(total)


def brute_force(
    rows: list[dict[str, Any]],
    query: np.ndarray,
    k: int,
    keep: Callable[[dict], bool] | None = None,
    threshold: float | None = None,
) -> list[tuple[str, float]]:
    """(id, score) of the k best rows by inner product, best first."""
    rows = [row for row in rows if keep is None or keep(row)]
    if not rows:
        return []
    scores = np.asarray([row["vector"] for row in rows], np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(rows[i]["id"], float(scores[i])) for i in order if threshold is None or scores[i] >= threshold]


def assert_same_ranking(
    got: Sequence[tuple[str, float]], expected: Sequence[tuple[str, float]], tol: float = 1e-5
) -> None:
    """Same ids in the same order, scores within `tol`; only exact ties (identical vectors,
    e.g. a copied file) may come in either order."""
    assert len(got) == len(expected), (got, expected)
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=tol, rtol=0), (got, expected)
    for position, ((got_id, _), (expected_id, score)) in enumerate(zip(got, expected)):
        tied = {i for i, s in expected if abs(s - score) < 1e-7}
        assert got_id == expected_id or got_id in tied, (position, got, expected)
    assert sorted(i for i, _ in got) == sorted(i for i, _ in expected), (got, expected)
