"""Presentation helpers for the CLI and TUI: contact sheets, plots, tables, JSON.

Knows nothing of models or stores; it only draws what it is handed. Every file
is written atomically (temp file in the same folder, then ``os.replace``), so
a crash never leaves a half-written PNG or JSON where a good one was.

Plots use matplotlib's object-oriented ``Figure`` directly (rendered by Agg),
never pyplot, so no display or global backend state is ever touched.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from rich.markup import escape
from rich.table import Table

# Contact sheet layout, in pixels.
SHEET_MARGIN = 8
CAPTION_FONT_SIZE = 13
TITLE_FONT_SIZE = 18
SHEET_BACKGROUND = (255, 255, 255)
THUMB_BACKGROUND = (32, 32, 32)
TEXT_COLOR = (20, 20, 20)

PLOT_DPI = 100
# Above this many classes the confusion matrix cells are too small to annotate.
MAX_ANNOTATED_CLASSES = 20


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def _write_atomically(out: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Run ``write`` on a temp file next to ``out``, then rename it into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out


def _to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python, tuples to lists, NaN/inf to None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(key): _to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON, atomically; numpy values are converted."""
    text = json.dumps(_to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return _write_atomically(path, lambda f: f.write(text.encode("utf-8")))


# --------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    out: Path,
    thumb: int = 192,
    columns: int | None = None,
    title: str | None = None,
) -> Path:
    """A PNG grid of letterboxed thumbnails, each with a one-line caption under it.

    Width is ``columns * thumb + (columns + 1) * SHEET_MARGIN``. Captions too
    wide for a thumbnail are cut with "...". Images smaller than ``thumb`` are
    upscaled with NEAREST so tiny ones (32x32 CIFAR) stay crisp rather than blurred.
    Default columns: all in one row up to 4, else ceil(sqrt(n)) (10 for 100).
    """
    if not images:
        raise ValueError("contact sheet needs at least one image")
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 pixels, got {thumb}")
    n = len(images)
    if columns is None:
        columns = min(n, max(4, math.ceil(math.sqrt(n))))
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    rows = math.ceil(n / columns)

    caption_font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    title_font = ImageFont.load_default(size=TITLE_FONT_SIZE)
    caption_height = _line_height(caption_font) + 6
    title_height = _line_height(title_font) + SHEET_MARGIN if title else 0
    cell_height = thumb + caption_height

    sheet = Image.new(
        "RGB",
        (columns * thumb + (columns + 1) * SHEET_MARGIN, title_height + rows * (cell_height + SHEET_MARGIN) + SHEET_MARGIN),
        SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        sheet_width = sheet.width - 2 * SHEET_MARGIN
        draw.text((SHEET_MARGIN, SHEET_MARGIN), _fit_text(title, title_font, sheet_width), font=title_font, fill=TEXT_COLOR)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x = SHEET_MARGIN + (i % columns) * (thumb + SHEET_MARGIN)
        y = title_height + SHEET_MARGIN + (i // columns) * (cell_height + SHEET_MARGIN)
        sheet.paste(_letterboxed_thumbnail(image, thumb), (x, y))
        draw.text((x, y + thumb + 3), _fit_text(caption, caption_font, thumb), font=caption_font, fill=TEXT_COLOR)
    return _write_atomically(out, lambda f: sheet.save(f, format="PNG"))


def _letterboxed_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled to fit a size x size square (aspect kept), centred on a dark background."""
    rgba = image.convert("RGBA")  # keeps transparency so it composites onto the background
    scale = size / max(rgba.size)
    fitted = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    rgba = rgba.resize(fitted, resample)
    cell = Image.new("RGB", (size, size), THUMB_BACKGROUND)
    cell.paste(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2), rgba)
    return cell


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return int(font.getbbox("Ag|")[3])  # bottom edge of the tallest glyphs


def _fit_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` on one line, cut with "..." so it is at most ``width`` pixels wide."""
    text = " ".join(str(text).split())
    if font.getlength(text) <= width:
        return text
    # Binary search for the longest prefix that fits together with the ellipsis.
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if font.getlength(text[:mid] + "...") <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "..."


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def _save_figure(figure: Figure, out: Path) -> Path:
    return _write_atomically(out, lambda f: figure.savefig(f, format="png", dpi=PLOT_DPI))


def plot_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str],
    out: Path,
    normalize: bool = True,
    title: str = "",
) -> Path:
    """Heat map of a confusion matrix (rows = true class), optionally row-normalised.

    Up to MAX_ANNOTATED_CLASSES classes every cell shows its value; beyond that
    (e.g. CIFAR-100) cells are left bare and tick labels shrink to stay legible.
    """
    confusion = np.asarray(confusion)
    n_classes = len(class_names)
    if confusion.shape != (n_classes, n_classes):
        raise ValueError(f"confusion shape {confusion.shape} does not match {n_classes} class names")
    if normalize:
        support = confusion.sum(axis=1, keepdims=True)
        values = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    else:
        values = confusion.astype(np.float64)

    side = min(max(6.0, 0.16 * n_classes + 4.0), 22.0)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
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
            axes.text(col, row, label, ha="center", va="center", fontsize=8, color="white" if value > threshold else "black")
    return _save_figure(figure, out)


