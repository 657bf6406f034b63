"""Every file clipsearch writes follows the umask (issue 14 item 13): 0644 under umask 022 and 0600 under
077, for grid PNGs, confusion.png, results.json, curves.png, safetensors (probes and checkpoints) and
contact-sheet exports; never mkstemp's 0600 whatever the umask."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.files import atomic_write, atomic_write_path, write_json
from clipsearch.present.plots import plot_confusion, plot_recall_curves, plot_training_curves
from clipsearch.present.sheets import contact_sheet
from clipsearch.tasks.probes.probe import Probe


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def write_everything(folder: Path) -> list[Path]:
    """One file from each writer that keeps results."""
    rows = [{"step": 1, "epoch": 0.5, "loss": 2.0, "lr": 1e-3}, {"step": 2, "epoch": 1, "val_top1": 0.3}]
    probe = Probe("linear", ["a", "b"], {"coef": np.zeros((2, 3))}, {"kind": "linear"})
    return [
        write_json(folder / "results.json", {"top1": 0.5}),
        plot_confusion(np.eye(2, dtype=int), ["a", "b"], folder / "confusion.png"),
        plot_recall_curves({"text to image": [0.1, 0.5, 1.0]}, folder / "recall_at_k.png"),
        plot_training_curves(rows, folder / "curves.png"),
        contact_sheet([Image.new("RGB", (8, 8))], ["x.png"], folder / "grid.png"),
        probe.save(folder / "probes" / "linear.safetensors"),
        folder / "probes" / "linear.json",
        atomic_write_path(folder / "weights.safetensors", lambda tmp: tmp.write_bytes(b"w")),
        atomic_write(folder / "plain.bin", lambda f: f.write(b"x")),
    ]


def test_written_files_follow_the_umask(tmp_path, umask):
    for path in write_everything(tmp_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temp file left behind


def test_reading_the_umask_never_changes_it_for_other_threads(tmp_path, umask):
    """A file created by another thread while a result is written gets the umask's mode too."""
    stop, modes = threading.Event(), []

    def create_files() -> None:
        i = 0
        while not stop.is_set():
            path = tmp_path / f"other-{i}"
            path.write_bytes(b"")
            modes.append(stat.S_IMODE(path.stat().st_mode))
            i += 1

    worker = threading.Thread(target=create_files)
    worker.start()
    try:
        for i in range(300):
            write_json(tmp_path / f"r{i}.json", {"i": i})
    finally:
        stop.set()
        worker.join()
    assert modes and set(modes) == {0o666 & ~umask}
