"""Generated test images: small distinct pictures, photo-like large ones, and awkward files
(a bare PNG header, EXIF-rotated JPEGs) — all deterministic from a seed.

Also imported by bench/bench_index.py, which generates its photo folder with `photo_like`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter


def distinct_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A small RGB picture (coloured blocks + noise) that differs clearly from other seeds."""
    rng = np.random.default_rng(seed)
    width, height = size
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(blocks, "RGB").resize((width, height), Image.NEAREST)
    noise = rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8), "RGB")


def write_distinct_images(folder: Path, names: list[str], first_seed: int = 0) -> dict[str, int]:
    """Write one distinct picture per relative name (format from its suffix); returns name -> seed."""
    seeds = {}
    for offset, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        seeds[name] = first_seed + offset
        options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
        distinct_image(first_seed + offset).save(path, **options)
    return seeds


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Camera-like content: smooth colour gradients, soft shapes, fine sensor grain.

    The scene is drawn at a quarter of the resolution and upsampled (smooth, like optics),
    then grain is added at full resolution, so a 12 MP picture takes a fraction of a second.
    """
    rng = np.random.default_rng(seed)
    small_w, small_h = max(8, width // 4), max(8, height // 4)
    coarse = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse, "RGB").resize((small_w, small_h), Image.BICUBIC), np.float32)
    ramp = (
        np.linspace(-40, 40, small_w, dtype=np.float32)[None, :, None]
        + np.linspace(-30, 30, small_h, dtype=np.float32)[:, None, None]
    )
    scene = Image.fromarray(np.clip(base + ramp, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, small_w)), int(rng.integers(0, small_h))
        w, h = (
            int(rng.integers(small_w // 20 + 1, small_w // 3 + 2)),
            int(rng.integers(small_h // 20 + 1, small_h // 3 + 2)),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.polygon([(x0, y0), (x0 + w, y0 + h // 3), (x0 + w // 2, y0 + h)], fill=colour)
    scene = scene.filter(ImageFilter.GaussianBlur(radius=max(0.5, min(small_w, small_h) / 300)))
    # Grain in Pillow's C code (numpy on 36 M values is slow): a random tile, repeated, added with offset.
    tile = Image.fromarray(rng.integers(128 - 8, 128 + 9, (min(height, 509), min(width, 509)), dtype=np.uint8), "L")
    grain = Image.new("L", (width, height))
    for top in range(0, height, tile.height):
        for left in range(0, width, tile.width):
            grain.paste(tile, (left, top))
    return ImageChops.add(scene.resize((width, height), Image.BILINEAR), Image.merge("RGB", (grain,) * 3), offset=-128)


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height in its IHDR but carries no pixel data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path, stored_size: tuple[int, int] = (60, 40)) -> np.ndarray:
    """A JPEG stored sideways with EXIF orientation 6 (turn 90° clockwise to view).

    The upright picture is portrait with a pure red block in its top-right corner; returns
    the upright pixels a correct decoder must produce (before JPEG loss).
    """
    stored_w, stored_h = stored_size
    upright = np.full((stored_w, stored_h, 3), 40, np.uint8)  # portrait: height = stored width
    upright[: stored_w // 4, -stored_h // 4 :] = (255, 0, 0)
    # Orientation 6 means the stored pixels are the upright ones turned 90° anticlockwise.
    stored = np.rot90(upright, k=1).copy()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored, "RGB").save(path, quality=95, exif=exif.tobytes())
    return upright
