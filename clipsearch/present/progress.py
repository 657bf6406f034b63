"""The one progress display: bars on stderr with count, rate, elapsed time and ETA.

Every long job (encoding, classifying, probe training, model training, downloads)
reports through `progress_bars`, so every bar looks alike and none ever lands on
stdout, which carries results only (`--json`, `--paths` can always be piped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

STDERR = Console(stderr=True)

# update(what, done, total=None, status="", **fields): one bar per `what`, created on first use.
Update = Callable[..., None]


@contextmanager
def progress_bars(visible: bool = True, unit: str = "items", transfer: bool = False) -> Iterator[Update]:
    """Yields `update(what, done, total=None, status="")`: draws (or moves) the bar named `what`.

    `unit` names what is counted in the rate column ("img/s"); `transfer` shows bytes
    and bytes/s instead, for downloads. A hidden display draws nothing at all (an empty
    line before `--json` output would break it).
    """
    count = (
        (DownloadColumn(), TransferSpeedColumn())
        if transfer
        else (MofNCompleteColumn(), TextColumn(f"{{task.fields[rate]}} {unit}/s"))
    )
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *count,
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=STDERR, disable=not visible) as progress:
        bars: dict[str, Any] = {}

        def update(what: str, done: int, total: int | None = None, status: str = "") -> None:
            if what not in bars:
                bars[what] = progress.add_task(escape(what), total=total, status="", rate="-")
            bar = bars[what]
            elapsed = progress.tasks[bar].elapsed or 0.0
            rate = f"{done / elapsed:.1f}" if elapsed > 0 and done else "-"
            progress.update(bar, completed=done, total=total, status=escape(status), rate=rate)

        yield update


@contextmanager
def counting_bar(
    what: str, total: int | None = None, visible: bool = True, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """One bar advanced by counts: yields `advance(n)` (n more items done)."""
    with progress_bars(visible, unit) as update:
        done = 0
        update(what, 0, total)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(what, done, total)

        yield advance
