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


def recall_figure(
    curves: Mapping[str, Sequence[float]],
    title: str = "",
    marks: Sequence[int] = RECALL_MARKS,
    chance: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Recall@k against k (k = 1..K) for each named direction: the requested k marked and labelled with their
    value in percent (above the first curve's points, below the second's), and a random ranking's recall@k (`chance`, same names) as a dotted line of the same colour."""
    if not curves:
        raise ValueError("no recall curves to plot")
    figure = _new_figure(7, 5)
    axes = figure.add_subplot()
    for number, (name, curve) in enumerate(curves.items()):
        recall = np.asarray(curve, dtype=np.float64)
        ks = np.arange(1, len(recall) + 1)
        (line,) = axes.plot(ks, recall, label=name)
        marked = ks[np.isin(ks, marks)]
        axes.plot(marked, recall[marked - 1], "o", color=line.get_color())
        for k in marked:
            axes.annotate(
                f"{100 * recall[k - 1]:.1f}", (k, recall[k - 1]), textcoords="offset points",
                xytext=(4, 6) if number % 2 == 0 else (4, -13), fontsize=8, color=line.get_color(),
            )  # fmt: skip
        if chance and name in chance:
            random = np.asarray(chance[name], dtype=np.float64)[: len(recall)]
            axes.plot(ks[: len(random)], random, ":", color=line.get_color(), label=f"{name} (chance)")
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0.0, 1.08)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    return figure


def plot_recall_curves(
    curves: Mapping[str, Sequence[float]],
    out: Path,
    title: str = "",
    marks: Sequence[int] = RECALL_MARKS,
    chance: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """`recall_figure` as a PNG file at `out`."""
    return save_figure(recall_figure(curves, title, marks, chance), out)


def _series(rows: Sequence[Mapping[str, float]], x_key: str | None, key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the rows that carry a finite number under `key`; x is `x_key`'s value or the row number."""
    points = [
        (row[x_key] if x_key else i, row[key])
        for i, row in enumerate(rows)
        if isinstance(row.get(key), (int, float, np.number)) and math.isfinite(row[key])
    ]
    return [x for x, _ in points], [y for _, y in points]


def training_panels(keys: Sequence[str]) -> dict[str, list[str]]:
    """The panels of a training figure and the keys each shows, in order: losses (with the learning rate),
    retrieval recall@k ("val_*R@*"), zero-shot ("val_zs*"), other "val_*" metrics; empty panels left out."""
    groups = {
        "loss": [key for key in keys if "loss" in key],
        "retrieval recall@k (val)": [key for key in keys if key.startswith("val_") and "R@" in key],
        "zero-shot top-1 (val)": [key for key in keys if key.startswith("val_zs")],
    }
    shown = {key for group in groups.values() for key in group}
    groups["validation"] = [key for key in keys if key.startswith("val_") and key not in shown]
    return {name: group for name, group in groups.items() if group}


def _draw_metrics(axes, rows, x_key: str | None, keys: Sequence[str], chance: Mapping[str, float]) -> None:
    """Validation metrics of one panel: retrieval in one colour per k (solid t2i, dashed i2t), and each
    distinct chance level once as a dotted line: its metric's colour, or grey labelled "chance" when the
    panel's metrics share it (zero-shot's 1/classes)."""
    colours: dict[str, str] = {}
    levels: dict[float, list[tuple[str, str]]] = {}
    for key in keys:
        metric = key.removeprefix("val_")
        group = metric.split("_", 1)[-1] if "R@" in metric else metric  # t2i_R@5 and i2t_R@5 share a colour
        colour = colours.setdefault(group, f"C{len(colours) % 10}")
        style = "--" if metric.startswith("i2t") else "-"
        axes.plot(*_series(rows, x_key, key), style, marker="o", markersize=3, color=colour, label=metric)
        if metric in chance:
            levels.setdefault(float(chance[metric]), []).append((metric, colour))
    for level, owners in levels.items():
        shared = len(owners) > 1
        label = "chance" if shared else f"{owners[0][0]} chance"
        axes.axhline(level, color="gray" if shared else owners[0][1], linestyle=":", linewidth=1, label=label)
    axes.set_ylabel("score")


def training_figure(rows: Sequence[Mapping[str, float]], chance: Mapping[str, float] | None = None) -> Figure:
    """metrics.jsonl rows in panels over one epoch axis (see `training_panels`): losses with the learning
    rate on a twin axis, then each group of validation metrics with its chance levels, one legend per panel.

    The x axis is "epoch" if every row has one (step rows carry fractional epochs), else "step", else the
    row number. Each key is drawn from the rows that carry it.
    """
    if not rows:
        raise ValueError("no training rows to plot")
    x_key = next((key for key in ("epoch", "step") if all(key in row for row in rows)), None)
    present = list(dict.fromkeys(key for row in rows for key in row))
    panels = training_panels(present)
    if not panels:
        raise ValueError(f"no loss or val_* keys to plot among {present}")

    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(9, 2.6 * len(panels) + 0.6)
    axes_list = np.atleast_1d(figure.subplots(len(panels), 1, sharex=True))
    for axes, (name, keys) in zip(axes_list, panels.items()):
        axes.set_title(name)
        axes.grid(alpha=0.3)
        if name == "loss":
            for key in keys:
                axes.plot(*_series(rows, x_key, key), label=key)
            axes.set_ylabel("loss")
            handles, labels = axes.get_legend_handles_labels()
            if "lr" in present:
                lr_axes = axes.twinx()
                lr_axes.plot(*_series(rows, x_key, "lr"), color="gray", linestyle="--", linewidth=1, label="lr")
                lr_axes.set_ylabel("learning rate")
                more = lr_axes.get_legend_handles_labels()
                handles, labels = handles + more[0], labels + more[1]
            axes.legend(handles, labels, loc="upper right", fontsize=8)  # one legend: losses and lr
        else:
            _draw_metrics(axes, rows, x_key, keys, chance or {})
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the panel, not on it
    axes_list[-1].set_xlabel(x_key or "row")
    if x_key == "epoch":
        axes_list[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def plot_training_curves(
    rows: Sequence[Mapping[str, float]], out: Path, chance: Mapping[str, float] | None = None
) -> Path:
    """`training_figure` as a PNG file at `out`."""
    return save_figure(training_figure(rows, chance), out)
