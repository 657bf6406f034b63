"""Which encoder serves a model: the one factory every caller that embeds asks.

A backend is how the model runs (torch today; exported CPU graphs and Hugging Face
transformers models plug in here), chosen per call; the vectors it gives are what the
index stores, so its identity goes with the spec into the manifest.
"""

from __future__ import annotations

from typing import Any

from ..errors import ClipsearchError
from .encoder import Encoder
from .interface import EncoderLike
from .spec import ModelSpec

BACKENDS: tuple[str, ...] = ("auto", "torch")


def load_encoder(spec: ModelSpec, backend: str = "auto", **options: Any) -> EncoderLike:
    """The encoder for `spec` on `backend` ("auto": the best one available for this machine)."""
    if backend not in BACKENDS:
        raise ClipsearchError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return Encoder(spec, **options)
