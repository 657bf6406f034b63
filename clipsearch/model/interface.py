"""The encoder interface every layer above the model types against.

`index/` and `tasks/` only ever call these members, so they need not import the torch
backend (`encoder.py`) to name its type; any object with these members (another backend,
a test double) serves them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .spec import ModelSpec


class EncoderLike(Protocol):
    """Turns images and texts into L2-normalised float32 vectors of width `dim`."""

    spec: ModelSpec
    dim: int
    device: Any  # where tensors go (a torch.device for the torch backend); `.type` names it
    preprocess: Callable[[Image.Image], Any]  # one decoded image -> the tensor the model takes

    @property
    def image_size(self) -> int:
        """The side the model's input is resized to."""
        ...

    def preprocessing(self) -> dict[str, Any]:
        """How pixels become tensors, for the manifest."""
        ...

    def encode_image_tensors(self, pixels: Any) -> np.ndarray:
        """An already preprocessed batch (N, 3, H, W) -> (N, dim) unit vectors."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...
