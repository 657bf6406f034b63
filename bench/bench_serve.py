"""Load test of `clipsearch serve`'s JSON API: concurrent text queries against a 10,000-row tiny-model index.

    .venv/bin/python bench/bench_serve.py                           # 8 clients, 500 queries, 10,000 rows
    .venv/bin/python bench/bench_serve.py --clients 16 --queries 2000 --rows 100000 --out bench_serve.json

The index is made by `clipsearch import` from random clustered unit vectors in the tiny model's space
(an exact FAISS search costs the same whatever the vectors are; encoding 10,000 images would only slow the
benchmark down). The real `clipsearch serve` runs in its own process; the clients are threads, each with
its own keep-alive HTTP connection, sending `POST /api/search {"query": TEXT, "k": 10}` (every query is
encoded by the model: no cache). Reported: the server's start-up (to the first /api/info answer, and to the
model being ready), per-query latency p50/p95/p99, throughput, the error count (any answer but 200 with
k hits), and how long the server takes to stop after SIGINT.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipsearch.files import write_json  # noqa: E402
from clipsearch.index.imported import model_dim  # noqa: E402
from clipsearch.model.spec import ModelSpec  # noqa: E402
from clipsearch.sources.shapes import COLOURS, SHAPES  # noqa: E402

TEXTS = [f"a {size} {colour} {shape}" for size in ("small", "large") for colour in COLOURS for shape in SHAPES]
K = 10


def clustered_vectors(rows: int, dim: int, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """`rows` unit vectors around `clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, rows)] + 0.5 * rng.standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clipsearch(*args: object) -> list[str]:
    return [sys.executable, "-m", "clipsearch", *map(str, args)]


def build_index(root: Path, rows: int) -> None:
    dim = model_dim(ModelSpec.resolve("tiny", "none")) or 0
    vectors = root.parent / "vectors.npy"
    np.save(vectors, clustered_vectors(rows, dim))
    subprocess.run(
        clipsearch("import", "bench", "--vectors", vectors, "--model", "tiny", "--pretrained", "none", "--root", root),
        check=True,
        capture_output=True,
    )


def request(connection: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple:
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    response = connection.getresponse()
    return response.status, response.read()


def wait_for_server(port: int, server: subprocess.Popen, started: float) -> dict[str, float]:
    """Seconds from start to the first /api/info answer, and to the model being ready."""
    times: dict[str, float] = {}
    while "ready_s" not in times:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.communicate()[1].decode()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if "first_info_s" not in times and request(connection, "GET", "/api/info")[0] == 200:
                times["first_info_s"] = time.monotonic() - started
            status, body = request(connection, "GET", "/api/status")
            if status == 200 and json.loads(body)["ready"]:
                times["ready_s"] = time.monotonic() - started
            connection.close()
        except OSError:
            pass
        time.sleep(0.05)
    return times


def load(port: int, clients: int, queries: int) -> dict[str, float]:
    """`queries` searches shared by `clients` threads; latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(queries))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                break
            body = {"query": f"{TEXTS[number % len(TEXTS)]} {number}", "k": K}  # all distinct: no cache helps
            began = time.perf_counter()
            try:
                status, data = request(connection, "POST", "/api/search", body)
                ok = status == 200 and len(json.loads(data)["hits"]) == K
            except (OSError, http.client.HTTPException, ValueError) as error:
                status, ok = repr(error), False
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(str(status))
        connection.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "queries": len(latencies),
        "errors": len(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "throughput_qps": round(len(latencies) / wall, 1),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("CLIPSEARCH_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "indexes"
        began = time.monotonic()
        build_index(root, args.rows)
        print(f"index: {args.rows} rows imported in {time.monotonic() - began:.1f} s", file=sys.stderr)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        started = time.monotonic()
        server = subprocess.Popen(
            clipsearch("serve", "bench", "--root", root, "--port", port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            results = {"rows": args.rows, **wait_for_server(port, server, started)}
            results.update(load(port, args.clients, args.queries))
            stopping = time.monotonic()
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
            results.update(stop_s=round(time.monotonic() - stopping, 2), exit_code=server.returncode)
        finally:
            if server.poll() is None:
                server.kill()
    for key in ("first_info_s", "ready_s"):
        results[key] = round(results[key], 2)
    print(json.dumps(results, indent=2))
    if args.out:
        write_json(args.out, results)
    if results["errors"] or results["exit_code"] != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
