"""Index and search commands: index, search, list, info, remove."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..api import Index
from ..errors import ClipsearchError
from ..index.query import check_k
from ..index.store import Store
from ..present.sheets import contact_sheet
from ..sources.datasets import DATASETS, is_dataset
from ..sources.images import open_uri
from .common import (
    BackendOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    RootOpt,
    check_output_file,
    encoder_options,
    err,
    fmt_bytes,
    open_index,
    out,
    print_hits,
)


# -- index -------------------------------------------------------------------
def index_cmd(
    path: str = typer.Argument(
        ..., help="Image folder (or a dataset name: cifar10, cifar100, flickr8k, flickr30k, coco)."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Index name (default: the folder's name)."),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="Decoding processes (default: cores - 1, at most 4)."
    ),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files or folders to leave out (repeatable)."),
    prune: bool = typer.Option(False, "--prune", help="Remove rows of deleted files for good."),
    split: str = typer.Option("test", "--split", help="Dataset split: train, val, test or all (datasets only)."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Where a dataset's archive or files are (datasets only)."
    ),
    captions: Optional[Path] = typer.Option(
        None, "--captions", help="Captions file (JSONL/CSV/Flickr8k token file) for the images."
    ),
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Index an image folder (encodes only new or changed files) or a named dataset."""
    folder = Path(path).expanduser()
    options = dict(batch_size=batch_size, workers=workers, progress=not as_json, prune=prune)
    chosen = encoder_options(backend, precision)
    if folder.is_dir() or not is_dataset(path):
        if not folder.is_dir():
            raise ClipsearchError(f"folder not found: {path} (or name a dataset: {', '.join(DATASETS)})")
        index = Index.create(name or folder.resolve().name, root, model, pretrained, encoder_options=chosen)
        stats = index.add_folder(folder, exclude=exclude, captions=captions, **options)
    else:  # read first: a missing dataset leaves no empty index behind
        naming = dict(name=name, root=root, model=model, pretrained=pretrained, encoder_options=chosen)
        index, stats = Index.from_dataset(path, split, data_dir, captions, **naming, **options)
    for problem in index.problems[:20]:
        err.print(f"warning: {problem}", highlight=False, soft_wrap=True)
    if len(index.problems) > 20:
        err.print(f"warning: ... and {len(index.problems) - 20} more problems in the annotation files")
    stats.from_process_start()  # the summary reports what the user waited: start-up and model load too
    if as_json:
        out.print_json(json.dumps({**stats.to_dict(), "index": index.name, "skipped_files": stats.skipped_reasons}))
        return
    _print_sync(index, stats)


def _print_sync(index: Any, stats: Any) -> None:
    table = Table(title=f"index '{index.name}'")
    for column in ("new", "updated", "unchanged", "moved", "deleted", "skipped", "seconds", "images/s"):
        table.add_column(column, justify="right")
    s = stats
    table.add_row(
        str(s.new),
        str(s.updated),
        f"{s.unchanged} ({s.touched} touched)" if s.touched else str(s.unchanged),  # touched: same content hash
        *(str(v) for v in (s.moved, s.deleted, s.skipped)),
        f"{s.seconds:.1f}",
        f"{s.images_per_s:.1f}",
    )
    out.print(table)
    for image_id, reason in stats.skipped_reasons[:20]:
        out.print(f"  skipped {image_id}: {reason}", highlight=False)
    if len(stats.skipped_reasons) > 20:
        out.print(f"  ... and {len(stats.skipped_reasons) - 20} more (clipsearch info {index.name} --skipped)")


