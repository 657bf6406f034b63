"""Queries: parse rclip-style weighted terms, embed them, combine into one unit vector,
and run it against the FAISS index (with an optional LanceDB SQL filter).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import ClipsearchError
from ..model.interface import EncoderLike
from ..sources.images import ImageDecodeError, decode_image, is_image_file
from . import ann
from .schema import vectors_of

if TYPE_CHECKING:  # annotations only
    import faiss

_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:(.*)$", re.S)
_OPERATORS = ("+", "-")


@dataclass
class QueryTerm:
    weight: float  # negative for "-" terms
    text: str | None = None
    image: Image.Image | None = None
    label: str = ""  # how the user wrote it, for messages


TEXT_PREFIX = "text:"  # `text:photo.jpg`: the literal text, never a file


def _split_inline(token: str) -> list[str]:
    """`"a dog + 2:snow - grass"` written as one argument becomes separate tokens (also a trailing `a +`)."""
    return [part for part in re.split(r"(?:^|\s+)([+-])(?:\s+|$)", token) if part != ""]


def _term(raw: str, sign: float, files: bool = True) -> QueryTerm:
    weight, body = 1.0, raw
    match = _WEIGHT.match(raw)
    if match and not (files and Path(raw).exists()):
        weight, body = float(match.group(1)), match.group(2)
    body = body.strip()
    if body.startswith(TEXT_PREFIX):
        files, body = False, body[len(TEXT_PREFIX) :].strip()
    if not body:
        raise ClipsearchError(f"empty query term in {raw!r}")
    path = Path(body).expanduser()
    # An image file that exists, or a path-like name of one (a typo must not become a text query).
    if files and is_image_file(path) and (path.is_file() or "/" in body or not any(c.isspace() for c in body)):
        return QueryTerm(sign * weight, image=load_query_image(path), label=body)
    return QueryTerm(sign * weight, text=body, label=body)


def load_query_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image).expanduser()
    if not path.is_file():
        raise ClipsearchError(f"query image not found: {image}")
    try:
        return decode_image(path)
    except ImageDecodeError as err:
        raise ClipsearchError(f"cannot read query image {image}: {err}") from None


def parse_query(
    tokens: str | Sequence[str] | None, images: Sequence[str | Path | Image.Image] = (), files: bool = True
) -> list[QueryTerm]:
    """Terms joined by `+`/`-`; `W:term` weighs a term; an existing image path is an image term (`files=False`,
    for queries from the network: every term is text, no path is looked at)."""
    if isinstance(tokens, str):
        tokens = [tokens]
    flat = [part for token in (tokens or []) for part in _split_inline(token)]
    terms: list[QueryTerm] = []
    sign, words = 1.0, []
    if flat and flat[-1] in _OPERATORS:
        raise ClipsearchError(f"the query ends with {flat[-1]!r}: put a term after it (or {TEXT_PREFIX}{flat[-1]})")
    for at, token in enumerate([*flat, "+"]):
        if token in _OPERATORS:
            if words:
                terms.append(_term(" ".join(words), sign, files))
                words = []
            elif at:
                raise ClipsearchError(f"two operators in a row in the query, {flat[at - 1]!r} then {token!r}")
            sign = 1.0 if token == "+" else -1.0
        else:
            words.append(token)
    terms += [
        QueryTerm(1.0, image=load_query_image(image), label=str(getattr(image, "filename", "") or image))
        for image in images
    ]
    if not terms:
        raise ClipsearchError("empty query: give text or an image (a path)")
    return terms


def embed_query(encoder: EncoderLike, terms: Sequence[QueryTerm]) -> np.ndarray:
    """Weighted sum of the terms' unit embeddings, re-normalised: a (dim,) unit vector."""
    texts = [t for t in terms if t.text is not None]
    images = [t for t in terms if t.image is not None]
    vectors = {}
    if texts:
        vectors.update(zip(map(id, texts), encoder.encode_texts([t.text for t in texts])))
    if images:
        vectors.update(zip(map(id, images), encoder.encode_images([t.image for t in images])))
    combined = sum(t.weight * vectors[id(t)] for t in terms)
    norm = float(np.linalg.norm(combined))
    if norm < 1e-6:
        raise ClipsearchError("the query terms cancel each other out; change a weight or a term")
    return (combined / norm).astype(np.float32)


@dataclass
class Hit:
    rank: int
    score: float
    row: dict[str, Any]  # the stored row, without its vector

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def uri(self) -> str:
        return self.row["uri"]

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), **self.row}


def top_k_exact(query: np.ndarray, keys: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, keys) of the k best rows by exact inner product (stable order on ties)."""
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], keys[order]


def nearest_keys(
    index: faiss.Index,
    query: np.ndarray,
    k: int,
    allowed: pa.Table | None = None,
    threshold: float | None = None,
) -> list[tuple[float, int]]:
    """(score, key) of the k rows nearest to a unit query vector, best first.

    `allowed` (rows with `key`, and `vector` for an approximate index) restricts the search to
    the rows a filter kept: an exact index searches only their keys, an approximate one is
    bypassed by an exact scan of their vectors (its graph may hold none of them near the query).
    """
    queries = query[None, :]
    k = min(k, index.ntotal if allowed is None else allowed.num_rows)  # no more than there are rows
    if k <= 0:
        return []
    if allowed is None:
        scores, keys = (column[0] for column in ann.search(index, queries, k))
    elif ann.is_exact(index):
        scores, keys = (column[0] for column in ann.search(index, queries, k, allowed.column("key").to_numpy()))
    else:
        scores, keys = top_k_exact(query, allowed.column("key").to_numpy(), vectors_of(allowed), k)
    return [(float(s), int(key)) for s, key in zip(scores, keys) if key >= 0 and (threshold is None or s >= threshold)]


def image_hits(rows: pa.Table | None, found: Sequence[tuple[float, int]]) -> list[Hit]:
    """(score, key) pairs as ranked hits carrying their stored rows (`rows`: those rows, without vectors)."""
    by_key = {row["key"]: row for row in rows.to_pylist()} if rows is not None else {}
    return [Hit(rank, score, by_key[key]) for rank, (score, key) in enumerate(found, 1) if key in by_key]


def caption_hits(captions: pa.Table, query: np.ndarray, k: int) -> list[Hit]:
    """The k captions (rows with a `vector`) nearest to a unit query vector, scored exactly."""
    scores, rows = top_k_exact(query, np.arange(captions.num_rows), vectors_of(captions), k)
    meta = captions.drop_columns(["vector"]).take(pa.array(rows)).to_pylist()
    return [Hit(rank, float(score), row) for rank, (score, row) in enumerate(zip(scores, meta), 1)]


MAX_K = 100_000  # the most results one query returns (documented in the README's search section)


def check_k(k: int) -> None:
    """Refuse a k that is not a positive whole number or exceeds MAX_K (a huge one would allocate k rows)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ClipsearchError(f"-k must be a positive number of results (got {k})")
    if k > MAX_K:
        raise ClipsearchError(f"-k {k} is too many: at most {MAX_K} results per query")
