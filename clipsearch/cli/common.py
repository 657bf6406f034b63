"""What every command shares: the two consoles, common options, opening an index, the hits table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..api import Index

out = Console()
err = Console(stderr=True)

RootOpt = typer.Option(None, "--root", help="Index root folder (default: $CLIPSEARCH_HOME or ./indexes).")
ModelOpt = typer.Option(None, "--model", help="open_clip architecture, e.g. ViT-B-32, RN50, mini, tiny.")
PretrainedOpt = typer.Option(
    None, "--pretrained", help="Pretrained tag, checkpoint path, or 'none' (random, for tests)."
)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def open_index(name: str, root: Optional[Path], model: Optional[str] = None, pretrained: Optional[str] = None) -> Index:
    """The named index; with --model/--pretrained, refused unless they are the index's own model."""
    index = Index.open(name, root)
    index.check_model_named(model, pretrained)
    return index


def print_hits(index: Any, hits: list, title: str) -> None:
    """The results table: rank, score, path (or dataset id), size, label."""
    table = Table(title=title)
    for column, justify in (
        ("rank", "right"),
        ("score", "right"),
        ("path", "left"),
        ("size", "right"),
        ("label", "left"),
    ):
        table.add_column(column, justify=justify)
    for hit in hits:
        row = hit.row
        size = f"{row['width']}x{row['height']}" if row.get("width") else ""
        label = row.get("label_name") or row.get("zs_label") or ""
        where = row["uri"] if row["source"] and row["uri"].startswith(row["source"]) else row["id"]
        table.add_row(str(hit.rank), f"{hit.score:.4f}", where, size, label)
    out.print(table)
