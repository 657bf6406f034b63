"""FAISS index over stored vectors: build (exact or approximate by size), update in place,
save atomically with a checksum, load only what that checksum vouches for, search, and
measure recall of an approximate index against exact search.

Vectors are L2-normalised, so inner product = cosine similarity.

Index types, chosen by measurement on clustered 512-d unit vectors (bench/bench_scale.py):
exact `IDMap2,Flat` up to `EXACT_LIMIT` rows; above it `IVF<sqrt n>,Flat` with user ids stored
in the inverted lists (full vectors: the scores shown are exact cosines, only the candidates are
approximate; SQ8 codes measured 2x faster but cap recall@10 near 0.99 and report rounded scores). Both take `add_with_ids` and `remove_ids` in place (HNSW cannot
remove), so a re-index changes the loaded index instead of rebuilding it. `nprobe` is raised
at build time until recall@10 reaches `RECALL_GOAL`, and is saved inside the FAISS file.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from ..files import atomic_write, file_digest

# Exact search over 50k x 512 floats takes ~18 ms a query on one core; past that IVF pays off.
EXACT_LIMIT = 50_000
RETRAIN_GROWTH = 4  # an IVF index trained on n rows is retrained once the table holds 4n
RECALL_GOAL = 0.95
RECALL_QUERIES = 200
RECALL_K = 10
MAX_NPROBE = 256
PARALLEL_QUERIES = 64  # below this many queries, search single-threaded


@dataclass(frozen=True)
class AnnInfo:
    kind: str  # "flat" or "ivf"
    factory: str
    n: int
    recall_at_10: float  # measured against exact search at build time; 1.0 for flat
    trained_n: int = 0  # rows the IVF quantiser was trained on (0 for flat)
    nprobe: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "factory": self.factory,
            "n": self.n,
            "recall@10": self.recall_at_10,
            "trained_n": self.trained_n,
            "nprobe": self.nprobe,
        }


def choose_factory(n: int, dim: int, exact_limit: int | None = None) -> tuple[str, str]:
    # Limits are read at call time (not bound as defaults) so they can be tuned at run time.
    if n <= (EXACT_LIMIT if exact_limit is None else exact_limit):
        return "flat", "IDMap2,Flat"
    # sqrt(n) lists; at least 39 training points per list, as k-means wants.
    return "ivf", f"IVF{max(1, min(int(math.sqrt(n)), n // 39))},Flat"


def needs_rebuild(record: dict[str, Any], n: int, exact_limit: int | None = None) -> bool:
    """Whether an index described by `record` (the manifest's ann entry) should be rebuilt, not
    updated, to hold `n` rows: the type by size changed, or the IVF training is stale. Halfway
    below the exact limit an IVF index stays (no rebuild back and forth around the limit)."""
    limit = EXACT_LIMIT if exact_limit is None else exact_limit
    kind = record.get("kind")
    if kind == "flat":
        return n > limit
    if kind == "ivf":
        trained = int(record.get("trained_n") or 0)
        return n <= limit // 2 or trained <= 0 or n > RETRAIN_GROWTH * trained
    return True  # an older index type (hnsw, ivfpq) or none


Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # every row's (keys, vectors), same on each call


def build(keys: np.ndarray, vectors: np.ndarray, exact_limit: int | None = None) -> tuple[faiss.Index, AnnInfo]:
    """`build_streamed` over rows held in memory, as one batch."""
    return build_streamed(len(keys), vectors.shape[1], lambda: [(keys, vectors)], exact_limit)


def build_streamed(n: int, dim: int, batches: Batches, exact_limit: int | None = None) -> tuple[faiss.Index, AnnInfo]:
    """Build from `n` rows read a batch at a time: memory holds the index, a training sample and one batch
    (not a copy of every vector). An IVF index reads the rows twice: first the training sample and the
    recall queries, then every row to add, scoring each batch against the queries for their exact top k."""
    kind, factory = choose_factory(n, dim, exact_limit)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if kind == "flat":
        for keys, vectors in batches():
            _add(index, keys, vectors)
        return index, AnnInfo(kind, factory, int(index.ntotal), 1.0)
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(n, size=min(n, size), replace=False)) for size in (64 * index.nlist, RECALL_QUERIES)]
    sample, queries = _rows_at(batches(), picks)
    index.train(sample)
    del sample
    truth = ExactTopK(queries, RECALL_K)
    for keys, vectors in batches():
        _add(index, keys, vectors)
        truth.add(keys, vectors)
    nprobe, recall = tune_nprobe(index, queries, truth.keys)
    n = int(index.ntotal)
    return index, AnnInfo(kind, factory, n, recall, trained_n=n, nprobe=nprobe)


def _add(index: faiss.Index, keys: np.ndarray, vectors: np.ndarray) -> None:
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(keys, np.int64))


def _rows_at(batches: Iterable[tuple[np.ndarray, np.ndarray]], picks: list[np.ndarray]) -> list[np.ndarray]:
    """For each sorted array of row positions, the vectors at those positions of the batched rows."""
    found: list[list[np.ndarray]] = [[] for _ in picks]
    start = 0
    for _, vectors in batches:
        for parts, positions in zip(found, picks):
            inside = positions[(positions >= start) & (positions < start + len(vectors))]
            parts.append(np.asarray(vectors[inside - start], np.float32))
        start += len(vectors)
    return [np.concatenate(parts) for parts in found]


class ExactTopK:
    """The exact top-k keys (by inner product) of a few queries over rows seen a batch at a time."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = np.asarray(queries, np.float32), k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.keys = np.zeros((len(queries), 0), np.int64)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        scores = np.concatenate([self.scores, self.queries @ np.asarray(vectors, np.float32).T], axis=1)
        keys = np.concatenate(
            [self.keys, np.broadcast_to(np.asarray(keys, np.int64), (len(self.queries), len(keys)))], 1
        )
        if scores.shape[1] <= self.k:
            self.scores, self.keys = scores, keys
            return
        best = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]  # the k best, in no order
        self.scores, self.keys = np.take_along_axis(scores, best, 1), np.take_along_axis(keys, best, 1)


