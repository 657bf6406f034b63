"""Robust image decoding: any file a user's folder may hold becomes an upright RGB image
or a one-line reason why it cannot.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .cifar import is_cifar_uri, open_cifar_uri

try:  # HEIC/HEIF photos from phones, when the optional plugin is installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUFFIXES = (".heic", ".heif")
except ImportError:
    HEIF_SUFFIXES = ()

IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", *HEIF_SUFFIXES))
# Refuse decompression bombs ourselves (header only) instead of relying on
# Pillow's warning; 100 MP admits every camera on the market.
MAX_PIXELS = 100_000_000
# Resizing the short side to the model's input scales the long side by the same factor: a
# 300000x1 strip would become a 67-megapixel tensor. No photo is anywhere near this narrow.
MAX_ASPECT_RATIO = 50
# Files are read into memory with at most this many bytes (a 100 MP PNG is far smaller), so no read
# is unbounded even if a file grows or is swapped for a device while it is read.
MAX_FILE_BYTES = 512 * 1024 * 1024
# One file's read + decode + preprocess may take this long before it is skipped: a stalled network
# mount or a pathological file must not block an indexing run.
DECODE_SECONDS = 60.0
_ALPHA_BACKGROUND = (255, 255, 255)


class ImageDecodeError(Exception):
    """The file is not a usable image; the message is the reason stored in `skipped`."""


@contextmanager
def time_limit(seconds: float | None = None) -> Iterator[None]:
    """Raise ImageDecodeError when the block runs longer than `seconds` (default DECODE_SECONDS,
    read at call time) of real time.

    Signals reach only a process's main thread: decoding workers are processes, and the CLI decodes
    in its main thread; elsewhere (a UI worker thread) the block runs without a limit.
    """
    seconds = DECODE_SECONDS if seconds is None else seconds
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise ImageDecodeError(f"reading and decoding took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    pending, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending > 0:  # give back a timer someone else had set (a caller's alarm, a test timeout)
            signal.setitimer(signal.ITIMER_REAL, max(pending - (time.monotonic() - started), 1e-3))


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(image: Image.Image) -> Image.Image:
    """Palette, alpha, CMYK, 16-bit and greyscale images to 8-bit RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit data: a plain convert() would clip everything above 255 to white.
        pixels = np.asarray(image, dtype=np.int64)
        peak = 65535 if mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255
        return Image.fromarray((np.clip(pixels, 0, peak) * 255 // peak).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
        return Image.fromarray((scaled * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def read_image_bytes(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, bounded by `limit`. FIFOs, devices and sockets (also behind a symlink)
    are refused before they are read: opening a FIFO would wait forever, /dev/zero never ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as err:  # e.g. a symlink loop, a name too long
        raise ImageDecodeError(f"unreadable: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise ImageDecodeError(f"too large: {info.st_size} bytes exceeds {limit // 2**20} MiB")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ImageDecodeError(f"too large: more than {limit // 2**20} MiB")
    return data


def file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def check_dimensions(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, from the header alone, images whose decode or preprocessing would cost too much."""
    if width * height > max_pixels:
        raise ImageDecodeError(f"too large: {width}x{height} exceeds {max_pixels // 1_000_000} megapixels")
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise ImageDecodeError(f"too narrow: {width}x{height} is more than {MAX_ASPECT_RATIO}:1")


def decode_image(source: str | Path | bytes, min_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a file (or its bytes) to an upright RGB image.

    `min_size` lets JPEGs decode at a reduced DCT scale (Image.draft, 2-3x faster here
    for camera photos) while both sides stay >= min_size, so the model's own
    resize still starts from at least its input resolution.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source if isinstance(source, bytes) else read_image_bytes(source)))
            width, height = image.size
            check_dimensions(width, height, max_pixels)
            if min_size and image.format == "JPEG":
                image.draft("RGB", (min_size, min_size))
            image.seek(0)  # first frame of animations
            image.load()
            upright = to_rgb(ImageOps.exif_transpose(image))
            # The stored width/height are the file's upright size, not the draft's.
            turned = upright.size != image.size  # a 90° EXIF turn swaps the sides
            upright.info["original_size"] = (height, width) if turned else (width, height)
            return upright
    except ImageDecodeError:  # read_image_bytes already said why (missing, permission, not a file)
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"too large: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated/corrupt data
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageDecodeError(f"corrupt image: {reason}") from None


def open_uri(uri: str, min_size: int | None = None) -> Image.Image:
    """Pixels for a stored row's `uri`: a file path or a dataset reference (resolved by its source module)."""
    if is_cifar_uri(uri):
        image = open_cifar_uri(uri)
        image.info["original_size"] = image.size
        return image
    return decode_image(uri, min_size=min_size)
