"""`clipsearch import NAME --vectors FILE.npy|DIR`: precomputed embeddings into an index (index/imported.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..api import Index
from ..errors import ClipsearchError
from ..index.imported import embedding_files, file_dim, model_dim, read_embeddings
from ..model.spec import ModelSpec
from .common import PretrainedOpt, RootOpt, out


def import_cmd(
    name: str = typer.Argument(..., help="Index name (created when it does not exist)."),
    vectors: Path = typer.Option(..., "--vectors", help="A .npy file of unit vectors, or a folder of them (img_emb/)."),
    metadata: Optional[Path] = typer.Option(
        None, "--metadata", help="A .parquet file (or folder) with one row per vector: id/image_path/url, caption, ..."
    ),
    model: str = typer.Option(..., "--model", help="The model that produced the vectors (e.g. ViT-B-32)."),
    pretrained: Optional[str] = PretrainedOpt,
    normalize: bool = typer.Option(False, "--normalize", help="Renormalise vectors that are not unit length."),
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Add precomputed image embeddings (e.g. clip-retrieval's output) to an index; no model is loaded."""
    npys, parquets = embedding_files(vectors, metadata)
    dim = file_dim(npys[0])
    spec = ModelSpec.resolve(model, pretrained)
    expected = model_dim(spec)
    if expected is not None and expected != dim:
        raise ClipsearchError(f"{npys[0]} holds {dim}-d vectors, but {spec.identity()} makes {expected}-d ones")
    embeddings = read_embeddings(npys, parquets, dim, normalize)  # checked (streamed) before an index is created
    index = Index.create(name, root, model=model, pretrained=pretrained, dim=dim)
    if int(index.manifest["dim"]) != dim:
        raise ClipsearchError(f"index '{name}' holds {index.manifest['dim']}-d vectors, not {dim}-d")
    source = f"import:{Path(vectors).expanduser().resolve()}"
    stats = index.add_embeddings(embeddings, source).from_process_start()
    if as_json:
        out.print_json(json.dumps({**stats.to_dict(), "index": index.name, "rows": len(embeddings)}))
        return
    table = Table(title=f"import into '{index.name}'")
    for column in ("new", "updated", "images", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(str(stats.new), str(stats.updated), str(index.counts()["images"]), f"{stats.seconds:.1f}")
    out.print(table)
