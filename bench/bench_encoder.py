"""Benchmark (a) of issue 11: plain open_clip fp32 eager against each exported backend and precision.

    .venv/bin/python bench/bench_encoder.py [--arch ViT-B-32] [--rounds 3] [--cache DIR]

Random weights (`--pretrained none`) serve for speed and fidelity alike. Per variant: image tower
img/s at batch 32 (best and median over rounds; the variants alternate within each round so that a
change in the machine's load hits them alike), mean cosine of its image and text vectors to fp32
eager on images it was not calibrated on, and the time of one text query. Exports are made first
(timed) in --cache (default: a new temporary folder, so nothing is reused). Prints the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from imagegen import photo_like

from clipsearch.errors import ClipsearchError
from clipsearch.model.backends import cpu_has_native_bf16, load_encoder
from clipsearch.model.encoder import build_model
from clipsearch.model.spec import ModelSpec, load_open_clip

BATCH = 32
VARIANTS = [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"), ("onnx", "fp32"), ("onnx", "int8")]
QUERY = "a photo of a dog playing in the snow"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    os.environ["HF_HOME"] = str(args.cache or tempfile.mkdtemp(prefix="bench-encoder-"))
    print(f"load average at start: {load()}  (cores: {os.cpu_count()}, HF_HOME={os.environ['HF_HOME']})")

    import torch

    spec = ModelSpec(args.arch, "none")
    model, _, preprocess = build_model(spec, "cpu")
    tokenizer = load_open_clip().get_tokenizer(args.arch)
    images = [photo_like(320, 240, seed) for seed in range(BATCH)]
    pixels = torch.stack([preprocess(im) for im in images])
    calibration = [photo_like(320, 240, seed) for seed in range(1000, 1000 + BATCH)]

    def eager_images() -> np.ndarray:
        with torch.inference_mode():
            return torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()

    def eager_text() -> np.ndarray:
        with torch.inference_mode():
            return torch.nn.functional.normalize(model.encode_text(tokenizer([QUERY])), dim=-1).numpy()

    reference_images, reference_text = eager_images(), eager_text()
    encoders = {}
    for backend, precision in VARIANTS:
        if precision == "bf16" and not cpu_has_native_bf16():
            print(f"{backend}-{precision}: skipped (this CPU has no native bf16)")
            continue

        def make(backend: str = backend, precision: str = precision) -> None:
            encoders[(backend, precision)] = load_encoder(spec, backend, precision, batch_size=BATCH)
            encoders[(backend, precision)].encode_images(calibration)  # int8: the calibration set

        try:
            print(
                f"ready {backend}-{precision} (export, or load when cached): {timed(make):.1f} s (load {load()})",
                flush=True,
            )
        except ClipsearchError as refused:  # int8 further from fp32 than the bound
            print(f"{backend}-{precision}: refused: {refused}", flush=True)

    runs: dict[str, list[float]] = {"torch-fp32 eager": []}
    texts: dict[str, list[float]] = {"torch-fp32 eager": []}
    for _ in range(args.rounds):
        runs["torch-fp32 eager"].append(timed(eager_images))
        texts["torch-fp32 eager"].append(timed(eager_text))
        for (backend, precision), encoder in encoders.items():
            name = f"{backend}-{precision}"
            runs.setdefault(name, []).append(timed(lambda e=encoder: e.encode_image_tensors(pixels.numpy())))
            texts.setdefault(name, []).append(timed(lambda e=encoder: e.encode_texts([QUERY])))

    base = statistics.median(runs["torch-fp32 eager"])
    print(f"\n{args.arch} --pretrained none, batch {BATCH}, {args.rounds} alternating rounds; load now {load()}")
    print(
        f"{'variant':<18}{'img/s best':>11}{'img/s med':>10}{'x med':>7}{'img cos':>10}{'txt cos':>10}"
        f"{'text ms min':>12}{'text ms med':>12}"
    )
    for name, seconds in runs.items():
        encoder = encoders.get(tuple(name.split("-"))) if name != "torch-fp32 eager" else None
        img_cos = txt_cos = 1.0
        if encoder is not None:
            img_cos = float(np.mean(np.sum(encoder.encode_image_tensors(pixels.numpy()) * reference_images, axis=1)))
            txt_cos = float(np.sum(encoder.encode_texts([QUERY]) * reference_text))
        best, median = BATCH / min(seconds), BATCH / statistics.median(seconds)
        print(
            f"{name:<18}{best:>11.1f}{median:>10.1f}{base / statistics.median(seconds):>7.2f}{img_cos:>10.5f}"
            f"{txt_cos:>10.5f}{1000 * min(texts[name]):>12.1f}{1000 * statistics.median(texts[name]):>12.1f}"
        )


if __name__ == "__main__":
    main()
