"""metrics.py against independent computations: brute-force sorting and scikit-learn."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from clipsearch.tasks import metrics

# --------------------------------------------------------------------------
# Independent reference: the full score matrix, a stable argsort, and the
# any-true-match rule applied to the sorted lists directly.
# --------------------------------------------------------------------------


def brute_force_ranks(queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    return np.array([np.flatnonzero(np.isin(order[i], positives[i]))[0] + 1 for i in range(len(queries))])


def brute_force_recall(queries: np.ndarray, gallery: np.ndarray, positives: list[np.ndarray], k: int) -> float:
    top = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([np.isin(top[i], positives[i]).any() for i in range(len(queries))]))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dyadic(x: np.ndarray) -> np.ndarray:
    """Round to multiples of 1/64: every dot product is then exact in float32 in any
    summation order, so the blocked and full matrix products agree bit for bit
    on any BLAS, and equal scores (ties) are real ties."""
    return (np.round(x * 64) / 64).astype(np.float32)


def caption_dataset(rng: np.random.Generator, caption_image_index: np.ndarray, n_images: int, noise: float = 3.0):
    """Unit image vectors, and captions = their image plus noise (recall well between 0 and 1)."""
    images = unit(rng.standard_normal((n_images, 64)))
    captions = unit(images[caption_image_index] + noise * unit(rng.standard_normal((len(caption_image_index), 64))))
    return dyadic(images), dyadic(captions)


def captions_of(caption_image_index: np.ndarray, n_images: int) -> list[np.ndarray]:
    return [np.flatnonzero(caption_image_index == i) for i in range(n_images)]


# --------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------


def test_retrieval_report_equals_brute_force_on_500_images_x_5_captions():
    rng = np.random.default_rng(0)
    n_images = 500
    caption_image_index = np.repeat(np.arange(n_images), 5)
    rng.shuffle(caption_image_index)  # captions need not be grouped by image
    images, captions = caption_dataset(rng, caption_image_index, n_images)

    # block_size 300 does not divide 2500 captions or 500 images.
    report = metrics.retrieval_report(images, captions, caption_image_index, block_size=300)

    t2i_positives = [np.array([i]) for i in caption_image_index]
    i2t_positives = captions_of(caption_image_index, n_images)
    for direction, queries, gallery, positives in (
        ("text_to_image", captions, images, t2i_positives),
        ("image_to_text", images, captions, i2t_positives),
    ):
        got = report[direction]
        assert list(got) == ["R@1", "R@5", "R@10", "mean_rank", "median_rank"]
        for k in (1, 5, 10):
            assert got[f"R@{k}"] == brute_force_recall(queries, gallery, positives, k)
        ranks = brute_force_ranks(queries, gallery, positives)
        assert got["mean_rank"] == float(np.mean(ranks))
        assert got["median_rank"] == float(np.median(ranks))
        assert 0.2 < got["R@1"] < got["R@10"] < 1.0  # the data is neither trivial nor hopeless
        curve = report["curves"][direction]
        assert len(curve) == 50
        assert curve[0] == got["R@1"] and curve[4] == got["R@5"] and curve[9] == got["R@10"]
    assert report["n_images"] == 500 and report["n_captions"] == 2500 and report["n_image_queries"] == 500


def test_varying_caption_counts_any_match_rule_differs_from_first_caption_rule():
    rng = np.random.default_rng(1)
    n_images = 300
    counts = rng.integers(1, 8, size=n_images)  # 1..7 captions per image
    counts[::25] = 0  # and some images with none
    caption_image_index = np.repeat(np.arange(n_images), counts)
    images, captions = caption_dataset(rng, caption_image_index, n_images)

    report = metrics.retrieval_report(images, captions, caption_image_index, block_size=64)

    with_captions = np.flatnonzero(counts > 0)
    all_positives = captions_of(caption_image_index, n_images)
    any_match = [all_positives[i] for i in with_captions]
    first_only = [p[:1] for p in any_match]
    queries = images[with_captions]
    for k in (1, 5, 10):
        expected = brute_force_recall(queries, captions, any_match, k)
        assert report["image_to_text"][f"R@{k}"] == expected
        assert expected > brute_force_recall(queries, captions, first_only, k)
    assert report["n_image_queries"] == len(with_captions) < n_images
    assert report["n_images"] == n_images


def test_hand_built_case_with_captionless_image():
    # Four one-hot images; image 3 has no caption, image 0 has three.
    images = np.eye(4, dtype=np.float32)
    captions = np.array(
        [
            [0.1, 0.9, 0.0, 0.0],  # image 0, but closer to image 1
            [0.0, 1.0, 0.0, 0.0],  # image 1
            [0.8, 0.0, 0.0, 0.0],  # image 0, its best caption
            [0.0, 0.0, 0.5, 0.0],  # image 2
            [0.3, 0.0, 0.0, 0.0],  # image 0
        ],
        dtype=np.float32,
    )
    caption_image_index = np.array([0, 1, 0, 2, 0])

    report = metrics.retrieval_report(images, captions, caption_image_index, ks=(1, 2))

    # text->image ranks: 2, 1, 1, 1, 1.
    assert report["text_to_image"] == {"R@1": 0.8, "R@2": 1.0, "mean_rank": 1.2, "median_rank": 1.0}
    # image->text: image 0's first caption ranks 3rd, but caption 2 ranks 1st; image 3 is not a query.
    assert report["image_to_text"] == {"R@1": 1.0, "R@2": 1.0, "mean_rank": 1.0, "median_rank": 1.0}
    assert report["n_image_queries"] == 3


def test_ties_follow_stable_descending_order():
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    gallery = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [2, 0]], dtype=np.float32)  # scores 1, 1, 0, 1, 2
    for positives, expected_rank in (([3], 4), ([1, 3], 3), ([3, 1], 3), ([2], 5), ([0], 2), ([4, 0], 1)):
        got = metrics.first_positive_ranks(query, gallery, [np.array(positives)])
        assert got.tolist() == [expected_rank]
        assert got.tolist() == brute_force_ranks(query, gallery, [np.array(positives)]).tolist()


def test_many_ties_match_brute_force():
    rng = np.random.default_rng(2)
    # Tiny integer vectors: scores take few distinct values, so nearly every rank involves ties.
    queries = rng.integers(-1, 2, size=(200, 4)).astype(np.float32)
    gallery = rng.integers(-1, 2, size=(150, 4)).astype(np.float32)
    positives = [rng.choice(150, size=rng.integers(1, 6), replace=False) for _ in range(200)]
    expected = brute_force_ranks(queries, gallery, positives)
    assert np.array_equal(metrics.first_positive_ranks(queries, gallery, positives, block_size=17), expected)


@pytest.mark.parametrize("block_size", [1, 7, 36, 37, 38, 1024])
def test_block_size_does_not_change_ranks(block_size):
    rng = np.random.default_rng(3)
    queries = dyadic(unit(rng.standard_normal((37, 16))))
    gallery = dyadic(unit(rng.standard_normal((90, 16))))
    positives = [rng.choice(90, size=rng.integers(1, 8), replace=False) for _ in range(37)]
    expected = brute_force_ranks(queries, gallery, positives)
    assert np.array_equal(metrics.first_positive_ranks(queries, gallery, positives, block_size=block_size), expected)


def test_positives_as_list_or_csr_agree():
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    gallery = rng.standard_normal((30, 8)).astype(np.float32)
    positives = [rng.choice(30, size=rng.integers(1, 5), replace=False) for _ in range(20)]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in positives])])
    csr = (indptr, np.concatenate(positives))
    assert np.array_equal(
        metrics.first_positive_ranks(queries, gallery, positives, block_size=6),
        metrics.first_positive_ranks(queries, gallery, csr, block_size=6),
    )


def test_query_without_positives_is_refused():
    with pytest.raises(ValueError, match="query 1 has no positives"):
        metrics.first_positive_ranks(np.ones((2, 3)), np.ones((4, 3)), [np.array([0]), np.array([], dtype=int)])
    with pytest.raises(ValueError, match="must lie in"):
        metrics.first_positive_ranks(np.ones((1, 3)), np.ones((4, 3)), [np.array([4])])


def test_recall_helpers():
    ranks = np.array([1, 3, 3, 7, 12, 2])
    assert metrics.recall_at_k(ranks, (1, 3, 10)) == {"R@1": 1 / 6, "R@3": 4 / 6, "R@10": 5 / 6}
    curve = metrics.recall_curve(ranks, max_k=12)
    assert np.allclose(curve, [np.mean(ranks <= k) for k in range(1, 13)])
    assert metrics.mean_rank(ranks) == 28 / 6
    assert metrics.median_rank(ranks) == 3.0
    with pytest.raises(ValueError):
        metrics.recall_at_k(ranks, (0,))
    with pytest.raises(ValueError):
        metrics.mean_rank(np.array([], dtype=int))


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------


def classification_data(seed: int = 5, n: int = 400, n_classes: int = 7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes - 1, size=n)  # the last class never occurs
    scores = rng.standard_normal((n, n_classes))
    scores[np.arange(n), labels] += 1.0  # better than chance, short of perfect
    return scores, labels


def test_topk_accuracy_matches_sklearn():
    scores, labels = classification_data()
    for k in (1, 3, 5):
        expected = skm.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(scores.shape[1]))
        assert metrics.topk_accuracy(scores, labels, k) == pytest.approx(expected, abs=1e-12)


def test_topk_predictions_break_ties_by_lower_class_index():
    scores = np.array([[0.5, 0.5, 0.1, 0.5], [0.0, 0.2, 0.9, 0.2]])
    assert metrics.topk_predictions(scores, 3).tolist() == [[0, 1, 3], [2, 1, 3]]
    assert metrics.topk_accuracy(scores, np.array([1, 3]), 2) == 0.5  # class 3 loses both ties
    with pytest.raises(ValueError):
        metrics.topk_predictions(scores, 5)


def test_confusion_and_recall_match_sklearn():
    scores, labels = classification_data()
    n_classes = scores.shape[1]
    predictions = scores.argmax(axis=1)
    confusion = metrics.confusion_matrix(labels, predictions, n_classes)
    assert confusion.dtype == np.int64
    assert np.array_equal(confusion, skm.confusion_matrix(labels, predictions, labels=np.arange(n_classes)))

    recalls = metrics.per_class_recall(confusion)
    present = np.unique(labels)
    assert np.allclose(recalls[present], skm.recall_score(labels, predictions, labels=present, average=None))
    assert np.isnan(recalls[n_classes - 1])  # no samples of the last class

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that a predicted class never occurs
        balanced = skm.balanced_accuracy_score(labels, predictions)
    assert metrics.mean_per_class_recall(confusion) == pytest.approx(balanced, abs=1e-12)


def test_classification_report_is_json_ready_and_consistent():
    scores, labels = classification_data()
    names = [f"class{i}" for i in range(scores.shape[1])]
    report = metrics.classification_report(scores, labels, names)

    json.dumps(report, allow_nan=False)  # strict JSON: no numpy types, no NaN
    assert report["n"] == len(labels)
    assert report["top1"] == pytest.approx(skm.accuracy_score(labels, scores.argmax(axis=1)), abs=1e-12)
    assert report["top5"] == pytest.approx(
        skm.top_k_accuracy_score(labels, scores, k=5, labels=np.arange(len(names))), abs=1e-12
    )
    assert report["top5_k"] == 5
    expected_confusion = skm.confusion_matrix(labels, scores.argmax(axis=1), labels=np.arange(len(names)))
    assert report["confusion"] == expected_confusion.tolist()
    assert [c["name"] for c in report["per_class"]] == names
    assert [c["n"] for c in report["per_class"]] == np.bincount(labels, minlength=len(names)).tolist()
    assert report["per_class"][-1]["accuracy"] is None
    diag = np.diag(expected_confusion)
    for c, entry in enumerate(report["per_class"][:-1]):
        assert entry["accuracy"] == pytest.approx(diag[c] / entry["n"])


def test_classification_report_with_fewer_than_five_classes():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    report = metrics.classification_report(scores, np.array([0, 1, 1]), ["a", "b", "c"])
    assert report["top1"] == pytest.approx(2 / 3)
    assert report["top5"] == 1.0 and report["top5_k"] == 3
    assert report["mean_per_class_recall"] == 0.75  # a: 1/1, b: 1/2, c: no samples


def test_memory_stays_bounded_by_the_block():
    import tracemalloc

    rng = np.random.default_rng(6)
    queries = rng.standard_normal((4000, 8)).astype(np.float32)
    gallery = rng.standard_normal((2000, 8)).astype(np.float32)
    positives = (np.arange(4001), rng.integers(0, 2000, size=4000))
    full_matrix_bytes = 4000 * 2000 * 4  # 32 MB

    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    metrics.first_positive_ranks(queries, gallery, positives, block_size=100)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < full_matrix_bytes / 8
