"""`clipsearch eval retrieval`: recall@k, mean and median rank in both directions over an index's captions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..errors import ClipsearchError
from ..tasks import outputs
from ..tasks.retrieval import evaluate_retrieval
from .common import RootOpt, err, open_index, out

_DIRECTIONS = (("text_to_image", "text → image", "n_captions"), ("image_to_text", "image → text", "n_image_queries"))


def parse_ks(text: str) -> list[int]:
    """'1,5,10' -> [1, 5, 10]: positive whole numbers, duplicates dropped, in ascending order."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ClipsearchError(f"--ks must be comma-separated whole numbers such as 1,5,10, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ClipsearchError(f"--ks needs positive numbers such as 1,5,10, got {text!r}")
    return ks


def retrieval_table(report: dict[str, Any], ks: list[int]) -> Table:
    """One row per direction: R@k in percent, mean and median rank, number of queries."""
    table = Table(
        title=f"retrieval on '{report['index']}' split {report['split']}: "
        f"{report['n_images']} images, {report['n_captions']} captions"
    )
    table.add_column("direction")
    for k in ks:
        table.add_column(f"R@{k} %", justify="right")
    for column in ("mean rank", "median rank", "queries"):
        table.add_column(column, justify="right")
    for key, label, queries in _DIRECTIONS:
        row = report[key]
        table.add_row(
            label,
            *(f"{100 * row[f'R@{k}']:.2f}" for k in ks),
            f"{row['mean_rank']:.2f}",
            f"{row['median_rank']:g}",
            str(report[queries]),
        )
    return table


def retrieval_cmd(
    name: str = typer.Argument(..., help="Index name (a caption dataset or a folder indexed with --captions)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val, test or all."),
    ks: str = typer.Option("1,5,10", "--ks", help="Comma-separated k values for recall@k."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for results.json and recall_at_k.png (default: <index>/eval/retrieval-<split>)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    root: Optional[Path] = RootOpt,
) -> None:
    """Text→image and image→text recall@k (a query hits when any true match is in the top k), mean and median rank."""
    k_values = parse_ks(ks)
    index = open_index(name, root)
    report = evaluate_retrieval(index, split, k_values)
    files = outputs.write_retrieval(report, out_dir or outputs.retrieval_dir(index, split))
    if as_json:
        shown = {key: value for key, value in report.items() if key != "curves"}  # the curves are in results.json
        out.print_json(json.dumps({**shown, "files": {kind: str(path) for kind, path in files.items()}}))
        return
    out.print(retrieval_table(report, k_values))
    err.print(f"results: {files['results']}\nrecall@k curve: {files['curve']}", highlight=False)
