"""Linear-probe benchmark (issue 14 item 12): the C search's seconds and accuracy against the old one.

Generated clustered, CLIP-like data (unit vectors around one random centre per class, with
label noise so no C separates them perfectly) at two sizes: the probe of issue 14's report
(639 vectors x 64-d, 25 classes) and CIFAR-10's (45,000 train + 5,000 val x 512-d, 10 classes).
Each size is trained by `tasks.probes.linear.train_linear` (warm-started coarse-to-fine search,
on a stratified sample of a large split) and by the old search (CLIP_benchmark's: cold fits,
every coarse point, all rows, max_iter 1000), copied below, on the same arrays; both refit on
train+val and are scored on a held-out test set.

    python bench/bench_probe.py                 # both sizes; the old search only at the small one
    python bench/bench_probe.py --old-large     # the old search at CIFAR-10 size too (slow)
    python bench/bench_probe.py --threads 2     # BLAS threads (default: 2, the issue's machine)
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from clipsearch.tasks.probes.features import Features, Hyperparameters, threads_for
from clipsearch.tasks.probes.linear import C_GRID, linear_scores, linear_weights, standardised_logistic, train_linear

SIZES = {"small": (511, 128, 64, 25), "cifar10": (45_000, 5_000, 512, 10)}  # train, val, dim, classes
# Spread around the class centre, relative to the centre's norm: about 95 % test top-1 at both sizes.
NOISE = {"small": 1.5, "cifar10": 6.0}
TEST_ROWS = {"small": 500, "cifar10": 10_000}
REPEATS = {"small": 3, "cifar10": 1}  # timed runs per search (the best counts)
LABEL_NOISE = 0.02  # fraction of rows whose label is replaced by a random class


def clustered(n: int, dim: int, n_classes: int, seed: int, noise: float) -> Features:
    """Unit vectors around fixed class centres (the same centres for every split: seed of the centres 0)."""
    centres = np.random.default_rng(0).normal(size=(n_classes, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    vectors = centres[labels] / np.sqrt(dim) + rng.normal(scale=noise / np.sqrt(dim), size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    noisy = rng.random(n) < LABEL_NOISE
    labels[noisy] = rng.integers(0, n_classes, int(noisy.sum()))
    return Features([str(i) for i in range(n)], vectors.astype(np.float32), labels)


def old_search(train: Features, val: Features, n_classes: int) -> float:
    """The search before issue 14: CLIP_benchmark's, every fit from scratch with max_iter 1000."""
    from sklearn.exceptions import ConvergenceWarning

    scores: dict[int, float] = {}

    def accuracy(i: int) -> float:
        if i not in scores:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model, _ = standardised_logistic(train.vectors, train.labels, float(C_GRID[i]), 1000, 0)
            predicted = linear_scores(linear_weights(model, n_classes), val.vectors).argmax(axis=1)
            scores[i] = float(np.mean(predicted == val.labels))
        return scores[i]

    peak = max(range(0, len(C_GRID), 16), key=lambda i: (accuracy(i), -i))
    span = 8
    while span >= 1:
        peak = max([max(peak - span, 0), peak, min(peak + span, len(C_GRID) - 1)], key=lambda i: (accuracy(i), -i))
        span //= 2
    return float(C_GRID[peak])


def test_accuracy(weights: dict[str, np.ndarray], test: Features) -> float:
    return float(np.mean(linear_scores(weights, test.vectors).argmax(axis=1) == test.labels))


def old_probe(train: Features, val: Features, n_classes: int) -> dict[str, np.ndarray]:
    """The old search, then its refit on train+val."""
    c = old_search(train, val, n_classes)
    both = np.concatenate([train.vectors, val.vectors]), np.concatenate([train.labels, val.labels])
    model, _ = standardised_logistic(*both, c, 1000, 0)
    return linear_weights(model, n_classes) | {"C": np.array(c)}


def run(size: str, with_old: bool) -> None:
    n_train, n_val, dim, n_classes = SIZES[size]
    train, val, test = (
        clustered(n, dim, n_classes, seed, NOISE[size]) for n, seed in ((n_train, 1), (n_val, 2), (TEST_ROWS[size], 3))
    )
    names = [f"class {i}" for i in range(n_classes)]
    seconds = math.inf
    for _ in range(REPEATS[size]):  # the best of a few runs: the machine is shared
        started = time.perf_counter()
        with threads_for(train.vectors.size + val.vectors.size):  # as `probe train` runs it
            weights, info = train_linear(train, val, names, Hyperparameters(), 0, None)
        seconds = min(seconds, time.perf_counter() - started)
    print(
        f"{size}: {n_train}+{n_val} x {dim}-d, {n_classes} classes | new: {seconds:.1f} s (search and refit), "
        f"{len(info['c_search'])} fits on {info['c_search_rows']} rows, C={info['C']:.3g}, "
        f"test top-1 {100 * test_accuracy(weights, test):.2f} %",
        flush=True,
    )
    if with_old:
        old_seconds = math.inf
        for _ in range(REPEATS[size]):
            started = time.perf_counter()
            with threads_for(train.vectors.size + val.vectors.size):
                old = old_probe(train, val, n_classes)
            old_seconds = min(old_seconds, time.perf_counter() - started)
        print(
            f"{size}: old: {old_seconds:.1f} s, C={float(old['C']):.3g}, test top-1 {100 * test_accuracy(old, test):.2f} % "
            f"(new is {old_seconds / seconds:.1f}x faster)",
            flush=True,
        )


def warm_imports() -> None:
    """torch (the probe's thread limits) and scikit-learn load before either search is timed."""
    import sklearn.linear_model
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401
    import torch  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-large", action="store_true", help="also run the old search at CIFAR-10 size")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--sizes", default="small,cifar10", help="comma-separated: small, cifar10")
    args = parser.parse_args()
    warm_imports()
    with threadpool_limits(limits=args.threads):
        for size in args.sizes.split(","):
            run(size, with_old=size == "small" or args.old_large)


if __name__ == "__main__":
    main()
