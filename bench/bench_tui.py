"""Warm query latency of `clipsearch tui` on a 10,000-row index, per model.

    .venv/bin/python bench/bench_tui.py                      # tiny and ViT-B-32 (--pretrained none)
    .venv/bin/python bench/bench_tui.py --models tiny --queries 200 --out bench_tui.json

What is timed is `clipsearch.tui.actions.run_query`, the exact call the TUI's search worker makes
once the model is warm: query parsing + text encoding + FAISS search + fetching the hit
rows (from the rows file). Its parts are timed apart too (encoding alone; search + row fetch
from a given vector; the FAISS search alone), and, with `--ui`, the round trip in the app itself (Textual's
headless pilot: enter pressed -> results listed), which adds the UI's own work. `--quit` times what a user
waits for after `escape q`: `clipsearch tui` run in a pseudo-terminal, from q pressed to the process gone,
once the model is ready and once while it is still loading.

The index rows are 10,000 random unit vectors written straight into a fresh index of the
model (`clipsearch.store` rows, then `Index.rebuild_derived`) instead of 10,000 encoded images:
an exact FAISS search costs the same whatever the vectors are, and generating and encoding
10,000 images would only slow the benchmark down. 10,000 rows keep the index exact
(`IDMap2,Flat`, the kind used up to 200k rows).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LANCEDB_LOG", "error")
warnings.filterwarnings("ignore", message=".*random weights.*")

from clipsearch.files import write_json  # noqa: E402
from clipsearch.index import ann  # noqa: E402
from clipsearch.index.index import Index  # noqa: E402
from clipsearch.index.schema import images_schema, rows_to_table  # noqa: E402
from clipsearch.index.store import IMAGES  # noqa: E402
from clipsearch.model.encoder import Encoder  # noqa: E402
from clipsearch.sources.shapes import COLOURS, SHAPES  # noqa: E402
from clipsearch.tui.actions import Query, run_query, warm_model  # noqa: E402
from clipsearch.tui.app import SearchApp  # noqa: E402

MODELS = {"tiny": ("tiny", "none"), "ViT-B-32": ("ViT-B-32", "none")}
TEXTS = [
    f"a photo of a {size} {colour} {shape}" for size in ("small", "large") for colour in COLOURS for shape in SHAPES
]


def random_index(encoder: Encoder, root: Path, rows: int, seed: int = 0) -> Index:
    """An index of `rows` random unit vectors in the encoder's space."""
    index = Index.create("bench", root, encoder=encoder)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    schema = images_schema(encoder.dim)
    for start in range(0, rows, 2048):
        batch = [
            {
                "id": f"bench/{i:05d}",
                "key": i,
                "uri": f"/bench/{i:05d}.png",
                "source": "bench",
                "split": "test",
                "label_name": TEXTS[i % len(TEXTS)].removeprefix("a photo of a "),
                "width": 32,
                "height": 32,
                "size": 1000,
                "vector": vectors[i],
                "deleted": False,
            }
            for i in range(start, min(rows, start + 2048))
        ]
        index.store.add(IMAGES, rows_to_table(batch, schema))
    index.rebuild_derived()
    return index


