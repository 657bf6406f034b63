"""present/tables.py: the rendered tables show the report's numbers under the right row names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from clipsearch.present import tables
from clipsearch.tasks import metrics

CLASSES = ["cat", "dog", "[bird]"]  # brackets: a name that rich markup would eat if not escaped


def rendered(table) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def row(text: str, label: str) -> str:
    """The rendered table line whose first cell is ``label``."""
    lines = [line for line in text.splitlines() if line.strip("│┃ ").startswith(label)]
    assert lines, f"no row {label!r} in\n{text}"
    return lines[0]


def small_report(seed: int, class_names=CLASSES) -> dict:
    rng = np.random.default_rng(seed)
    n_classes = len(class_names)
    labels = rng.integers(0, n_classes, size=60)
    scores = rng.standard_normal((60, n_classes))
    scores[np.arange(60), labels] += 1.0
    return metrics.classification_report(scores, labels, class_names)


def test_classification_table_shows_the_numbers():
    result = small_report(0)
    text = rendered(tables.classification_table(result, "CIFAR-3 zero-shot"))

    assert "CIFAR-3 zero-shot" in text
    for label, key in (("top-1", "top1"), ("top-3", "top5"), ("mean per-class recall", "mean_per_class_recall")):
        assert f"{100 * result[key]:.2f}" in row(text, label)
    assert "top-5" not in text  # 3 classes: the second accuracy is top-3
    assert str(result["n"]) in row(text, "top-1")
    for entry in result["per_class"]:
        line = row(text, entry["name"])
        assert str(entry["n"]) in line and f"{100 * entry['accuracy']:.2f}" in line


def test_comparison_table_puts_methods_side_by_side():
    results = {"zero-shot": small_report(1), "linear probe": small_report(2)}
    text = rendered(tables.comparison_table(results, CLASSES))

    header = next(line for line in text.splitlines() if "zero-shot" in line)
    assert "linear probe" in header
    for label, key in (("top-1", "top1"), ("top-3", "top5"), ("mean per-class recall", "mean_per_class_recall")):
        line = row(text, label)
        for result in results.values():
            assert f"{100 * result[key]:.2f}" in line
    bird = row(text, "[bird]")
    for result in results.values():
        assert f"{100 * result['per_class'][2]['accuracy']:.2f}" in bird


@pytest.mark.parametrize("n_classes", [2, 3, 4, 5, 10])
def test_comparison_and_classification_tables_name_the_same_top_k(n_classes):
    """Bug 2 of issue 10: the comparison table called top-min(5, C) "top-5" whatever C was."""
    names = [f"class {i}" for i in range(n_classes)]
    results = {"zero-shot": small_report(3, names), "linear": small_report(4, names)}
    expected = f"top-{min(5, n_classes)}"

    comparison = rendered(tables.comparison_table(results, names))
    single = rendered(tables.classification_table(results["zero-shot"], "one method"))

    for text in (comparison, single):
        assert row(text, expected)
        assert sum(line.strip("│┃ ").startswith("top-") for line in text.splitlines()) == 2  # top-1 and top-k only
    line = row(comparison, expected)
    assert all(f"{100 * result['top5']:.2f}" in line for result in results.values())


def test_comparison_of_reports_over_different_class_counts_is_refused():
    with pytest.raises(ValueError, match="top-3, top-5"):
        tables.comparison_table({"a": small_report(0), "b": small_report(0, [f"c{i}" for i in range(6)])}, CLASSES)
    with pytest.raises(ValueError):
        tables.comparison_table({}, CLASSES)


def test_label_counts_table_shows_counts_shares_and_total():
    text = rendered(tables.label_counts_table({"cat": 3, "[dog]": 1}, "labels"))

    assert "3" in row(text, "cat") and "75.0" in row(text, "cat")
    assert "25.0" in row(text, "[dog]")
    assert "4" in row(text, "total")
