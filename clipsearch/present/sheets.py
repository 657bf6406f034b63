"""Contact sheets: a PNG grid of letterboxed thumbnails with captions of one or more lines.

Search results (`hit_captions`) show rank and score, the label when the index has one, and the
file name, elided in the middle when it is too wide, so its end (the extension, a frame number)
always shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_write

# Contact sheet layout, in pixels.
SHEET_MARGIN = 8
CAPTION_FONT_SIZE = 13
TITLE_FONT_SIZE = 18
SHEET_BACKGROUND = (255, 255, 255)
THUMB_BACKGROUND = (32, 32, 32)
TEXT_COLOR = (20, 20, 20)


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    out: Path,
    thumb: int = 192,
    columns: int | None = None,
    title: str | None = None,
) -> Path:
    """A PNG grid of letterboxed thumbnails, each with its caption under it (lines split on newlines).

    Width is ``columns * thumb + (columns + 1) * SHEET_MARGIN``. Caption lines too
    wide for a thumbnail are elided in the middle with "...". Images smaller than ``thumb`` are
    upscaled with NEAREST so tiny ones (32x32 CIFAR) stay crisp rather than blurred.
    Default columns: all in one row up to 4, else ceil(sqrt(n)) (10 for 100).
    """
    if not images:
        raise ValueError("contact sheet needs at least one image")
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 pixels, got {thumb}")
    n = len(images)
    if columns is None:
        columns = min(n, max(4, math.ceil(math.sqrt(n))))
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    rows = math.ceil(n / columns)

    caption_font = ImageFont.load_default(size=CAPTION_FONT_SIZE)
    title_font = ImageFont.load_default(size=TITLE_FONT_SIZE)
    line_height = _line_height(caption_font) + 2
    caption_height = max(len(str(c).split("\n")) for c in captions) * line_height + 4
    title_height = _line_height(title_font) + SHEET_MARGIN if title else 0
    cell_height = thumb + caption_height

    sheet = Image.new(
        "RGB",
        (
            columns * thumb + (columns + 1) * SHEET_MARGIN,
            title_height + rows * (cell_height + SHEET_MARGIN) + SHEET_MARGIN,
        ),
        SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        sheet_width = sheet.width - 2 * SHEET_MARGIN
        draw.text(
            (SHEET_MARGIN, SHEET_MARGIN), _fit_text(title, title_font, sheet_width), font=title_font, fill=TEXT_COLOR
        )
    for i, (image, caption) in enumerate(zip(images, captions)):
        x = SHEET_MARGIN + (i % columns) * (thumb + SHEET_MARGIN)
        y = title_height + SHEET_MARGIN + (i // columns) * (cell_height + SHEET_MARGIN)
        sheet.paste(_letterboxed_thumbnail(image, thumb), (x, y))
        for row, line in enumerate(str(caption).split("\n")):
            position = (x, y + thumb + 3 + row * line_height)
            draw.text(position, _fit_text(line, caption_font, thumb), font=caption_font, fill=TEXT_COLOR)
    return atomic_write(out, lambda f: sheet.save(f, format="PNG"))


def _letterboxed_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled to fit a size x size square (aspect kept), centred on a dark background."""
    rgba = image.convert("RGBA")  # keeps transparency so it composites onto the background
    scale = size / max(rgba.size)
    fitted = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    rgba = rgba.resize(fitted, resample)
    cell = Image.new("RGB", (size, size), THUMB_BACKGROUND)
    cell.paste(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2), rgba)
    return cell


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return int(font.getbbox("Ag|")[3])  # bottom edge of the tallest glyphs


def _fit_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` on one line, at most ``width`` pixels wide: the middle elided with "..." when it must be, so
    both its start and its end stay (a file name keeps its extension)."""
    text = " ".join(str(text).split())
    if font.getlength(text) <= width:
        return text
    # Binary search for the most characters kept, split between head and tail, that fit with the ellipsis.
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if font.getlength(_elided(text, mid)) <= width:
            low = mid
        else:
            high = mid - 1
    return _elided(text, low)


def _elided(text: str, keep: int) -> str:
    """`keep` characters of `text` around an ellipsis, two thirds of them from its end (a name's distinct part)."""
    head = keep // 3
    return text[:head] + "..." + text[len(text) - (keep - head) :]


def hit_name(hit: Any) -> str:
    """A search hit's file name (the part of a dataset id after "#", e.g. "test/29")."""
    uri = str(getattr(hit, "uri", "") or hit.id)
    return uri.rsplit("#", 1)[1] if "#" in uri else Path(uri).name


def hit_captions(hits: Sequence[Any]) -> list[str]:
    """Captions of search hits (index.query.Hit): "#rank score · label" over the file name; the label
    (label_name, else zs_label, else probe_label) only when the index has one."""
    captions = []
    for hit in hits:
        row = getattr(hit, "row", {}) or {}
        label = row.get("label_name") or row.get("zs_label") or row.get("probe_label")
        first = f"#{hit.rank} {hit.score:.3f}" + (f" · {label}" if label else "")
        captions.append(f"{first}\n{hit_name(hit)}")
    return captions