def tune_nprobe(index: faiss.Index, queries: np.ndarray, truth: np.ndarray) -> tuple[int, float]:
    """The smallest power-of-two nprobe (at least 8) whose recall@10 of `queries` against their exact top
    keys `truth` meets the goal, and that recall."""
    ivf = faiss.extract_index_ivf(index)
    nprobe = 8
    while True:
        ivf.nprobe = min(nprobe, ivf.nlist)
        recall = _recall(index, queries, truth)
        if recall >= RECALL_GOAL or nprobe >= min(MAX_NPROBE, ivf.nlist):
            return int(ivf.nprobe), recall
        nprobe *= 2


def _recall(index: faiss.Index, queries: np.ndarray, truth: np.ndarray) -> float:
    _, found = index.search(queries, truth.shape[1])
    return sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found)) / truth.size


def update(index: faiss.Index, add_keys: np.ndarray, add_vectors: np.ndarray, remove_keys: np.ndarray) -> bool:
    """Remove keys, then add vectors under their keys, in place; returns whether anything changed.
    A key in both (new pixels under an old key) ends with its new vector."""
    changed = False
    if len(remove_keys):
        changed |= index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(remove_keys, np.int64))) > 0
    if len(add_keys):
        index.add_with_ids(np.ascontiguousarray(add_vectors, np.float32), np.ascontiguousarray(add_keys, np.int64))
        changed = True
    return changed


def stored_keys(index: faiss.Index) -> np.ndarray:
    """Every key the index holds (IDMap2: its id map; IVF: the ids of each inverted list)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = faiss.extract_index_ivf(index).invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def is_exact(index: faiss.Index) -> bool:
    index = faiss.downcast_index(index)
    return isinstance(index, faiss.IndexIDMap) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)


def search(
    index: faiss.Index, queries: np.ndarray, k: int, allowed_keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, keys) of the k best per query; missing results have key -1."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) < PARALLEL_QUERIES:
        with _one_omp_thread():
            return _search(index, queries, k, allowed_keys)
    return _search(index, queries, k, allowed_keys)


@contextmanager
def _one_omp_thread() -> Iterator[None]:
    # A few queries gain nothing from OpenMP, whose threads spin for tens of ms on a busy machine.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _search(
    index: faiss.Index, queries: np.ndarray, k: int, allowed_keys: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    params = None
    if allowed_keys is not None:
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed_keys, dtype=np.int64)))
    return index.search(queries, k, params=params)


def save(index: faiss.Index, path: Path) -> dict[str, Any]:
    """Write the index atomically; returns what vouches for the file: its size and checksum (the digest
    `files.file_digest` gives, computed while writing rather than by reading the file back)."""
    digest = hashlib.blake2b(digest_size=16)

    def write(handle: IO[bytes]) -> None:
        def chunk(data: bytes) -> None:
            digest.update(data)
            handle.write(data)

        faiss.write_index(index, faiss.PyCallbackIOWriter(chunk))

    atomic_write(path, write)
    return {"bytes": path.stat().st_size, "checksum": digest.hexdigest()}


def load_verified(path: Path, record: dict[str, Any], dim: int) -> faiss.Index | None:
    """The index in `path` if it is the file `record` describes (size, checksum) and reads as an
    index of `dim`-d vectors; None for anything else (missing, a directory, truncated, garbage,
    another index's file): the caller rebuilds it from the table instead of trusting it."""
    try:
        if not path.is_file() or path.stat().st_size != record.get("bytes"):
            return None
        if file_digest(path) != record.get("checksum"):
            return None
        index = faiss.read_index(str(path))
    except (OSError, RuntimeError):  # faiss reports a malformed file as RuntimeError
        return None
    return index if index.d == dim else None


def changes(held: np.ndarray, live: np.ndarray, written: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys to add, keys to remove) that turn an index holding `held` into one holding `live`,
    where the `written` keys got new vectors (removed, then added again)."""
    if not len(held) or not len(live):
        return live, held
    # Keys are dense non-negative integers: membership by lookup table, linear in n.
    remove = held[~np.isin(held, live, kind="table") | np.isin(held, written, kind="table")]
    add = live[~np.isin(live, held, kind="table") | np.isin(live, written, kind="table")]
    return add, remove
