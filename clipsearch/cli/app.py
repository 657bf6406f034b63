"""The `clipsearch` command: one Typer app, every command registered here explicitly."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from typing import Any, Optional

import typer
import typer.core

from .. import __version__
from ..errors import ClipsearchError
from . import check, demo, importing, index, probe, retrieval, search, serve, train, tui, zeroshot
from .common import always, out, set_quiet

# Idle OpenMP threads yield instead of spinning: on a busy machine spinning made a training
# step 13x slower. Must be set before torch is imported (commands import it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Help text is plain text: a literal "[default: 10]" in a help string must show, not vanish as Rich markup.
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Index images with CLIP embeddings; search, classify, train and evaluate. "
    "Results go to stdout, progress and status to stderr; -v/-q/--version go before the command.",
)
eval_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Evaluate an index: zero-shot accuracy, retrieval recall@k, comparisons.",
)
probe_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Linear, MLP and joint image+text probes on an index's stored vectors.",
)


def _version(show: bool) -> None:
    if show:
        out.print(f"clipsearch {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also print debug and status log lines (stderr)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars or status lines; errors still show."),
) -> None:
    """Options for every command (given before it)."""
    if verbose and quiet:
        raise ClipsearchError("choose one of --verbose and --quiet")
    set_quiet(quiet)
    logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("clipsearch").setLevel(logging.DEBUG if verbose else logging.NOTSET)


app.add_typer(eval_app, name="eval")
app.add_typer(probe_app, name="probe")

for name, command in {
    "index": index.index_cmd,
    "search": search.search_cmd,
    "list": index.list_cmd,
    "info": index.info_cmd,
    "remove": index.remove_cmd,
    "import": importing.import_cmd,
    "check": check.check_cmd,
    "demo": demo.demo_cmd,
    "classify": zeroshot.classify_cmd,
    "predict": zeroshot.predict_cmd,
    "tui": tui.tui_cmd,
    "serve": serve.serve_cmd,
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
    always.print(f"warning: {message}", highlight=False, soft_wrap=True)


_VALUE_LABELS = {"int": "INTEGER", "float": "NUMBER", "path": "PATH", "str": "TEXT"}


def _type_label(param: Any, ctx: Any = None) -> Optional[str]:
    """What the help shows after an option: nothing for a flag or an argument (its name says it), else the
    kind of value in words (INTEGER, TEXT, PATH, a|b|c), never a Python type such as <list[str]>."""
    if isinstance(param, typer.core.TyperArgument) or getattr(param, "is_flag", False):
        return None
    shown = str(type(param).display_type_rich(param, ctx=ctx) or "").strip("<>.")  # typer's "<list[str]>..."
    kind = shown.removeprefix("list[").removesuffix("]").removesuffix(" range")  # "<int range>": min=/max=
    return _VALUE_LABELS.get(kind.lower(), kind if "|" in kind else "TEXT")  # a repeatable option's help says so


def _plain_help(command: Any) -> Any:
    """Every parameter of every command shows a plain value label in --help (see _type_label)."""
    for param in command.params:
        param.display_type_rich = functools.partial(_type_label, param)  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)
    return command


def cli_command() -> typer.core.TyperGroup:
    """The click command tree of the app, with plain help (what `main` runs; tests walk it)."""
    return _plain_help(typer.main.get_command(app))


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    warnings.showwarning = _one_line_warnings
    logging.basicConfig(level=logging.ERROR)  # open_clip logs routine notices at WARNING (--verbose shows them)
    try:
        cli_command()(args=argv, prog_name="clipsearch")
    except ClipsearchError as error:
        always.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except SystemExit as done:
        # typer turns Ctrl-C (KeyboardInterrupt) into a silent exit 130; a command that said how to resume
        # (train) marks its exit `explained`
        if done.code == 130 and not getattr(done, "explained", False):
            always.print("interrupted: what was written so far is kept; run the same command again to resume")
        raise
