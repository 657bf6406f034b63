"""`clipsearch tui NAME`: the interactive terminal UI (clipsearch/tui/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import ClipsearchError
from .common import RootOpt, end_process, open_index


def tui_cmd(
    name: str = typer.Argument(..., help="Index name."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of results (+/- change it in the UI)."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for exported contact sheets and JSON (default: here)."
    ),
    root: Optional[Path] = RootOpt,
) -> None:
    """Search an index interactively: query box, results, image preview, actions."""
    index = open_index(name, root)  # an unknown or damaged index: its one line, before anything is drawn
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ClipsearchError(
            f"clipsearch tui needs a terminal (stdin and stdout); without one, search with "
            f"clipsearch search {name} QUERY (--json or --paths for scripts)"
        )
    from ..tui.app import SearchApp  # Textual costs every other command start-up time: loaded only here

    # The app loads the model in a thread after the UI is drawn; a model that cannot load ends the
    # app with its message.
    search_app = SearchApp(lambda: index, k=k, export_dir=out_dir)
    search_app.run()
    if search_app.startup_error:
        raise ClipsearchError(search_app.startup_error)
    end_process(0)
