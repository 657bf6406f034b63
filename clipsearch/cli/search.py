"""`clipsearch search NAME|FOLDER QUERY...`: search an index, or a folder (indexed or brought up to date
first, rclip-style), by text, image or a weighted combination; a table, `--json`, `--paths` or `--export`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from ..api import Index
from ..errors import ClipsearchError
from ..index.query import TEXT_PREFIX, check_k
from ..index.store import Store
from ..present.sheets import contact_sheet, hit_captions
from ..present.tables import fitted_table
from ..sources.cifar import is_cifar_uri
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
    open_index,
    out,
    print_hits,
)


def search_cmd(
    name: str = typer.Argument(
        ..., help="Index name, or an image folder: its index (named after it) is made or updated first."
    ),
    query: Optional[list[str]] = typer.Argument(
        None,
        help='Text and/or image paths, joined by + and -, e.g. "a dog" + "2:snow" - grass; '
        "text:photo.jpg is the text, not the file.",
    ),
    image: list[Path] = typer.Option([], "--image", help="Query image (repeatable; added to the query)."),
    text: list[str] = typer.Option([], "--text", help="Query text taken literally (repeatable; added to the query)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of results (at most 100000)."),
    where: Optional[str] = typer.Option(None, "--where", help="LanceDB SQL filter, e.g. \"split = 'test'\"."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Drop hits with a cosine score below this."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
    paths: bool = typer.Option(False, "--paths", help="Print one path per line (hits stored as files)."),
    export: Optional[Path] = typer.Option(
        None,
        "--export",
        help="Write the hits as image files into this folder (rank-prefixed names); print their paths.",
    ),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a contact-sheet PNG of the hits."),
    captions: bool = typer.Option(False, "--captions", help="Return the nearest stored captions instead of images."),
    update: bool = typer.Option(True, "--update/--no-update", help="With a folder: bring its index up to date first."),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Search an index (or a folder) by text, image, or a weighted combination."""
    check_k(k)
    if sum(map(bool, (as_json, paths, export))) > 1:
        raise ClipsearchError("choose one of --json, --paths and --export")
    for option, path in (("--grid", grid), ("--export", export and export / "hit.png")):
        if path:
            check_output_file(path, option)
    terms = _with_texts(query, text)
    chosen = encoder_options(backend, precision)
    folder = _as_folder(name, root)
    if folder is None:
        index = open_index(name, root, model, pretrained, backend, precision)
    else:
        index = folder_index(folder, root, model, pretrained, chosen, update)
        index.check_model_named(model, pretrained)
        index.encoder_options = chosen
    if captions:
        _print_captions(index, index.search_captions(terms, image=list(image) or None, k=k), as_json)
        return
    hits = index.search(terms, image=list(image) or None, k=k, where=where, threshold=threshold)
    _show_hits(index, hits, " ".join(terms), as_json, paths, export, grid)


def _show_hits(
    index: Index, hits: list[Any], query: str, as_json: bool, paths: bool, export: Optional[Path], grid: Optional[Path]
) -> None:
    """The hits as --json, --paths (files only), --export's written files, or a table; the --grid sheet."""
    if paths and any(is_cifar_uri(h.uri) for h in hits):
        raise ClipsearchError(
            f"--paths: the images of '{index.name}' live in a dataset archive, not in files; "
            "--export DIR writes the hits as image files and prints their paths"
        )
    if grid:
        captions = hit_captions(hits)
        contact_sheet([open_uri(h.uri) for h in hits], captions, grid, title=query)
    if as_json:
        out.print_json(json.dumps([h.to_dict() for h in hits], default=str))
    elif paths or export:
        for path in export_hits(hits, export) if export else [h.uri for h in hits]:
            print(path)
    else:
        print_hits(index, hits, f"{len(hits)} result{'s' * (len(hits) != 1)} in '{index.name}'")
    if grid:
        err.print(f"contact sheet: {grid}")


def _with_texts(query: Optional[list[str]], texts: list[str]) -> list[str]:
    """The query's tokens, then each --text as a literal text term."""
    tokens = list(query or [])
    for text in texts:
        tokens += [*(["+"] if tokens else []), TEXT_PREFIX + text]
    return tokens


def _as_folder(name: str, root: Optional[Path]) -> Optional[Path]:
    """The folder `name` means, if it means one: an existing folder written as a path (`~/Pictures`, `./x`),
    or a bare name that is a folder here and no index."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    if "/" in name or name.startswith(("~", ".")) or not Store.exists(Store.folder(name, root)):
        return folder
    return None


def folder_index(
    folder: Path, root: Optional[Path], model: Optional[str], pretrained: Optional[str], chosen: dict, update: bool
) -> Index:
    """The index of `folder` in the root (named after it; `name-2`, ... when that name holds another folder),
    made or brought up to date (progress on stderr) unless `update` is off."""
    source = str(folder.resolve())
    name = _folder_index_name(source, root)
    if not update:
        if not Store.exists(Store.folder(name, root)):
            raise ClipsearchError(f"no index of {source} yet; search it once without --no-update to make it")
        return Index.open(name, root)
    index = Index.create(name, root, model, pretrained, encoder_options=chosen)
    stats = index.add_folder(folder).from_process_start()
    for problem in index.problems:
        err.print(f"warning: {problem}", highlight=False, soft_wrap=True)
    err.print(
        f"index '{name}' of {source}: {stats.new} new, {stats.updated} updated, {stats.unchanged} unchanged, "
        f"{stats.deleted} deleted, {stats.skipped} skipped ({stats.seconds:.1f} s wall)",
        highlight=False,
        soft_wrap=True,
    )
    return index


def _folder_index_name(source: str, root: Optional[Path]) -> str:
    """The index already holding `source` (whatever its name), else the first free name after the folder's."""
    for path in Store.list_indexes(root):
        try:
            if Index.open(path.name, path.parent).manifest.get("sources") == [source]:
                return path.name
        except ClipsearchError:  # a broken index is not this folder's; `list` reports it
            continue
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name).strip("-.") or "folder"
    names = [base, *(f"{base}-{n}" for n in range(2, 1000))]
    free = next((name for name in names if not Store.exists(Store.folder(name, root))), None)
    if free is None:
        raise ClipsearchError(f"indexes {base} to {base}-999 all hold other folders; give an index name")
    return free


def export_hits(hits: list[Any], folder: Path) -> list[Path]:
    """Each hit as an image file in `folder`, named by rank (`01-IMG_0001.jpg`): a stored file is copied
    as it is, a row of a dataset archive is written as PNG. Returns the paths, in rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(2, len(str(len(hits))))
    written = []
    for hit in hits:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", hit.id.rsplit("/", 1)[-1])
        if is_cifar_uri(hit.uri):
            path = folder / f"{hit.rank:0{digits}d}-{stem}.png"
            open_uri(hit.uri).save(path)
        else:
            path = folder / f"{hit.rank:0{digits}d}-{stem}"
            shutil.copyfile(hit.uri, path)
        written.append(path)
    return written


def _print_captions(index: Any, hits: list[Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([h.to_dict() for h in hits]))
        return
    columns = (("rank", "right"), ("score", "right"), ("image", "left"), ("caption", "left"))
    rows = [(str(h.rank), f"{h.score:.4f}", h.row["image_id"], h.row["caption"]) for h in hits]
    out.print(fitted_table(f"{len(hits)} captions in '{index.name}'", columns, rows, out.width, elide="image"))
