"""The linear probe: scikit-learn LogisticRegression on standardised features, C searched on validation.

C is chosen on the validation split on CLIP_benchmark's grid (1e-6 .. 1e6, 8 steps per decade)
by a coarse-to-fine search: every 2 decades in rising C, stopped once two coarse points in a row
score no better than the best (past the peak; large C are the slow, barely regularised fits),
then refined around the peak with spans of 8, 4, 2, 1 grid steps. Every fit is warm-started from
the evaluated C nearest to it, on features standardised once, so most fits take a few L-BFGS
iterations. The probe is then refit on train+val with that C (from scratch: the same fit as
scikit-learn's pipeline). The fitted pipeline is kept as plain arrays (mean, scale, coef,
intercept), so applying a probe needs no scikit-learn.
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
# Coarse points in a row no better than the best before the rest of the coarse pass is skipped.
COARSE_PATIENCE = 2
# L-BFGS stopping tolerance (scikit-learn's default): tighter only moves decision values in
# the 4th digit, which changes no validation prediction worth a point.
LBFGS_TOL = 1e-4
# Above this many training rows C is searched on a seeded, class-stratified sample of them
# (each fit's cost grows with the rows; at 45k x 512 a full search took many minutes), with C
# rescaled to keep the per-row regularisation 1/(C·n) when the probe is refit on all rows.
SEARCH_MAX_ROWS = 8192


def search_sample(train: Features, seed: int) -> Features:
    """At most SEARCH_MAX_ROWS training rows for the C search, every class in its share (all rows when fewer)."""
    if len(train) <= SEARCH_MAX_ROWS:
        return train
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(train.labels):
        rows = np.flatnonzero(train.labels == label)
        share = max(1, round(len(rows) * SEARCH_MAX_ROWS / len(train)))
        keep.append(rows[np.sort(rng.permutation(len(rows))[:share])])
    return train.take(np.sort(np.concatenate(keep)))


def _logistic(c: float, max_iter: int, seed: int, start: Any = None):
    """A LogisticRegression for C = c, warm-started from another fit's solution when given."""
    from sklearn.linear_model import LogisticRegression  # heavy: only when a linear probe trains

    model = LogisticRegression(C=c, max_iter=max_iter, tol=LBFGS_TOL, random_state=seed, warm_start=start is not None)
    if start is not None:
        model.coef_, model.intercept_ = start.coef_.copy(), start.intercept_.copy()
    return model


def _fit(model, features: np.ndarray, labels: np.ndarray, max_iter: int) -> bool:
    """Fit in place; whether L-BFGS converged (recorded per point of the search, not warned about)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    return bool(np.all(model.n_iter_ < max_iter))


def standardised_logistic(
    features: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int, start: Any = None
):
    """A StandardScaler + LogisticRegression pipeline fit in float64, warm-started from `start` (a fitted
    LogisticRegression) when given; also says whether L-BFGS converged."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features.astype(np.float64))
    logistic = _logistic(c, max_iter, seed, start)
    converged = _fit(logistic, scaler.transform(features.astype(np.float64)), labels, max_iter)
    return make_pipeline(scaler, logistic), converged


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


