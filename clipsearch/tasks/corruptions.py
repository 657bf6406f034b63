"""Image corruptions for robustness evaluation (distribution shift), CIFAR-10-C style.

Each corruption has five severities with the parameters of CIFAR-10-C
(Hendrycks & Dietterich 2019, make_cifar_c.py) and works on the image at its
stored resolution. Blur is the one scale-dependent corruption: its sigma is
given for 32 px and scaled with the image's short side, so a severity means
the same relative blur on a CIFAR image and on a photo.

Noise is seeded from the corruption and a per-image key (the row id), so the
same image always gets the same noise, whatever the batch or worker order.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ..errors import ClipsearchError

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 32  # the image size the blur parameters are given for

# Per severity 1..5 (CIFAR-10-C).
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # on pixels in [0, 1]
SHOT_NOISE_PHOTONS = (500, 250, 100, 75, 50)  # Poisson rate at full intensity; fewer = noisier
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # pixels at 32 px
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)  # distance from the per-channel mean is multiplied by this
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value
JPEG_QUALITY = (80, 65, 58, 50, 40)


def _unit(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def _gaussian_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    pixels = _unit(image)
    return _image(pixels + rng.normal(0.0, GAUSSIAN_NOISE_STD[severity - 1], size=pixels.shape))


def _shot_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    photons = SHOT_NOISE_PHOTONS[severity - 1]
    return _image(rng.poisson(_unit(image) * photons) / photons)


def _gaussian_blur(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    sigma = GAUSSIAN_BLUR_SIGMA[severity - 1] * min(image.size) / REFERENCE_SIDE
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=sigma))  # Pillow's radius is the sigma


def _contrast(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    pixels = _unit(image)
    means = pixels.mean(axis=(0, 1), keepdims=True)
    return _image((pixels - means) * CONTRAST_FACTOR[severity - 1] + means)


def _brightness(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv  # CIFAR-10-C's HSV conversion; matplotlib only when used

    hsv = rgb_to_hsv(_unit(image))
    hsv[..., 2] = np.clip(hsv[..., 2] + BRIGHTNESS_SHIFT[severity - 1], 0.0, 1.0)
    return _image(hsv_to_rgb(hsv))


def _jpeg(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    with Image.open(buffer) as compressed:
        return compressed.convert("RGB")


CORRUPTIONS: dict[str, Callable[[Image.Image, int, np.random.Generator], Image.Image]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg": _jpeg,
}


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity, e.g. gaussian_noise:3."""

    name: str
    severity: int

    def __str__(self) -> str:
        return f"{self.name}:{self.severity}"

    def seed(self, key: str) -> int:
        """The noise seed for one image: the same for the same corruption and key, in any process."""
        digest = hashlib.blake2b(f"{self}|{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def apply(self, image: Image.Image, key: str) -> Image.Image:
        """The corrupted RGB image, same size; `key` (e.g. the row id) seeds the noise."""
        return CORRUPTIONS[self.name](image, self.severity, np.random.default_rng(self.seed(key)))


def parse_corruption(spec: str) -> Corruption:
    """`NAME:SEVERITY` (severity 1-5) to a Corruption; a one-line error otherwise."""
    name, _, severity = spec.strip().partition(":")
    if name not in CORRUPTIONS:
        raise ClipsearchError(
            f"unknown corruption {name!r} in {spec!r}: use NAME:SEVERITY with NAME one of {', '.join(CORRUPTIONS)}"
        )
    if not severity.strip().isdigit() or int(severity) not in SEVERITIES:
        raise ClipsearchError(f"corruption {spec!r} needs a severity from 1 to 5, e.g. {name}:3")
    return Corruption(name, int(severity))
