"""Ray engine benchmark (issue 16, acceptance check 4).

Indexes the same folder of photo-like JPEGs three ways, in one run, on one local Ray instance
(`ray.init(num_cpus=<cores>)`): the local engine, Ray with 1 encoder actor, Ray with 2; prints
rows/s of each (over the whole sync, and steady: from the first vector back to the last), the
ratios, and where one image's time goes on this machine (decode + preprocess, encode, write:
the shares that say what more nodes would give).

    python bench/bench_ray.py                     # 240 pictures, ViT-B-32 (random weights)
    python bench/bench_ray.py --n 60 --model tiny # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the photo generator is shared with the tests
from imagegen import photo_like  # noqa: E402

SIZES = [(640, 480), (1024, 768), (1600, 1200), (2048, 1536)]  # 0.3-3 MP: decode is real work


def make_folder(folder: Path, n: int) -> None:
    for i in range(n):
        path = folder / f"{i // 100:02d}" / f"IMG_{i:05d}.jpg"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            width, height = SIZES[i % len(SIZES)]
            photo_like(width, height, i).save(path, "JPEG", quality=90)


class TimedEngine:
    """An engine wrapped to time its stream: when the first and the last batch came back."""

    def __init__(self, engine):
        self.engine, self.name, self.actors = engine, engine.name, engine.actors
        self.first = self.last = self.started = 0.0
        self.first_rows = 0

    def label(self) -> str:
        return self.engine.label()

    def encoded_batches(self, items, encoder, batch_size):
        self.started = time.perf_counter()
        for batch in self.engine.encoded_batches(items, encoder, batch_size):
            self.last = time.perf_counter()
            if not self.first:
                self.first, self.first_rows = self.last, len(batch)
            yield batch


def index_once(folder: Path, root: Path, name: str, engine, args) -> dict:
    from clipsearch.api import Index
    from clipsearch.index import sync

    write_seconds = [0.0]
    real_write = sync._write_images

    def timed_write(*write_args):
        started = time.perf_counter()
        try:
            return real_write(*write_args)
        finally:
            write_seconds[0] += time.perf_counter() - started

    sync._write_images = timed_write
    try:
        index = Index.create(name, root, args.model, args.pretrained)
        timed = TimedEngine(engine)
        started = time.perf_counter()
        stats = index.add_folder(folder, batch_size=args.batch_size, progress=False, engine=timed)
        seconds = time.perf_counter() - started
    finally:
        sync._write_images = real_write
    steady = (stats.encoded - timed.first_rows) / (timed.last - timed.first) if timed.last > timed.first else 0.0
    return {
        "engine": f"{engine.name}" + (f" x{engine.actors}" if engine.actors else ""),
        "images": stats.encoded,
        "seconds": round(seconds, 2),
        "rows_per_s": round(stats.encoded / seconds, 2),
        "first_vector_after_s": round(timed.first - timed.started, 2),
        "steady_rows_per_s": round(steady, 2),
        "write_seconds": round(write_seconds[0], 3),
    }


def time_shares(folder: Path, args, samples: int = 24) -> dict:
    """Per image on one core: decode + preprocess, encode (batch of batch-size), and the driver's write."""
    import torch

    from clipsearch.index.engines import decode_one
    from clipsearch.model.backends import load_encoder
    from clipsearch.model.spec import ModelSpec

    torch.set_num_threads(1)
    encoder = load_encoder(ModelSpec.resolve(args.model, args.pretrained), backend="torch")
    paths = sorted(folder.rglob("*.jpg"))[:samples]
    started = time.perf_counter()
    pixels = [decode_one(str(p), encoder.preprocess, encoder.image_size)[0] for p in paths]
    decode = (time.perf_counter() - started) / len(paths)
    batch = torch.stack([torch.as_tensor(p) for p in pixels])
    encoder.encode_image_tensors(batch[:2])  # warm-up
    started = time.perf_counter()
    encoder.encode_image_tensors(batch)
    encode = (time.perf_counter() - started) / len(paths)
    torch.set_num_threads(os.cpu_count() or 1)
    return {"decode_ms": round(decode * 1e3, 1), "encode_ms": round(encode * 1e3, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=240, help="pictures in the folder")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "clipsearch-bench-ray")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("CLIPSEARCH_OFFLINE", "1")
    import ray

    from clipsearch.index.engines import LocalEngine, RayEngine

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    make_folder(args.folder / "photos", args.n)
    started = time.perf_counter()
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    runs = []
    with tempfile.TemporaryDirectory() as root:
        for name, engine in (("local", LocalEngine()), ("ray1", RayEngine(actors=1)), ("ray2", RayEngine(actors=2))):
            runs.append(index_once(args.folder / "photos", Path(root), name, engine, args))
            print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    per_image = time_shares(args.folder / "photos", args)
    per_image["write_ms"] = round(runs[0]["write_seconds"] / runs[0]["images"] * 1e3, 2)
    total = per_image["decode_ms"] + per_image["encode_ms"] + per_image["write_ms"]
    shares = {k.replace("_ms", ""): round(v / total, 4) for k, v in per_image.items()}
    local = runs[0]
    result = {
        "cores": cores,
        "model": args.model,
        "images": args.n,
        "batch_size": args.batch_size,
        "ray_start_s": round(ray_start, 1),
        "runs": runs,
        "ratio_to_local": {r["engine"]: round(r["rows_per_s"] / local["rows_per_s"], 2) for r in runs},
        "steady_ratio_to_local": {
            r["engine"]: round(r["steady_rows_per_s"] / local["steady_rows_per_s"], 2) for r in runs
        },
        "ray2_over_ray1": round(runs[2]["rows_per_s"] / runs[1]["rows_per_s"], 2),
        "per_image_one_core_ms": per_image,
        "time_shares": shares,
        # More nodes add decode and encode capacity; the driver's write does not scale out.
        "write_bound_rows_per_s": round(1e3 / per_image["write_ms"], 0) if per_image["write_ms"] else None,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
