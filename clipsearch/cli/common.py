"""What every command shares: the two consoles, common options, opening an index, the hits table."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console

from ..api import Index
from ..errors import ClipsearchError
from ..present.progress import STDERR as PROGRESS_CONSOLE
from ..present.tables import fitted_table

out = Console()  # results only: tables, --json, --paths
err = Console(stderr=True)  # status lines and warnings: silenced by --quiet
always = Console(stderr=True)  # the one `error:` line (and Python warnings): shown even with --quiet


def set_quiet(quiet: bool) -> None:
    """--quiet: no status lines and no progress bars; results and errors still show."""
    err.quiet = quiet
    PROGRESS_CONSOLE.quiet = quiet


RootOpt = typer.Option(
    None,
    "--root",
    help="Index root folder (default: $CLIPSEARCH_HOME, else the per-user data folder, "
    "~/.local/share/clipsearch on Linux).",
)
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


def hit_path(row: dict[str, Any]) -> str:
    """Where a hit is, as the tables show it: relative to its indexed folder, else its id (a dataset row)."""
    source, uri = row.get("source") or "", row.get("uri") or ""
    return uri[len(source) + 1 :] if source and uri.startswith(source.rstrip("/") + "/") else row["id"]


def print_hits(index: Any, hits: list, title: str) -> None:
    """The results table: rank, score, path (relative to the indexed folder, or the dataset id), size,
    label; at any console width the file name shows whole, and empty columns are left out."""
    columns = (("rank", "right"), ("score", "right"), ("path", "left"), ("size", "right"), ("label", "left"))
    rows = []
    for hit in hits:
        row = hit.row
        size = f"{row['width']}x{row['height']}" if row.get("width") else ""
        label = row.get("label_name") or row.get("zs_label") or ""
        rows.append((str(hit.rank), f"{hit.score:.4f}", hit_path(row), size, str(label)))
    folders = [s for s in index.manifest.get("sources", []) if s.startswith("/")]
    where = f" ({folders[0]})" if len(folders) == 1 else ""
    out.print(fitted_table(title + where, columns, rows, out.width, elide="path"))


def end_process(code: int) -> NoReturn:
    """Exit now, skipping the interpreter's clean-up, which frees torch's (and gradio's) objects one by one
    (seconds on 2 cores) and would wait for a model still loading. Only for commands that read an index and
    have nothing left to write (`tui` once its terminal is restored and its exports finished, `serve`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
