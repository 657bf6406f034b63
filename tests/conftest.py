"""Hermetic tests: no network, an empty model cache, indexes under tmp_path, seeded models."""

from __future__ import annotations

import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["CLIPSEARCH_OFFLINE"] = "1"
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see clipsearch/cli.py

# Tiny test models gain nothing from intra-op threads; on 2 shared cores they only contend.
import torch

torch.set_num_threads(1)

_real_connect = socket.socket.connect


def _guarded_connect(sock: socket.socket, address):  # type: ignore[no-untyped-def]
    if sock.family == socket.AF_UNIX or (
        isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")
    ):
        return _real_connect(sock, address)
    raise RuntimeError(f"tests must not use the network (tried to connect to {address})")


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


def _isolate(home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_HOME", str(home / "indexes"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))  # the default root too, were CLIPSEARCH_HOME unset
    monkeypatch.setenv("CLIPSEARCH_DATA", str(home / "data"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))  # an empty model cache: no export or weights of the user's


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_home(tmp_path_factory: pytest.TempPathFactory):
    """For module- and session-scoped fixtures, which run before any test's own home is set."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(tmp_path_factory.mktemp("session-home"), monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(tmp_path_factory.mktemp("home"), monkeypatch)


@pytest.fixture(scope="session")
def tiny_encoder():
    """The shipped tiny architecture with seeded random weights (fast on CPU)."""
    from clipsearch.model.encoder import Encoder

    return Encoder.load("tiny", "none", device="cpu")
