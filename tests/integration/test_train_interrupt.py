"""An interrupted `clipsearch train` (Ctrl-C, SIGTERM, a crash mid-epoch) prints the exact command that
continues it, and that command, run as printed, finishes the run (issue 14 item 4)."""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path

import pytest
from cli_runner import run_cli

from clipsearch.errors import ClipsearchError
from clipsearch.sources.shapes import generate_shapes
from clipsearch.training import loop

FAST = ["--arch", "tiny-rn", "--epochs", "2", "--batch-size", "32", "--lr", "0.005", "--workers", "0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    generate_shapes(folder, n=96, size=32, seed=3)
    return folder


def stop_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, stop) -> None:
    """`stop()` once, when the given epoch (1-based) starts."""
    original, fired = loop._Run.train_epoch, []

    def train_epoch(run, update):
        if run.epoch + 1 == epoch and not fired:
            fired.append(epoch)
            stop()
        return original(run, update)

    monkeypatch.setattr(loop._Run, "train_epoch", train_epoch)


def printed_command(stderr: str, lead: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith(lead))
    return shlex.split(line.split("with: ", 1)[1])


def test_sigterm_in_epoch_2_prints_the_resume_command_and_it_finishes_the_run(shapes, tmp_path, monkeypatch):
    out = tmp_path / "run"
    stop_in_epoch(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, _, stderr = run_cli("train", shapes, *FAST, "--out", out)

    assert code == 130 and "run the same command again" not in stderr
    command = printed_command(stderr, "interrupted:")
    assert command == ["clipsearch", "train", str(shapes), *FAST, "--out", str(out), "--resume"]
    assert json.loads((out / "config.json").read_text())["epochs_done"] == 1

    code, _, stderr = run_cli(*command[1:])  # exactly as printed
    assert code == 0, stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs_done"] == 2 and saved["step"] == 2 * (len(list(shapes.glob("train/*.png"))) // 32)
    rows = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    assert [row["epoch"] for row in rows if "loss" not in row] == [0, 1, 2]  # validation once per epoch, none twice


@pytest.mark.parametrize("how", ["ctrl-c", "crash"])
def test_ctrl_c_and_a_crash_mid_epoch_say_how_to_continue(shapes, tmp_path, monkeypatch, how):
    out = tmp_path / "run"

    def crash() -> None:
        raise ClipsearchError("cannot train on broken.png: truncated")

    stop_in_epoch(monkeypatch, 2, (lambda: os.kill(os.getpid(), signal.SIGINT)) if how == "ctrl-c" else crash)
    code, _, stderr = run_cli("train", shapes, *FAST, "--out", out)

    assert code == (130 if how == "ctrl-c" else 1)
    lead = "interrupted:" if how == "ctrl-c" else "training stopped:"
    assert printed_command(stderr, lead)[-3:] == ["--out", str(out), "--resume"]
    if how == "crash":
        assert "error: cannot train on broken.png" in stderr


def test_an_interrupt_before_the_first_epoch_ends_says_to_start_again(shapes, tmp_path, monkeypatch):
    out = tmp_path / "run"
    stop_in_epoch(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, _, stderr = run_cli("train", shapes, *FAST, "--out", out)

    assert code == 130 and "nothing to resume" in stderr
    assert printed_command(stderr, "interrupted:") == ["clipsearch", "train", str(shapes), *FAST, "--out", str(out)]
