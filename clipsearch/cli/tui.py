"""`clipsearch tui NAME`: the interactive terminal UI (clipsearch/tui.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import RootOpt
from ..errors import ClipsearchError


def tui_cmd(
    name: str = typer.Argument(..., help="Index name."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of results (+/- change it in the UI)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for exported contact sheets and JSON (default: here)."),
    root: Optional[Path] = RootOpt,
) -> None:
    """Search an index interactively: query box, results, image preview, actions."""
    from ..tui.app import SearchApp

    def open_index():
        # Runs in the app's worker thread: the UI is drawn before torch and lancedb are
        # even imported (seconds); an unknown index ends the app with Index.open's message.
        from ..index.index import Index

        return Index.open(name, root)

    search_app = SearchApp(open_index, k=k, export_dir=out_dir)
    search_app.run()
    if search_app.startup_error:
        raise ClipsearchError(search_app.startup_error)
