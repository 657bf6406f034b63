"""FAISS index over stored vectors: build (exact or approximate by size), save atomically,
load, search, and measure recall of an approximate index against exact search.

Vectors are L2-normalised, so inner product = cosine similarity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..files import atomic_write_path

# Exact search over 200k x 512 floats takes ~20 ms a query on 2 cores; past
# that an approximate index pays off.
EXACT_LIMIT = 200_000
HNSW_LIMIT = 2_000_000
HNSW_EF_SEARCH = 128
RECALL_QUERIES = 200
RECALL_K = 10
PARALLEL_QUERIES = 64  # below this many queries, search single-threaded


@dataclass(frozen=True)
class AnnInfo:
    kind: str  # "flat", "hnsw" or "ivfpq"
    factory: str
    n: int
    recall_at_10: float  # measured against exact search; 1.0 for flat

    def to_dict(self) -> dict:
        return {"kind": self.kind, "factory": self.factory, "n": self.n, "recall@10": self.recall_at_10}


def choose_factory(n: int, dim: int, exact_limit: int | None = None) -> tuple[str, str]:
    # Limits are read at call time (not bound as defaults) so they can be tuned at run time.
    if n <= (EXACT_LIMIT if exact_limit is None else exact_limit):
        return "flat", "IDMap2,Flat"
    if n <= HNSW_LIMIT:
        return "hnsw", "IDMap2,HNSW32,Flat"
    nlist = int(4 * math.sqrt(n))
    return "ivfpq", f"IDMap2,IVF{nlist},PQ{max(dim // 8, 8)}"


def build(keys: np.ndarray, vectors: np.ndarray, exact_limit: int | None = None) -> tuple[faiss.Index, AnnInfo]:
    n, dim = vectors.shape
    kind, factory = choose_factory(n, dim, exact_limit)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, 100_000), replace=False)]
        index.train(sample)
    index.add_with_ids(vectors, np.ascontiguousarray(keys, dtype=np.int64))
    set_search_params(index)
    recall = 1.0 if kind == "flat" else measure_recall(index, vectors)
    return index, AnnInfo(kind, factory, n, recall)


def set_search_params(index: faiss.Index) -> None:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = 32


def measure_recall(
    index: faiss.Index, vectors: np.ndarray, n_queries: int = RECALL_QUERIES, k: int = RECALL_K
) -> float:
    """recall@k of the index against exact inner-product search, on stored vectors as queries."""
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth_rows = exact.search(queries, k)
    id_map = faiss.vector_to_array(faiss.downcast_index(index).id_map)
    _, found = index.search(queries, k)
    hits = sum(len(set(id_map[row]) & set(found_row)) for row, found_row in zip(truth_rows, found))
    return hits / (len(queries) * k)


def is_exact(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)


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


def save(index: faiss.Index, path: Path) -> None:
    atomic_write_path(path, lambda tmp: faiss.write_index(index, str(tmp)))


def load(path: Path) -> faiss.Index:
    index = faiss.read_index(str(path))
    set_search_params(index)
    return index
