"""Cold-start benchmark (issue 11, benchmark d): `search`, `info`, `list` and an unchanged re-index,
each as a fresh `clipsearch` process, as a user runs them: wall time and peak RSS.

Each command runs under its own small Python parent, which reports
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` for exactly that one child. The index is built
once (untimed) from a folder of small generated pictures with the given model (default: the
shipped `tiny` architecture with random weights; pass --model/--pretrained for a real one that is
in the cache).

    python bench/bench_cold.py                  # 1,000 files, 3 runs each
    python bench/bench_cold.py --files 10000 --runs 5 --model ViT-B-32 --pretrained openai
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the picture generator is shared with the tests
from imagegen import write_distinct_images  # noqa: E402

_CHILD = """
import resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
wall = time.perf_counter() - t
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, code)
"""


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one fresh process running `command`."""
    out = subprocess.run([sys.executable, "-c", _CHILD, *command], capture_output=True, text=True, check=True)
    wall, rss, code = out.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}")
    return float(wall), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pretrained", default="none")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "clipsearch"]
    with tempfile.TemporaryDirectory() as tmp:
        folder, root = Path(tmp) / "photos", Path(tmp) / "indexes"
        write_distinct_images(folder, [f"d{i // 100:03d}/p{i:05d}.png" for i in range(args.files)])
        model = ["--model", args.model, "--pretrained", args.pretrained]
        started = time.perf_counter()
        subprocess.run(
            [*cli, "index", str(folder), "--name", "cold", *model, "--root", str(root), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(
            f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}; "
            f"first index of {args.files} files: {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        commands = {
            "search 'a dog'": [*cli, "search", "cold", "a dog", "--root", str(root), "--json"],
            "info": [*cli, "info", "cold", "--root", str(root)],
            "list": [*cli, "list", "--root", str(root)],
            "unchanged re-index": [*cli, "index", str(folder), "--name", "cold", "--root", str(root), "--json"],
            "--help": [*cli, "--help"],
        }
        results = {}
        for name, command in commands.items():
            runs = [measure(command) for _ in range(args.runs)]
            results[name] = {
                "wall_s_median": round(statistics.median(w for w, _ in runs), 2),
                "wall_s_min": round(min(w for w, _ in runs), 2),
                "peak_rss_mb": round(max(r for _, r in runs)),
            }
        print(json.dumps({"files": args.files, "model": f"{args.model}@{args.pretrained}", **results}, indent=2))


if __name__ == "__main__":
    main()
