"""open_clip's evaluation transform in PIL + numpy: what the exported image towers take.

Equal to open_clip's torchvision pipeline (resize the short side with PIL's antialiased
filter, centre crop, /255, normalise) to float rounding, so vectors from the torch and the
exported backends agree; without torch, an image query on an exported model stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "squash")


def supports(cfg: dict[str, Any]) -> bool:
    """Whether this preprocessing config (the manifest's `preprocessing`) can be done here."""
    size = cfg.get("size")
    square = isinstance(size, int) or (isinstance(size, (list, tuple)) and len(set(size)) == 1)
    return square and cfg.get("resize_mode", "shortest") in RESIZE_MODES and cfg.get("interpolation") in FILTERS


class Preprocess:
    """One decoded image -> a (3, size, size) float32 array, as open_clip's eval transform gives it."""

    def __init__(self, cfg: dict[str, Any]):
        if not supports(cfg):
            raise ClipsearchError(f"preprocessing {cfg} is not supported by the exported backends")
        size = cfg["size"]
        self.size = int(size if isinstance(size, int) else size[0])
        self.filter = FILTERS[cfg["interpolation"]]
        self.squash = cfg.get("resize_mode") == "squash"
        self.fill = int(cfg.get("fill_color", 0))
        self.mean = np.asarray(cfg["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(cfg["std"], np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        if self.squash:
            image = image.resize((self.size, self.size), self.filter)
        else:
            image = _center_crop(_resize_short_side(image, self.size, self.filter), self.size, self.fill)
        pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / np.float32(255)
        return (pixels - self.mean) / self.std


def _resize_short_side(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    # torchvision's rule: the short side becomes `size`, the long one int(size * long / short).
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    return image.resize((size, new_long) if width <= height else (new_long, size), resample)


def _center_crop(image: Image.Image, size: int, fill: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:  # torchvision pads a too-small image first
        padded = Image.new("RGB", (max(width, size), max(height, size)), (fill,) * 3)
        padded.paste(image, ((padded.width - width) // 2, (padded.height - height) // 2))
        image, (width, height) = padded, padded.size
    top, left = round((height - size) / 2.0), round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))
