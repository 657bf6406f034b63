"""`clipsearch tui NAME`: the interactive terminal UI (clipsearch/tui/)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ClipsearchError
from .common import RootOpt, open_index


def tui_cmd(
    name: str = typer.Argument(..., help="Index name."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of results (+/- change it in the UI)."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for exported contact sheets and JSON (default: here)."
    ),
    root: Optional[Path] = RootOpt,
) -> None:
    """Search an index interactively: query box, results, image preview, actions."""
    from ..tui.app import SearchApp  # Textual costs every other command start-up time: loaded only here

    # The app opens the index in its worker thread, after the UI is drawn; an unknown
    # index ends the app with Index.open's message.
    search_app = SearchApp(lambda: open_index(name, root), k=k, export_dir=out_dir)
    search_app.run()
    if search_app.startup_error:
        raise ClipsearchError(search_app.startup_error)
