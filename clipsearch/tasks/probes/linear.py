"""The linear probe: scikit-learn LogisticRegression on standardised features, C searched on validation.

C is chosen on the validation split by CLIP_benchmark's search (a log grid of 8 steps per
decade, evaluated every 2 decades, then refined around the peak with halving spans), then
the probe is refit on train+val with that C. The fitted pipeline is kept as plain arrays
(mean, scale, coef, intercept), so applying a probe needs no scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ClipsearchError
from ..metrics import topk_accuracy
from .features import Features, Hyperparameters, ProgressFn, validation_summary

# C grid of the linear search: 1e-6 .. 1e6, 8 steps per decade (CLIP_benchmark's
# spacing; the CLIP paper swept the same range). The search starts every 2 decades.
C_GRID = np.logspace(-6, 6, 97)
C_COARSE_STEP = 16


def standardised_logistic(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int):
    """A StandardScaler + LogisticRegression pipeline fit in float64; also says whether L-BFGS converged."""
    from sklearn.exceptions import ConvergenceWarning  # heavy: only when a linear probe trains
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per point of the search instead
        model.fit(features.astype(np.float64), labels)
    return model, bool(np.all(model[-1].n_iter_ < max_iter))


def linear_weights(model, n_classes: int) -> dict[str, np.ndarray]:
    """The pipeline as plain arrays, one coefficient row per class (binary fits have one row)."""
    scaler, logistic = model[0], model[-1]
    if list(logistic.classes_) != list(range(n_classes)):
        raise ClipsearchError("every class needs training images for a linear probe")
    coef, intercept = logistic.coef_, logistic.intercept_
    if n_classes == 2:  # class 1 wins exactly when w·x + b > 0, as in scikit-learn
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": coef, "intercept": intercept}


def linear_scores(weights: dict[str, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """(n, classes) decision values of a linear probe's arrays for vectors (n, dim)."""
    # Same operations, in the same order and precision, as the scikit-learn pipeline's decision_function.
    standardised = (vectors.astype(np.float64) - weights["mean"]) / weights["scale"]
    return standardised @ weights["coef"].T + weights["intercept"]


def search_c(
    train: Features, val: Features, n_classes: int, max_iter: int, seed: int, progress: ProgressFn | None = None
) -> tuple[float, list[dict[str, Any]], Any]:
    """CLIP_benchmark's search for C on the validation split: (best C, every point evaluated, sorted by C,
    the model fit on train with the best C).

    Coarse: every C_COARSE_STEP-th grid point. Then spans of 8, 4, 2, 1 grid
    steps: the peak moves to a neighbour when it scores higher. Ties go to the
    smaller C (stronger regularisation), so the result is the point with the
    highest validation top-1 among all evaluated, the smallest C among equals.
    """
    evaluated: dict[int, dict[str, Any]] = {}
    models: dict[int, Any] = {}
    coarse = list(range(0, len(C_GRID), C_COARSE_STEP))
    budget = len(coarse) + 2 * int(math.log2(C_COARSE_STEP))  # at most this many fits

    def accuracy(i: int) -> float:
        if i not in evaluated:
            models[i], converged = standardised_logistic(train.vectors, train.labels, float(C_GRID[i]), max_iter, seed)
            scores = linear_scores(linear_weights(models[i], n_classes), val.vectors)
            top1 = topk_accuracy(scores, val.labels, 1)
            evaluated[i] = {"C": float(C_GRID[i]), "val_top1": top1, "converged": converged}
            if progress:
                progress("linear: C search", len(evaluated), budget, f"C={C_GRID[i]:.3g} val top-1 {top1:.3f}")
        return evaluated[i]["val_top1"]

    def best(candidates: list[int]) -> int:
        return max(candidates, key=lambda i: (accuracy(i), -i))

    peak = best(coarse)
    span = C_COARSE_STEP // 2
    while span >= 1:
        peak = best([max(peak - span, 0), peak, min(peak + span, len(C_GRID) - 1)])
        span //= 2
    return float(C_GRID[peak]), [evaluated[i] for i in sorted(evaluated)], models[peak]


def train_linear(
    train: Features,
    val: Features,
    class_names: Sequence[str],
    hyper: Hyperparameters,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(weights, training record): the searched C, the search curve, validation numbers, the refit."""
    n_classes = len(class_names)
    c, curve, selected = search_c(train, val, n_classes, hyper.max_iter, seed, progress)
    # Validation metrics of the model that did not see the validation split; the saved one is refit on both.
    validation = validation_summary(
        linear_scores(linear_weights(selected, n_classes), val.vectors), val.labels, class_names
    )
    if progress:
        progress("linear: refit on train+val", 0, 1, f"C={c:.3g}")
    both = np.concatenate([train.vectors, val.vectors]), np.concatenate([train.labels, val.labels])
    final, converged = standardised_logistic(*both, c, hyper.max_iter, seed)
    if progress:
        progress("linear: refit on train+val", 1, 1, f"C={c:.3g}")
    info = {
        "C": c,
        "c_search": curve,
        "c_grid": {
            "min": float(C_GRID[0]),
            "max": float(C_GRID[-1]),
            "points": len(C_GRID),
            "coarse_step": C_COARSE_STEP,
        },
        "standardised": True,
        "refit_on": "train+val",
        "refit_converged": converged,
        "validation": validation,
    }
    return linear_weights(final, n_classes), info