class _CSearch:
    """The fits of one search: train/val standardised once, each fit warm-started from its nearest neighbour."""

    def __init__(
        self, train: Features, val: Features, n_classes: int, max_iter: int, seed: int, progress: ProgressFn | None
    ):
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(train.vectors.astype(np.float64))
        self.train_x, self.train_y = self.scaler.transform(train.vectors.astype(np.float64)), train.labels
        self.val_vectors, self.val_y, self.n_classes = val.vectors, val.labels, n_classes
        self.max_iter, self.seed, self.progress = max_iter, seed, progress
        self.evaluated: dict[int, dict[str, Any]] = {}
        self.models: dict[int, Any] = {}
        # At most: every coarse point, then three candidates per span (the peak is cached).
        self.budget = math.ceil(len(C_GRID) / C_COARSE_STEP) + 2 * int(math.log2(C_COARSE_STEP))

    def accuracy(self, i: int) -> float:
        if i not in self.evaluated:
            nearest = min(self.models, key=lambda j: abs(j - i), default=None)
            model = _logistic(float(C_GRID[i]), self.max_iter, self.seed, self.models.get(nearest))
            converged = _fit(model, self.train_x, self.train_y, self.max_iter)
            self.models[i] = model
            scores = linear_scores(linear_weights(self.pipeline(i), self.n_classes), self.val_vectors)
            top1 = topk_accuracy(scores, self.val_y, 1)
            self.evaluated[i] = {"C": float(C_GRID[i]), "val_top1": top1, "converged": converged}
            if self.progress:
                status = f"C={C_GRID[i]:.3g} val top-1 {top1:.3f}"
                self.progress("linear: C search", len(self.evaluated), self.budget, status)
        return self.evaluated[i]["val_top1"]

    def best(self, candidates: Sequence[int]) -> int:
        """The highest validation top-1; ties go to the smaller C (stronger regularisation)."""
        return max(candidates, key=lambda i: (self.accuracy(i), -i))

    def coarse_peak(self) -> int:
        peak, worse = None, 0
        for i in range(0, len(C_GRID), C_COARSE_STEP):
            score = self.accuracy(i)  # evaluated in rising C: each fit warm-starts from the one before
            if peak is None or score > self.accuracy(peak):
                peak, worse = i, 0
            else:
                worse += 1
                if worse >= COARSE_PATIENCE:
                    break
        return peak

    def pipeline(self, i: int):
        from sklearn.pipeline import make_pipeline

        return make_pipeline(self.scaler, self.models[i])


def search_c(
    train: Features, val: Features, n_classes: int, max_iter: int, seed: int, progress: ProgressFn | None = None
) -> tuple[float, list[dict[str, Any]], Any]:
    """The search for C on the validation split: (best C, every point evaluated, sorted by C, the model
    fit on train with the best C).

    Coarse: every C_COARSE_STEP-th grid point in rising C, until COARSE_PATIENCE
    points in a row are no better than the best. Then spans of 8, 4, 2, 1 grid
    steps: the peak moves to a neighbour when it scores higher. Ties go to the
    smaller C, so the result is the point with the highest validation top-1
    among all evaluated, the smallest C among equals.
    """
    search = _CSearch(train, val, n_classes, max_iter, seed, progress)
    peak = search.coarse_peak()
    span = C_COARSE_STEP // 2
    while span >= 1:
        peak = search.best([max(peak - span, 0), peak, min(peak + span, len(C_GRID) - 1)])
        span //= 2
    if progress:  # fewer fits than the budget when neighbours were cached or the coarse pass stopped early
        done = len(search.evaluated)
        progress("linear: C search", done, done, f"C={C_GRID[peak]:.3g} chosen")
    curve = [search.evaluated[i] for i in sorted(search.evaluated)]
    return float(C_GRID[peak]), curve, search.pipeline(peak)


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
    sample = search_sample(train, seed)
    searched_c, curve, selected = search_c(sample, val, n_classes, hyper.max_iter, seed, progress)
    # Validation metrics of the model that did not see the validation split; the saved one is refit on both.
    validation = validation_summary(
        linear_scores(linear_weights(selected, n_classes), val.vectors), val.labels, class_names
    )
    # The same per-row regularisation on all rows; a sampled search's fit is a close start for the refit.
    c = searched_c * len(sample) / len(train)
    if progress:
        progress("linear: refit on train+val", 0, 1, f"C={c:.3g}")
    both = np.concatenate([train.vectors, val.vectors]), np.concatenate([train.labels, val.labels])
    start = selected[-1] if len(sample) < len(train) else None
    final, converged = standardised_logistic(*both, c, hyper.max_iter, seed, start)
    if progress:
        progress("linear: refit on train+val", 1, 1, f"C={c:.3g}")
    info = {
        "C": c,
        "c_search": curve,
        "searched_C": searched_c,  # the C of the search's curve (on c_search_rows training rows)
        "c_search_rows": len(sample),
        "c_grid": {
            "min": float(C_GRID[0]),
            "max": float(C_GRID[-1]),
            "points": len(C_GRID),
            "coarse_step": C_COARSE_STEP,
            "coarse_patience": COARSE_PATIENCE,
            "warm_start": True,
            "tol": LBFGS_TOL,
        },
        "standardised": True,
        "refit_on": "train+val",
        "refit_converged": converged,
        "validation": validation,
    }
    return linear_weights(final, n_classes), info
