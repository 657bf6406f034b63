"""What the TUI draws, as plain functions: images as Unicode half blocks, a hit's labels
and its details table. No widget and no app here, so each is tested on its own.

An image is drawn two pixels a cell: an upper half block whose foreground is the top
pixel and whose background is the bottom pixel, which every truecolor terminal shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.strip import Strip

if TYPE_CHECKING:
    from ..index.query import Hit

UPPER_HALF_BLOCK = "\u2580"


def half_block_strips(image: Image.Image, width: int, height: int) -> list[Strip]:
    """`image` fitted into `width` x `height` cells (aspect kept), two pixels a cell.

    Each cell is an upper half block whose foreground is the top pixel and whose
    background is the bottom pixel; a last odd row leaves the background unset.
    """
    if width < 1 or height < 1:
        return []
    scale = min(width / image.width, 2 * height / image.height)
    columns = min(width, max(1, round(image.width * scale)))
    rows = min(2 * height, max(1, round(image.height * scale)))
    pixels = np.asarray(image.convert("RGB").resize((columns, rows), Image.Resampling.LANCZOS))
    styles: dict[tuple[int, ...], Style] = {}  # one Style per colour pair: a thumbnail repeats many
    strips = []
    for y in range(0, rows, 2):
        segments = []
        for x in range(columns):
            top = tuple(int(v) for v in pixels[y, x])
            bottom = tuple(int(v) for v in pixels[y + 1, x]) if y + 1 < rows else ()
            style = styles.get(top + bottom)
            if style is None:
                style = styles[top + bottom] = Style.from_color(
                    Color.from_rgb(*top), Color.from_rgb(*bottom) if bottom else None
                )
            segments.append(Segment(UPPER_HALF_BLOCK, style))
        strips.append(Strip(segments, columns).simplify())
    return strips


def hit_label(row: dict[str, Any]) -> str:
    """Known label, zero-shot label and probe label of a row, those that are set."""
    parts = [row.get("label_name") or ""]
    if row.get("zs_label"):
        parts.append(f"zs: {row['zs_label']}")
    if row.get("probe_label"):
        parts.append(f"probe: {row['probe_label']}")
    return " · ".join(p for p in parts if p)


def _annotation(row: dict[str, Any], prefix: str, source_column: str) -> str:
    """'red star (0.875, shapes)': a zero-shot or probe label with its score and source, those set."""
    score, source = row.get(f"{prefix}_score"), row.get(source_column)
    extra = ", ".join(part for part in (f"{score:.3f}" if score is not None else "", source or "") if part)
    return row[f"{prefix}_label"] + (f" ({extra})" if extra else "")


def hit_details(hit: Hit) -> list[tuple[str, str]]:
    """The metadata shown under the preview, as (name, value) lines."""
    row = hit.row
    fields: list[tuple[str, str]] = [
        ("path", row["uri"]),
        ("id", row["id"]),
        ("score", f"{hit.score:.4f}  (rank {hit.rank})"),
    ]
    if row.get("width"):
        fields.append(("dimensions", f"{row['width']} x {row['height']} px"))
    if row.get("size"):
        fields.append(("size", f"{row['size']:,} bytes"))
    if row.get("split"):
        fields.append(("split", row["split"]))
    if row.get("label_name"):
        fields.append(("label", row["label_name"]))
    for name, prefix, source_column in (("zero-shot", "zs", "zs_labelset"), ("probe", "probe", "probe_name")):
        if row.get(f"{prefix}_label"):
            fields.append((name, _annotation(row, prefix, source_column)))
    return fields + [("caption", caption) for caption in row.get("captions") or []]


def details_table(fields: Sequence[tuple[str, str]]) -> Table:
    """Names in a bold column, values wrapping beside them (long paths fold)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(name, Text(value))
    return table
