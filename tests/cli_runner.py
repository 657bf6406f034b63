"""Run the `clipsearch` command in this process, as a user would, capturing what they see."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from clipsearch.cli.app import main


def run_cli(*args: object, stdout: io.StringIO | None = None) -> tuple[int, str, str]:
    """`clipsearch ARGS`: (exit code, stdout, stderr); `stdout` may be a stream that says it is a terminal."""
    stdout, stderr = stdout or io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main([str(arg) for arg in args])
        except SystemExit as stop:
            code = int(stop.code or 0)
    return code, stdout.getvalue(), stderr.getvalue()


def run_json(*args: object) -> Any:
    """`clipsearch ARGS --json`, which must succeed: the parsed output."""
    code, stdout, stderr = run_cli(*args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)