def plot_recall_curves(curves: Mapping[str, Sequence[float]], out: Path, title: str = "") -> Path:
    """Recall@k against k (k = 1..K) for each named direction, with R@1/5/10 marked."""
    if not curves:
        raise ValueError("no recall curves to plot")
    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.add_subplot()
    for name, curve in curves.items():
        recall = np.asarray(curve, dtype=np.float64)
        ks = np.arange(1, len(recall) + 1)
        line, = axes.plot(ks, recall, label=name)
        marked = ks[np.isin(ks, (1, 5, 10))]
        axes.plot(marked, recall[marked - 1], "o", color=line.get_color())
    axes.set_xlabel("k")
    axes.set_ylabel("recall@k")
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    return _save_figure(figure, out)


def plot_training_curves(rows: Sequence[Mapping[str, float]], out: Path) -> Path:
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

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [
            (row[x_key] if x_key else i, row[key])
            for i, row in enumerate(rows)
            if isinstance(row.get(key), (int, float, np.number)) and math.isfinite(row[key])
        ]
        return [x for x, _ in points], [y for _, y in points]

    figure = Figure(figsize=(9, 7), layout="constrained")
    loss_axes, metric_axes = figure.subplots(2, 1, sharex=True)
    for key in loss_keys:
        loss_axes.plot(*series(key), label=key)
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("loss")
    if "lr" in present:
        lr_axes = loss_axes.twinx()
        lr_axes.plot(*series("lr"), color="gray", linestyle="--", linewidth=1, label="lr")
        lr_axes.set_ylabel("learning rate")
        lr_axes.legend(loc="upper center")
    for key in metric_keys:
        metric_axes.plot(*series(key), marker="o", markersize=3, label=key)
    metric_axes.set_ylabel("validation metric")
    metric_axes.set_title("validation")
    metric_axes.set_xlabel(x_key or "row")
    for axes, keys in ((loss_axes, loss_keys), (metric_axes, metric_keys)):
        axes.grid(alpha=0.3)
        if keys:
            axes.legend(loc="best", fontsize=8)
    return _save_figure(figure, out)


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def classification_table(report: Mapping[str, Any], title: str) -> Table:
    """Per-class rows for a ``metrics.classification_report`` dict, then the overall numbers."""
    table = Table(title=escape(title))
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("accuracy %", justify="right")
    for i, entry in enumerate(report["per_class"]):
        last = i == len(report["per_class"]) - 1
        table.add_row(escape(str(entry["name"])), str(entry["n"]), _percent(entry["accuracy"]), end_section=last)
    table.add_row("[bold]top-1[/bold]", str(report["n"]), f"[bold]{_percent(report['top1'])}[/bold]")
    table.add_row(f"top-{report.get('top5_k', 5)}", "", _percent(report["top5"]))
    table.add_row("mean per-class recall", "", _percent(report["mean_per_class_recall"]))
    return table


def comparison_table(rows: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> Table:
    """Several methods side by side: one column per method, overall rows then one row per class.

    ``rows`` maps a method name to its ``metrics.classification_report`` dict.
    Values are percentages; the best in each row is bold.
    """
    if not rows:
        raise ValueError("no methods to compare")
    methods = list(rows)
    table = Table(title="comparison")
    table.add_column("")
    for method in methods:
        table.add_column(escape(method), justify="right")

    def add(label: str, values: list[float | None], end_section: bool = False) -> None:
        known = [value for value in values if value is not None]
        best = max(known) if known else None
        cells = [f"[bold]{_percent(v)}[/bold]" if v is not None and v == best and len(known) > 1 else _percent(v) for v in values]
        table.add_row(escape(label), *cells, end_section=end_section)

    add("top-1", [rows[m]["top1"] for m in methods])
    add("top-5", [rows[m]["top5"] for m in methods])
    add("mean per-class recall", [rows[m]["mean_per_class_recall"] for m in methods], end_section=True)
    accuracy_by_class = {m: {entry["name"]: entry["accuracy"] for entry in rows[m]["per_class"]} for m in methods}
    for name in class_names:
        add(str(name), [accuracy_by_class[m].get(str(name)) for m in methods])
    return table


def label_counts_table(counts: Mapping[str, int], title: str) -> Table:
    """How many images each label got (after `classify` or `probe apply`), with shares and a total."""
    total = sum(counts.values())
    table = Table(title=title)
    for column, justify in (("label", "left"), ("images", "right"), ("%", "right")):
        table.add_column(column, justify=justify)
    for label, count in counts.items():
        table.add_row(escape(label), str(count), f"{100 * count / max(total, 1):.1f}")
    table.add_row("[bold]total[/bold]", f"[bold]{total}[/bold]", "", end_section=True)
    return table
