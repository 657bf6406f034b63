"""Index commands: index, list, info, remove (search: search.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..api import Index
from ..errors import ClipsearchError
from ..index.engines import encoding_engine
from ..index.store import Store, index_root
from ..sources.datasets import DATASETS, is_dataset
from .common import (
    BackendOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    RootOpt,
    encoder_options,
    err,
    fmt_bytes,
    open_index,
    out,
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
        None, "--workers", min=0, help="Decoding processes (default: one per core, at most 4)."
    ),
    engine: str = typer.Option("local", "--engine", help="Where images are encoded: local (this process) or ray."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster: auto (a running one, else a local instance) or ray://HOST:PORT."
    ),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="Ray encoder actors (default 1)."),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0.0, help="GPUs per Ray actor."),
    exclude: list[str] = typer.Option(
        [],
        "--exclude",
        help="Glob of files or folders to leave out (repeatable; 'thumbs/' matches folders). Remembered by the "
        "index: a later run without --exclude applies the same patterns, one with --exclude replaces them "
        "(--exclude '' clears them).",
    ),
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
    options["engine"] = encoding_engine(engine, ray_address, actors, gpus_per_actor, workers)
    chosen = encoder_options(backend, precision)
    if folder.is_dir() or not is_dataset(path):
        if not folder.is_dir():
            raise ClipsearchError(f"folder not found: {path} (or name a dataset: {', '.join(DATASETS)})")
        index = Index.create(name or folder.resolve().name, root, model, pretrained, encoder_options=chosen)
        stats = index.add_folder(folder, exclude=exclude or None, captions=captions, **options)
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
    on_ray = f" (engine ray, {stats.actors} actors)" if stats.engine == "ray" else ""
    s = stats
    cells = {
        "new": s.new,
        "updated": s.updated,
        "unchanged": f"{s.unchanged} ({s.touched} touched)" if s.touched else s.unchanged,  # touched: same content
        "moved": s.moved,
        "copied": s.copied,
        "deleted": s.deleted,
        "excluded": s.excluded,
        "skipped": s.skipped,
        "wall s": f"{s.seconds:.1f}",  # since the command started: start-up and model load included
        "images/s": f"{s.images_per_s:.1f}" if s.encoded else "–",
    }
    for rare in ("updated", "moved", "copied", "deleted", "excluded"):  # shown when they happened: fits 80 columns
        if not cells[rare]:
            del cells[rare]
    title = f"index '{index.name}'{on_ray}"
    table = Table(title=title, min_width=min(len(title) + 4, out.width))
    for column in cells:
        table.add_column(column, justify="right")
    table.add_row(*(str(v) for v in cells.values()))
    out.print(table)
    for image_id, reason in stats.skipped_reasons[:20]:
        out.print(f"  skipped {image_id}: {reason}", highlight=False)
    if len(stats.skipped_reasons) > 20:
        out.print(f"  ... and {len(stats.skipped_reasons) - 20} more (clipsearch info {index.name} --skipped)")


# -- list / info / remove --------------------------------------------------------
def list_cmd(root: Optional[Path] = RootOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the indexes under the root."""
    problems: list[str] = []
    infos = []
    for path in Store.list_indexes(root):
        try:  # one broken index (manifest, name, table) is reported; the others are still listed
            index = Index.open(path.name, path.parent)
            images = index.counts()["images"]
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
    title = f"{len(infos)} {'index' if len(infos) == 1 else 'indexes'} in {index_root(root)}"
    table = Table(title=title, min_width=min(len(title) + 4, out.width))
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
        ("root", info["root"]),
        ("path", info["path"]),
        ("model", info["model_id"]),
        ("dim", info["dim"]),
        *((k, v) for k, v in info["counts"].items()),
        ("faiss", f"{ann.get('kind')} ({ann.get('factory')}), recall@10 {ann.get('recall@10')}"),
        ("disk", fmt_bytes(info["disk_bytes"])),
        ("sources", ", ".join(info["sources"])),
        ("exclude", " ".join(info["exclude"]) or "-"),
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
