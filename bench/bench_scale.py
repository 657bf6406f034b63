"""Scale benchmark (issue 11, benchmark c): N clustered 512-d unit vectors in a real index.

The vectors are CLIP-like, not uniform (uniform random vectors are the worst case for any
approximate index): 64 topics, N/25 concepts around them, items around the concepts, so that an
item's nearest neighbour has cosine ~0.75. They go in through `clipsearch import` (a fresh CLI
process: the build time includes start-up, the table write and the FAISS build + recall tuning),
then, in this process:

  - query latency p50/p95 at k=10 (one query at a time, held-out vectors from the same mixture),
  - recall@10 of those queries against exact brute force over the table,
  - RSS after loading the index and querying,
  - the time to add 1 and 100 vectors and to delete 1 row (a re-index of a deleted file marks its
    row deleted: that write, then the in-place FAISS update and its save: a small delta file),
  - how the FAISS file changed (in place: no rebuild; the delta beside it).

    python bench/bench_scale.py                 # N = 100,000
    python bench/bench_scale.py --n 100000 1000000   # 1M takes a while on 2 cores (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512
MODEL = ["--model", "ViT-B-32", "--pretrained", "openai"]  # names the model; no weights are loaded


def clustered(n: int, seed: int, concepts: int) -> np.ndarray:
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    rng = np.random.default_rng(1234)
    topics = unit(rng.standard_normal((64, DIM)))
    middle = unit(topics[rng.integers(0, 64, concepts)] + 0.8 * unit(rng.standard_normal((concepts, DIM))))
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries
        m = min(100_000, n - start)
        out[start : start + m] = unit(middle[rng.integers(0, concepts, m)] + 0.6 * unit(rng.standard_normal((m, DIM))))
    return out


def rss_mb() -> float:
    """Current resident memory (not the peak: generating the vectors here would dominate that)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(n: int, work: Path) -> dict:
    from clipsearch.index import ann
    from clipsearch.index.imported import Embeddings
    from clipsearch.index.index import Index
    from clipsearch.index.store import IMAGES, sql_in
    from clipsearch.index.sync import SyncStats

    concepts = max(100, n // 25)
    vectors = clustered(n, 0, concepts)
    np.save(work / "vectors.npy", vectors)
    root = work / "indexes"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "import",
            "scale",
            "--vectors",
            str(work / "vectors.npy"),
            *MODEL,
            "--root",
            str(root),
            "--json",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    build_s = time.perf_counter() - started
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    del vectors

    index = Index.open("scale", root)
    t = time.perf_counter()
    faiss_index = index.ann_index
    load_s = time.perf_counter() - t
    queries = clustered(200, 1, concepts)
    times = []
    found = []
    for q in queries:
        t = time.perf_counter()
        hits = index.search(vector=q, k=10)
        times.append(time.perf_counter() - t)
        found.append([h.row["key"] for h in hits])
    search_rss = rss_mb()  # the index loaded and queried, before this benchmark reads every vector for the truth
    ann_times = []
    for q in queries:
        t = time.perf_counter()
        ann.search(faiss_index, q[None], 10)
        ann_times.append(time.perf_counter() - t)
    table = index.rows(columns=["key", "vector"])
    from clipsearch.index.schema import vectors_of

    keys, stored = table.column("key").to_numpy(), vectors_of(table)
    truth = [keys[np.argsort(-(stored @ q))[:10]] for q in queries]
    recall = float(np.mean([len(set(a.tolist()) & set(b)) / 10 for a, b in zip(truth, found)]))
    del stored, table

    def timed_import(m: int, seed: int) -> float:
        extra = clustered(m, seed, concepts)
        import pyarrow as pa

        embeddings = Embeddings.from_arrays(extra, pa.table({"id": [f"extra-{seed}-{i}" for i in range(m)]}))
        t = time.perf_counter()
        index.add_embeddings(embeddings, "import:bench")
        return time.perf_counter() - t

    add1, add100 = timed_import(1, 11), timed_import(100, 12)
    victim = index.rows(columns=["id"]).column("id")[0].as_py()

    def mark() -> SyncStats:
        index.store.update(IMAGES, sql_in("id", [victim]), {"deleted": True})
        return SyncStats()

    t = time.perf_counter()
    index.write_rows(mark, "import:bench")
    delete1 = time.perf_counter() - t
    record = index.manifest["ann"]
    return {
        "n": n,
        "index": f"{record['kind']} ({record['factory']}, nprobe {record['nprobe']})",
        "build_recall@10 (stored queries)": round(record["recall@10"], 4),
        "import_build_s (CLI, fresh process)": round(build_s, 1),
        "import_peak_rss_mb": round(child_rss),
        "faiss_load_s (checksum + read)": round(load_s, 2),
        "query_p50_ms (Index.search, k=10)": round(1000 * float(np.percentile(times, 50)), 2),
        "query_p95_ms": round(1000 * float(np.percentile(times, 95)), 2),
        "faiss_p50_ms": round(1000 * float(np.percentile(ann_times, 50)), 2),
        "faiss_p95_ms": round(1000 * float(np.percentile(ann_times, 95)), 2),
        "recall@10 (held-out queries)": round(recall, 4),
        "search_rss_mb (current, after queries)": round(search_rss),
        "add_1_s": round(add1, 2),
        "add_100_s": round(add100, 2),
        "delete_1_s": round(delete1, 2),
        "faiss_mb": round(index.faiss_path.stat().st_size / 2**20),
        "delta_after_writes": record.get("delta"),  # the small change file beside the FAISS file (ann_delta.py)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}", flush=True)
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(n, Path(tmp)), indent=2), flush=True)


if __name__ == "__main__":
    main()
