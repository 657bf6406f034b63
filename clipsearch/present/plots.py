"""Plots of results (confusion matrix, recall@k curves, training curves).

Each plot is a public `*_figure` function that builds a matplotlib `Figure` (tests read its
axes: image cells, line data, labels), and a `plot_*` function that renders that figure to a
PNG file, atomically. matplotlib's object-oriented `Figure` rendered by Agg, never pyplot: no
display or global backend state is touched. matplotlib is imported when a figure is built, not
with this module, so commands that plot nothing never pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_DPI = 100
# Above this many classes the confusion matrix cells are too small to annotate.
MAX_ANNOTATED_CLASSES = 20
RECALL_MARKS = (1, 5, 10)  # the k values marked on a recall@k curve


def save_figure(figure: Figure, out: Path) -> Path:
    """Render `figure` to a PNG file at `out` (atomically); returns `out`."""
    return atomic_write(Path(out), lambda f: figure.savefig(f, format="png", dpi=PLOT_DPI))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def confusion_values(confusion: np.ndarray, normalize: bool = True) -> np.ndarray:
    """The cells a confusion plot shows: counts, or each row divided by its sum (0 for an empty row)."""
    confusion = np.asarray(confusion)
    if not normalize:
        return confusion.astype(np.float64)
    support = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)


def confusion_figure(
    confusion: np.ndarray, class_names: Sequence[str], normalize: bool = True, title: str = ""
) -> Figure:
    """Heat map of a confusion matrix (rows = true class), optionally row-normalised.

    Up to MAX_ANNOTATED_CLASSES classes every cell shows its value; beyond that
    (e.g. CIFAR-100) cells are left bare and tick labels shrink to stay legible.
    """
    confusion = np.asarray(confusion)
    n_classes = len(class_names)
    if confusion.shape != (n_classes, n_classes):
        raise ValueError(f"confusion shape {confusion.shape} does not match {n_classes} class names")
    values = confusion_values(confusion, normalize)

    side = min(max(6.0, 0.16 * n_classes + 4.0), 22.0)
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of true class" if normalize else "count")
    # Tick labels about half a cell high (72 points per inch), never above 9 pt.
    tick_size = min(9.0, max(4.0, 0.55 * side * 72 / n_classes))
    ticks = np.arange(n_classes)
    axes.set_xticks(ticks, [str(name) for name in class_names], rotation=90, fontsize=tick_size)
    axes.set_yticks(ticks, [str(name) for name in class_names], fontsize=tick_size)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if n_classes <= MAX_ANNOTATED_CLASSES:
        threshold = values.max() / 2
        for (row, col), value in np.ndenumerate(values):
            label = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > threshold else "black"
            axes.text(col, row, label, ha="center", va="center", fontsize=8, color=colour)
    return figure


def plot_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str],
    out: Path,
    normalize: bool = True,
    title: str = "",
) -> Path:
    """`confusion_figure` as a PNG file at `out`."""
    return save_figure(confusion_figure(confusion, class_names, normalize, title), out)


def recall_figure(curves: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Recall@k against k (k = 1..K) for each named direction, with R@1/5/10 marked."""
    if not curves:
        raise ValueError("no recall curves to plot")
    figure = _new_figure(7, 5)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        recall = np.asarray(curve, dtype=np.float64)
        ks = np.arange(1, len(recall) + 1)
        (line,) = axes.plot(ks, recall, label=name)
        marked = ks[np.isin(ks, RECALL_MARKS)]
        axes.plot(marked, recall[marked - 1], "o", color=line.get_color())
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    return figure


def plot_recall_curves(curves: Mapping[str, Sequence[float]], out: Path, title: str = "") -> Path:
    """`recall_figure` as a PNG file at `out`."""
    return save_figure(recall_figure(curves, title), out)


def _series(rows: Sequence[Mapping[str, float]], x_key: str | None, key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the rows that carry a finite number under `key`; x is `x_key`'s value or the row number."""
    points = [
        (row[x_key] if x_key else i, row[key])
        for i, row in enumerate(rows)
        if isinstance(row.get(key), (int, float, np.number)) and math.isfinite(row[key])
    ]
    return [x for x, _ in points], [y for _, y in points]


def training_figure(rows: Sequence[Mapping[str, float]]) -> Figure:
    """Loss panel (keys containing "loss", learning rate on a twin axis) over a
    metrics panel (other "val_*" keys), from metrics.jsonl rows.

    The x axis is "step" if every row has one, else "epoch", else the row
    number. Each key is drawn from the rows that carry it, so validation rows
    logged once an epoch and training rows logged every few steps mix freely.
    Keys that are neither losses, "val_*" metrics nor "lr" are not plotted.
    """
    if not rows:
        raise ValueError("no training rows to plot")
    x_key = next((key for key in ("step", "epoch") if all(key in row for row in rows)), None)
    present = list(dict.fromkeys(key for row in rows for key in row))
    loss_keys = [key for key in present if "loss" in key]
    metric_keys = [key for key in present if key.startswith("val_") and "loss" not in key]
    if not loss_keys and not metric_keys:
        raise ValueError(f"no loss or val_* keys to plot among {present}")

    figure = _new_figure(9, 7)
    loss_axes, metric_axes = figure.subplots(2, 1, sharex=True)
    for key in loss_keys:
        loss_axes.plot(*_series(rows, x_key, key), label=key)
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("loss")
    if "lr" in present:
        lr_axes = loss_axes.twinx()
        lr_axes.plot(*_series(rows, x_key, "lr"), color="gray", linestyle="--", linewidth=1, label="lr")
        lr_axes.set_ylabel("learning rate")
        lr_axes.legend(loc="upper center")
    for key in metric_keys:
        metric_axes.plot(*_series(rows, x_key, key), marker="o", markersize=3, label=key)
    metric_axes.set_ylabel("validation metric")
    metric_axes.set_title("validation")
    metric_axes.set_xlabel(x_key or "row")
    for axes, keys in ((loss_axes, loss_keys), (metric_axes, metric_keys)):
        axes.grid(alpha=0.3)
        if keys:
            axes.legend(loc="best", fontsize=8)
    return figure


def plot_training_curves(rows: Sequence[Mapping[str, float]], out: Path) -> Path:
    """`training_figure` as a PNG file at `out`."""
    return save_figure(training_figure(rows), out)
