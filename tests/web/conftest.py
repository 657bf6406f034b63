"""Session fixtures of the web tests: the tiny indexes of web_indexes.py, built once and shared by the API
tests and the browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from web_indexes import build_web_indexes


@pytest.fixture(scope="session")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The index root holding web_indexes.SHAPES_INDEX and CIFAR_INDEX (read-only: copy it to change it)."""
    return build_web_indexes(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="session")
def shapes_folder(web_root: Path) -> Path:
    """The image folder of SHAPES_INDEX (real files of the index, for uploads)."""
    return web_root.parent / "shapes"
