"""`clipsearch check NAME [--repair] [--json]`: verify an index's files against each other; repair what is derived."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..index.check import check_index
from .common import RootOpt, out


def check_cmd(
    name: str = typer.Argument(..., help="Index name."),
    repair: bool = typer.Option(
        False, "--repair", help="Rebuild the FAISS file, key index and counts; roll damaged tables back."
    ),
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the manifest, tables, FAISS file and key index; exit 0 only when the index is healthy."""
    report = check_index(name, root, repair=repair)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        for line in report.repaired:
            out.print(f"repaired: {line}", highlight=False, soft_wrap=True)
        for line in report.problems:
            out.print(f"problem: {line}", highlight=False, soft_wrap=True)
        out.print(
            f"index '{name}' is healthy"
            if report.healthy
            else f"index '{name}': {len(report.problems)} problems"
            + ("" if repair else f" (try 'clipsearch check {name} --repair')"),
            highlight=False,
        )
    if not report.healthy:
        raise typer.Exit(1)
