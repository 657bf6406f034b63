"""What every command shares: the two consoles, common options, opening an index, the hits table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..api import Index
from ..errors import ClipsearchError

out = Console()
err = Console(stderr=True)

RootOpt = typer.Option(None, "--root", help="Index root folder (default: $CLIPSEARCH_HOME or ./indexes).")
ModelOpt = typer.Option(
    None,
    "--model",
    help="open_clip architecture (e.g. ViT-B-32, RN50, mini, tiny), hf-hub:org/name (open_clip on the hub), "
    "hf:org/name or hf:/saved/folder (a transformers CLIP).",
)
PretrainedOpt = typer.Option(
    None, "--pretrained", help="Pretrained tag, checkpoint path, or 'none' (random, for tests)."
)
BackendOpt = typer.Option(
    "auto",
    "--backend",
    help="How the model runs: torch, openvino or onnx (exported once, cached beside the Hugging Face cache); "
    "auto: torch on a GPU, else an export already made for this model, else torch.",
)
PrecisionOpt = typer.Option(
    None, "--precision", help="fp32, bf16 or int8 for openvino/onnx (int8 calibrates on the images being indexed)."
)


def check_output_file(path: Path, option: str) -> None:
    """Before any work: a file an option names can be written (missing folders are created then), else one line."""
    folder = path.expanduser().absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ClipsearchError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ClipsearchError(f"{option} {path}: folder {existing} is not writable")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def encoder_options(backend: str, precision: Optional[str]) -> dict[str, Any]:
    """--backend/--precision as `Index.encoder_options` (what load_encoder is asked for)."""
    return {"backend": backend, "precision": precision}


def open_index(
    name: str,
    root: Optional[Path],
    model: Optional[str] = None,
    pretrained: Optional[str] = None,
    backend: str = "auto",
    precision: Optional[str] = None,
) -> Index:
    """The named index, its model to run on `backend`; with --model/--pretrained, refused unless they are
    the index's own model."""
    index = Index.open(name, root)
    index.check_model_named(model, pretrained)
    index.encoder_options = encoder_options(backend, precision)
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
