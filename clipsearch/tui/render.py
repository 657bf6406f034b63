"""What the TUI draws, as plain functions: a hit's labels and its details table (the preview's
pixels are textual-image's, widgets.py). No widget and no app here, so each is tested on its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from ..index.query import Hit


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
