"""Issue 11's demo-model goal: on the self-trained demo model, zero-shot top-1 and text->image R@10 of
each exported backend within 0.5 points of torch fp32.

Takes a `clipsearch demo` output folder (its generated `shapes/` data and `run/best.safetensors`, the
checkpoint the demo trained), indexes the test split once per backend and precision through the
normal indexing path, and evaluates it as `clipsearch eval zeroshot` / `eval retrieval` do (the
prompts are embedded on the same backend). Prints each number, its difference to torch fp32 in
points, and whether it is within 0.5. Exports are made in --hf-home (default: a new temp folder).

    python bench/bench_demo_backends.py demo_out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipsearch.model.backends import cpu_has_native_bf16

VARIANTS = [("torch", "fp32"), ("openvino", "fp32"), ("onnx", "fp32"), ("openvino", "int8"), ("onnx", "int8")]
NATIVE_BF16_VARIANTS = [("openvino", "bf16")]  # measured where the CPU computes bf16 natively (what `auto` picks there)
TOLERANCE_POINTS = 0.5


def evaluate(demo: Path, root: Path, backend: str, precision: str) -> dict:
    from clipsearch.api import Index
    from clipsearch.errors import ClipsearchError
    from clipsearch.tasks.retrieval import evaluate_retrieval
    from clipsearch.tasks.zeroshot_eval import evaluate_zero_shot

    arch = json.loads((demo / "run" / "config.json").read_text())["model"]["arch"]
    options = {"backend": backend, "precision": precision}
    started = time.perf_counter()
    try:
        index = Index.create(
            f"demo-{backend}-{precision}",
            root,
            model=arch,
            pretrained=str(demo / "run" / "best.safetensors"),
            encoder_options=options,
        )
        index.add_folder(demo / "shapes", exclude=["train", "val"], progress=False, workers=0)
        zero_shot, _ = evaluate_zero_shot(index, "shapes", split="test")
        retrieval = evaluate_retrieval(index, "test", ks=[10])
    except ClipsearchError as error:
        return {"variant": f"{backend} {precision}", "error": str(error)}
    return {
        "variant": f"{backend} {precision}",
        "zs_top1": zero_shot["top1"],
        "t2i_R@10": retrieval["text_to_image"]["R@10"],
        "test_images": retrieval["n_images"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="a `clipsearch demo` output folder")
    parser.add_argument("--hf-home", type=Path, default=None, help="where exports are made (default: a temp folder)")
    args = parser.parse_args()
    os.environ["HF_HOME"] = str(args.hf_home or tempfile.mkdtemp(prefix="clipsearch-demo-exports-"))
    print(f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="clipsearch-demo-backends-"))
    variants = VARIANTS + (NATIVE_BF16_VARIANTS if cpu_has_native_bf16() else [])
    results = [evaluate(args.demo, root, backend, precision) for backend, precision in variants]
    reference = results[0]
    for result in results:
        if "error" in result:
            print(f"{result['variant']:14s} {result['error']}")
            continue
        line = f"{result['variant']:14s}"
        for metric in ("zs_top1", "t2i_R@10"):
            points = 100 * (result[metric] - reference[metric])
            result[f"{metric}_diff_points"] = round(points, 2)
            line += f"  {metric} {100 * result[metric]:6.2f} ({points:+.2f} pt)"
        result["within_0.5_points"] = all(
            abs(result[f"{m}_diff_points"]) <= TOLERANCE_POINTS for m in ("zs_top1", "t2i_R@10")
        )
        print(f"{line}  {'within' if result['within_0.5_points'] else 'OUTSIDE'} 0.5 pt  ({result['seconds']} s)")
    print(json.dumps({"load_after": round(os.getloadavg()[0], 2), "results": results}, indent=2))


if __name__ == "__main__":
    main()
