"""Shared by the index/search/CLI tests: count the images an encoder encodes; clean tiny indexes to corrupt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_runner import run_cli
from imagegen import write_distinct_images

TINY = ["--model", "tiny", "--pretrained", "none"]
GOOD = ["a.png", "b.png", "c.jpg", "sub/d.png", "sub/e.png", "f.png"]


def count_encoded(monkeypatch: pytest.MonkeyPatch, encoder, fail_on_call: int | None = None) -> list[int]:
    """Wrap `encoder.encode_image_tensors`; returns the list of batch sizes it is called with.

    With `fail_on_call=n`, the n-th call raises KeyboardInterrupt instead (a user's Ctrl-C).
    """
    calls: list[int] = []
    original = type(encoder).encode_image_tensors.__get__(encoder)  # the real method, even if wrapped before

    def counting(pixels):
        if fail_on_call is not None and len(calls) + 1 == fail_on_call:
            raise KeyboardInterrupt
        calls.append(len(pixels))
        return original(pixels)

    monkeypatch.setattr(encoder, "encode_image_tensors", counting)
    return calls


def build_clean_indexes(base: Path, folders: dict[str, list[str]]) -> Path:
    """One tiny-model index per folder (name -> image files, distinct pictures) under <base>/indexes."""
    for offset, (folder, names) in enumerate(folders.items()):
        write_distinct_images(base / folder, names, first_seed=50 * offset)
        code, _, stderr = run_cli("index", base / folder, *TINY, "--workers", "0", "--root", base / "indexes")
        assert code == 0, stderr
    return base


def private_root(clean: Path, tmp_path: Path) -> Path:
    """A private copy of a clean index root, free to corrupt."""
    shutil.copytree(clean / "indexes", tmp_path / "indexes")
    return tmp_path / "indexes"
