"""The linear probe's C search (issue 14 item 12): warm-started and coarse-to-fine, it finds a C whose
validation accuracy is within half a point of the best on the whole grid, each checked by scikit-learn
fits written here; its progress bar ends full; a large training split is searched on a stratified sample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clipsearch.tasks.probes import linear
from clipsearch.tasks.probes.features import Features, Hyperparameters

GRID = np.logspace(-6, 6, 97)


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def clustered(n: int, dim: int, n_classes: int, seed: int) -> Features:
    """Overlapping classes around fixed centres, so validation accuracy depends on C."""
    centres = np.random.default_rng(0).normal(size=(n_classes, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    vectors = centres[labels] + rng.normal(scale=2.5, size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Features([f"{i:05d}" for i in range(n)], vectors.astype(np.float32), labels)


def sklearn_accuracy(c: float, train: Features, val: Features) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(train.vectors.astype(np.float64), train.labels)
    return float((model.predict(val.vectors.astype(np.float64)) == val.labels).mean())


def test_search_is_within_half_a_point_of_the_exhaustive_grid_and_its_bar_ends_full():
    train, val = clustered(300, 12, 6, 1), clustered(1500, 12, 6, 2)
    calls = []
    c, curve, _ = linear.search_c(train, val, 6, 1000, 0, lambda *call: calls.append(call))

    exhaustive = {float(grid_c): sklearn_accuracy(grid_c, train, val) for grid_c in GRID}
    assert sklearn_accuracy(c, train, val) >= max(exhaustive.values()) - 0.005
    assert len(curve) < 20  # far fewer fits than the 97 of the grid
    for point in curve:  # each warm-started point scores as a fit from scratch (borderline rows may flip)
        assert point["val_top1"] == pytest.approx(exhaustive[point["C"]], abs=0.005)
    search_calls = [call for call in calls if call[0] == "linear: C search"]
    assert search_calls[-1][1] == search_calls[-1][2] == len(curve)  # the bar completes


def test_the_bar_ends_full_when_the_search_needs_fewer_fits_than_its_budget():
    """Labels with no signal: every C ties, the smallest wins, and its refinement re-asks cached points."""
    train, val = clustered(200, 8, 4, 1), clustered(200, 8, 4, 2)
    train.labels[:] = np.random.default_rng(0).integers(0, 4, len(train))
    calls = []
    _, curve, _ = linear.search_c(train, val, 4, 1000, 0, lambda *call: calls.append(call))
    assert calls[-1][1] == calls[-1][2] == len(curve) < 15  # done == total: the bar completes


def test_coarse_pass_stops_past_the_peak():
    train, val = clustered(300, 12, 6, 1), clustered(400, 12, 6, 2)
    _, curve, _ = linear.search_c(train, val, 6, 1000, 0)
    coarse = [p["C"] for p in curve if any(np.isclose(p["C"], GRID[::16]))]
    assert max(coarse) < 1e6  # the slow, barely regularised end of the grid is never fit here


def test_a_large_split_is_searched_on_a_stratified_sample_and_refit_on_all(monkeypatch):
    monkeypatch.setattr(linear, "SEARCH_MAX_ROWS", 400)
    train, val, test = clustered(1600, 12, 6, 1), clustered(600, 12, 6, 2), clustered(1500, 12, 6, 3)
    weights, info = linear.train_linear(train, val, [str(i) for i in range(6)], Hyperparameters(), 0, None)

    assert 390 <= info["c_search_rows"] <= 410
    assert info["C"] == pytest.approx(info["searched_C"] * info["c_search_rows"] / len(train))
    predicted = linear.linear_scores(weights, test.vectors).argmax(axis=1)
    both = Features(
        train.ids + val.ids, np.concatenate([train.vectors, val.vectors]), np.concatenate([train.labels, val.labels])
    )
    best = max(sklearn_accuracy(c, both, test) for c in GRID[32:72:4])
    assert float((predicted == test.labels).mean()) >= best - 0.01
