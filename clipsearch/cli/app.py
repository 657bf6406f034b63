"""The `clipsearch` command: one Typer app, every command registered here explicitly."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Optional

import typer

from ..errors import ClipsearchError
from . import check, demo, importing, index, probe, retrieval, train, tui, zeroshot
from .common import err

# Idle OpenMP threads yield instead of spinning: on a busy machine spinning made a training
# step 13x slower. Must be set before torch is imported (commands import it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Index images with CLIP embeddings; search, classify, train and evaluate.",
)
eval_app = typer.Typer(
    no_args_is_help=True, help="Evaluate an index: zero-shot accuracy, retrieval recall@k, comparisons."
)
probe_app = typer.Typer(
    no_args_is_help=True, help="Linear, MLP and joint image+text probes on an index's stored vectors."
)
app.add_typer(eval_app, name="eval")
app.add_typer(probe_app, name="probe")

for name, command in {
    "index": index.index_cmd,
    "search": index.search_cmd,
    "list": index.list_cmd,
    "info": index.info_cmd,
    "remove": index.remove_cmd,
    "import": importing.import_cmd,
    "check": check.check_cmd,
    "demo": demo.demo_cmd,
    "classify": zeroshot.classify_cmd,
    "predict": zeroshot.predict_cmd,
    "tui": tui.tui_cmd,
    "shapes": train.shapes_cmd,
    "train": train.train_cmd,
}.items():
    app.command(name)(command)
for name, command in {
    "retrieval": retrieval.retrieval_cmd,
    "zeroshot": zeroshot.eval_zeroshot_cmd,
    "compare": probe.compare_cmd,
}.items():
    eval_app.command(name)(command)
for name, command in {"train": probe.train_cmd, "eval": probe.eval_cmd, "apply": probe.apply_cmd}.items():
    probe_app.command(name)(command)


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"warning: {message}", highlight=False, soft_wrap=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    warnings.showwarning = _one_line_warnings
    logging.basicConfig(level=logging.ERROR)  # open_clip logs routine notices at WARNING
    try:
        app(args=argv, prog_name="clipsearch")
    except ClipsearchError as error:
        err.print(f"error: {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except SystemExit as done:
        if done.code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent exit 130
            err.print("interrupted: what was written so far is kept; run the same command again to resume")
        raise
