"""Shared by the index/search/CLI tests: count the images an encoder encodes."""

from __future__ import annotations

import pytest


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