# -- search ------------------------------------------------------------------
def search_cmd(
    name: str = typer.Argument(..., help="Index name."),
    query: Optional[list[str]] = typer.Argument(
        None, help='Text and/or image paths, joined by + and -, e.g. "a dog" + "2:snow" - grass.'
    ),
    image: list[Path] = typer.Option([], "--image", help="Query image (repeatable; added to the query)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of results (at most 100000)."),
    where: Optional[str] = typer.Option(None, "--where", help="LanceDB SQL filter, e.g. \"split = 'test'\"."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Drop hits with a cosine score below this."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
    paths: bool = typer.Option(False, "--paths", help="Print one path per line."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a contact-sheet PNG of the hits."),
    captions: bool = typer.Option(False, "--captions", help="Return the nearest stored captions instead of images."),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Search an index by text, image, or a weighted combination."""
    check_k(k)
    if as_json and paths:
        raise ClipsearchError("choose one of --json and --paths")
    if grid:
        check_output_file(grid, "--grid")
    index = open_index(name, root, model, pretrained, backend, precision)
    if captions:
        hits = index.search_captions(query, image=list(image) or None, k=k)
        if as_json:
            out.print_json(json.dumps([h.to_dict() for h in hits]))
            return
        table = Table(title=f"{len(hits)} captions in '{index.name}'")
        for column in ("rank", "score", "image", "caption"):
            table.add_column(column)
        for hit in hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.row["image_id"], hit.row["caption"])
        out.print(table)
        return
    hits = index.search(query, image=list(image) or None, k=k, where=where, threshold=threshold)
    if grid:
        contact_sheet(
            [open_uri(h.uri) for h in hits],
            [f"#{h.rank} {h.score:.3f} {h.id}" for h in hits],
            grid,
            title=" ".join(query or []),
        )
    if as_json:
        out.print_json(json.dumps([h.to_dict() for h in hits], default=str))
    elif paths:
        for hit in hits:
            print(hit.uri)
    else:
        print_hits(index, hits, f"{len(hits)} results in '{index.name}'")
    if grid:
        err.print(f"contact sheet: {grid}")


# -- list / info / remove --------------------------------------------------------
def list_cmd(root: Optional[Path] = RootOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the indexes under the root."""
    problems: list[str] = []
    infos = []
    for path in Store.list_indexes(root):
        try:  # one broken index (manifest, name, table) is reported; the others are still listed
            index = Index.open(path.name, path.parent)
            images = index.counts(recorded=True)["images"]
        except ClipsearchError as error:
            problems.append(f"{path.name}: {error}")
            continue
        infos.append(
            {
                "name": index.name,
                "model": index.spec.identity(),
                "images": images,
                "updated": index.manifest.get("updated"),
            }
        )
    for problem in problems:
        err.print(f"warning: skipped {problem}", highlight=False, soft_wrap=True)
    if as_json:
        out.print_json(json.dumps(infos))
        return
    table = Table(title=f"{len(infos)} indexes")
    for column in ("name", "model", "images", "updated"):
        table.add_column(column)
    for info in infos:
        table.add_row(info["name"], info["model"], str(info["images"]), str(info["updated"]))
    out.print(table)


def info_cmd(
    name: str,
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
    skipped: bool = typer.Option(False, "--skipped", help="Also list files that could not be read."),
) -> None:
    """Model, counts, index type, sizes on disk, last update."""
    index = open_index(name, root)
    info = index.info()
    if skipped:
        info["skipped_files"] = [{"id": r["id"], "reason": r["reason"]} for r in index.skipped()]
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    table = Table(title=f"index '{name}'", show_header=False)
    ann = info["ann"] or {}
    for key, value in (
        ("path", info["path"]),
        ("model", info["model_id"]),
        ("dim", info["dim"]),
        *((k, v) for k, v in info["counts"].items()),
        ("faiss", f"{ann.get('kind')} ({ann.get('factory')}), recall@10 {ann.get('recall@10')}"),
        ("disk", fmt_bytes(info["disk_bytes"])),
        ("sources", ", ".join(info["sources"])),
        ("created", info["created"]),
        ("updated", info["updated"]),
    ):
        table.add_row(str(key), str(value))
    out.print(table)
    for row in info.get("skipped_files", []):
        out.print(f"  skipped {row['id']}: {row['reason']}", highlight=False)


def remove_cmd(name: str, root: Optional[Path] = RootOpt) -> None:
    """Delete an index folder."""
    Index.remove(name, root)
    out.print(f"removed index '{name}'")