def timings_ms(call: Callable[[str], Any], queries: int, warmup: int = 5) -> np.ndarray:
    """Milliseconds of `queries` calls, each with another text, after `warmup` untimed ones
    (so that no measure pays for caches another one filled)."""
    for i in range(warmup):
        call(TEXTS[-1 - i])
    out = []
    for i in range(queries):
        start = time.perf_counter()
        call(TEXTS[i % len(TEXTS)])
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def ui_round_trips_ms(index: Index, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """In the running app: (enter handled in the query box -> the results list filled, as
    `SearchApp.round_trip`; the query alone, timed in the search worker, `SearchApp.latency`).
    The pilot's own waits for the screen to settle are left out."""

    async def drive() -> list[tuple[float, float]]:
        app = SearchApp(lambda: index, k=10)
        out = []
        async with app.run_test(size=(120, 36)) as pilot:
            while not app.ready:
                await pilot.pause(0.02)
            for i in range(queries):
                box = app.query_one("#query")
                box.focus()
                box.value = TEXTS[i % len(TEXTS)] + f" {i}"  # never the query already shown
                await pilot.pause()  # the screen settled, as it has by the time a user is done typing
                start = time.perf_counter()
                await pilot.press("enter")
                while app.shown_query is None or app.shown_query.text != box.value.strip():
                    if time.perf_counter() - start > 60:
                        raise RuntimeError(f"no results after 60 s: {app.query_one('#message').content}")
                    await asyncio.sleep(0.02)  # idle, as a user is: the pilot's own polling would compete for the GIL
                out.append((app.round_trip * 1000, app.latency * 1000))
        return out

    both = np.array(asyncio.run(drive()))
    return both[:, 0], both[:, 1]


def _read_until(fd: int, marker: bytes, seconds: float) -> bool:
    """Read the terminal's output until `marker` shows (True) or `seconds` pass."""
    seen, deadline = b"", time.perf_counter() + seconds
    while marker not in seen and time.perf_counter() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                seen = (seen + os.read(fd, 65536))[-4096:]
            except OSError:  # the terminal closed: the process is gone
                return False
    return marker in seen


def quit_seconds(root: Path, name: str, when: str) -> float:
    """Seconds from `q` (after escape) to the process gone, for `clipsearch tui` in a pseudo-terminal,
    pressed once the status says `when` ("ready", or "loading" the model)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))  # rows, columns as a window's
    command = [sys.executable, "-m", "clipsearch", "tui", name, "--root", str(root)]
    env = {**os.environ, "TERM": "xterm-256color"}
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    try:
        if not _read_until(leader, when.encode(), 300):
            raise RuntimeError(f"clipsearch tui never showed {when!r}")
        os.write(leader, b"\x1b")
        _read_until(leader, b"\x00", 1.0)  # a second apart: escape then q, not alt+q
        os.write(leader, b"q")
        pressed = time.perf_counter()
        while process.poll() is None:
            _read_until(leader, b"\x00", 0.01)  # keep the terminal drained while it exits
            if time.perf_counter() - pressed > 60:
                process.send_signal(signal.SIGKILL)
        return time.perf_counter() - pressed
    finally:
        os.close(leader)


def summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "n": int(ms.size),
    }


def bench_model(name: str, rows: int, queries: int, k: int, ui: bool, quit_runs: int, root: Path) -> dict[str, Any]:
    arch, pretrained = MODELS[name]
    start = time.perf_counter()
    encoder = Encoder.load(arch, pretrained)
    index = random_index(encoder, root / name, rows)
    warm_model(index)
    load_s = time.perf_counter() - start
    vector = index.query_vector(TEXTS[0])
    result = {
        "model": index.spec.identity(),
        "dim": encoder.dim,
        "rows": index.counts()["images"],
        "faiss": index.manifest["ann"]["factory"],
        "k": k,
        "setup_s": round(load_s, 2),
        "query": summary(timings_ms(lambda text: run_query(index, Query(text=text, k=k)), queries)),
        "encode_only": summary(timings_ms(lambda text: index.query_vector(text), queries)),
        "search_and_rows_only": summary(timings_ms(lambda text: index.search(vector=vector, k=k), queries)),
        "faiss_only": summary(timings_ms(lambda text: ann.search(index.ann_index, vector[None, :], k), queries)),
        "query_with_filter": summary(
            timings_ms(lambda text: run_query(index, Query(text=text, k=k, where="split = 'test'")), queries)
        ),
    }
    if ui:
        round_trips, in_worker = ui_round_trips_ms(index, min(queries, 30))
        result["ui_round_trip"], result["ui_query_in_worker"] = summary(round_trips), summary(in_worker)
    if quit_runs:
        for when in ("ready", "loading"):
            seconds = [quit_seconds(index.store.path.parent, index.name, when) for _ in range(quit_runs)]
            result[f"quit_{when}_s"] = [round(s, 3) for s in seconds]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--ui", action="store_true", help="Also time the round trip through the app (headless).")
    parser.add_argument("--quit", type=int, default=0, metavar="N", help="Also time N quits of the real app (pty).")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch and FAISS CPU threads (default: their own choice); 1 is steadier on a busy machine.",
    )
    parser.add_argument("--out", type=Path, help="Write the results as JSON.")
    args = parser.parse_args()

    import faiss
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    results = {
        "threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results["models"][name] = bench_model(name, args.rows, args.queries, args.k, args.ui, args.quit, Path(tmp))

    table = Table(title=f"warm query latency, {args.rows:,} rows, k={args.k} (ms; torch threads {results['threads']})")
    for column in ("model", "what", "p50", "p95", "mean", "n"):
        table.add_column(column, justify="left" if column in ("model", "what") else "right")
    for result in results["models"].values():
        for what in (
            "query",
            "encode_only",
            "search_and_rows_only",
            "faiss_only",
            "query_with_filter",
            "ui_round_trip",
            "ui_query_in_worker",
        ):
            if what in result:
                s = result[what]
                table.add_row(
                    result["model"],
                    what,
                    f"{s['p50_ms']:.1f}",
                    f"{s['p95_ms']:.1f}",
                    f"{s['mean_ms']:.1f}",
                    str(s["n"]),
                )
    Console().print(table)
    for result in results["models"].values():
        if "quit_ready_s" in result:
            print(
                f"{result['model']}: quit once ready {result['quit_ready_s']} s, while loading {result['quit_loading_s']} s"
            )
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
