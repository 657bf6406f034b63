"""Decode + preprocess benchmark (issue 11 part 5): camera JPEGs to the model's input, per photo.

Generates (once; cached in --folder) photo-like JPEGs of 2 to 12 megapixels (smooth gradients,
soft shapes and sensor grain, so they compress like photos) and times, in alternating rounds:

  full      full-size decode + open_clip's eval transform (the model's own resize, crop, normalise)
  draft     what indexing does: DCT-scaled decode straight to >= the model's size (`decode_image(...,
            min_size)`, PIL draft mode) + open_clip's eval transform (the torch backend)
  numpy     the same decode + `model.pixels.Preprocess` (the exported backends' transform)
  one-box   the same decode + ONE resize of just the centre-crop box with `reducing_gap` (no separate
            crop), then the numpy normalisation: the candidate of issue 11 part 5

and the embedding drift of each against `full` and against `draft` (mean cosine of the tiny test
model's vectors, and of ViT-B-32 with random weights when --vit is given).

    python bench/bench_decode.py                  # 24 photos, 5 rounds
    python bench/bench_decode.py --n 12 --rounds 3 --vit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the photo generator is shared with the tests
from imagegen import photo_like  # noqa: E402

SIZES = [(1632, 1224), (2048, 1536), (2592, 1944), (3000, 2000), (3264, 2448), (4000, 3000)]  # 2-12 MP


def make_photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        path = folder / f"photo_{i:03d}_{width}x{height}.jpg"
        if not path.exists():
            photo_like(width, height, seed=i).save(path, quality=90)
        paths.append(path)
    return paths


def one_box_resize(preprocess, reducing_gap: float):
    """Resize only the centre-crop box of the decoded image straight to size x size, then normalise."""
    from PIL import Image

    def run(image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        width, height = image.size
        scale = preprocess.size / min(width, height)
        crop_w, crop_h = preprocess.size / scale, preprocess.size / scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        image = image.resize((preprocess.size, preprocess.size), preprocess.filter, box=box, reducing_gap=reducing_gap)
        pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / np.float32(255)
        return (pixels - preprocess.mean) / preprocess.std

    return run


def pipelines(size: int, cfg: dict, torch_transform):
    from clipsearch.model.pixels import Preprocess
    from clipsearch.sources.images import decode_image

    numpy_preprocess = Preprocess(cfg)
    box = one_box_resize(numpy_preprocess, reducing_gap=3.0)
    return {
        "full": lambda p: np.asarray(torch_transform(decode_image(p))),
        "draft": lambda p: np.asarray(torch_transform(decode_image(p, min_size=size))),
        "numpy": lambda p: numpy_preprocess(decode_image(p, min_size=size)),
        "one-box": lambda p: box(decode_image(p, min_size=size)),
    }


def timed(paths: list[Path], runs: dict, rounds: int) -> dict[str, dict[str, float]]:
    """ms per photo of each pipeline: min and median over alternating rounds."""
    per_round: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            for path in paths:
                run(path)
            per_round[name].append(1000 * (time.perf_counter() - started) / len(paths))
    return {
        name: {"min_ms": round(min(v), 1), "median_ms": round(float(np.median(v)), 1)} for name, v in per_round.items()
    }


def drift(paths: list[Path], runs: dict, encode) -> dict[str, dict[str, float]]:
    """Mean (and lowest) cosine of each pipeline's vectors to those of `full` and of `draft`."""
    vectors = {name: encode(np.stack([run(p) for p in paths])) for name, run in runs.items()}
    out = {}
    for name, v in vectors.items():
        out[name] = {}
        for reference in ("full", "draft"):
            cosines = np.sum(v * vectors[reference], axis=1)
            out[name][f"cos_to_{reference}_mean"] = round(float(cosines.mean()), 6)
            out[name][f"cos_to_{reference}_min"] = round(float(cosines.min()), 6)
    return out


def model_case(arch: str, pretrained: str | None, paths: list[Path], rounds: int, with_time: bool) -> dict:
    import open_clip
    import torch

    torch.set_num_threads(1)  # as in DataLoader workers, where decoding runs
    model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    model.eval()
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in model.visual.preprocess_cfg.items()}
    size = int(cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0])
    runs = pipelines(size, cfg, transform)

    def encode(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            v = model.encode_image(torch.from_numpy(np.ascontiguousarray(pixels, np.float32)))
        return torch.nn.functional.normalize(v, dim=-1).numpy()

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    result = {"model": f"{arch} ({pretrained or 'random weights'})", "input": size, "drift": drift(paths, runs, encode)}
    torch.set_num_threads(1)
    if with_time:
        result["ms_per_photo"] = timed(paths, runs, rounds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/clipsearch-bench-decode"))
    parser.add_argument("--vit", action="store_true", help="also ViT-B-32 (random weights): 224 px input")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from clipsearch.model.spec import load_open_clip

    load_open_clip()  # registers the shipped "tiny" architecture
    paths = make_photos(args.folder, args.n)
    print(f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}, {len(paths)} photos", flush=True)
    results = [model_case("tiny", None, paths, args.rounds, with_time=True)]
    if args.vit:
        results.append(model_case("ViT-B-32", None, paths, args.rounds, with_time=True))
    print(json.dumps({"load_after": round(os.getloadavg()[0], 2), "results": results}, indent=2))


if __name__ == "__main__":
    main()
