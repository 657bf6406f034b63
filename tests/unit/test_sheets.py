"""present/sheets.py: contact sheets are real PNGs with the promised geometry and letterboxing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsearch.present import sheets


def open_png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    image.load()
    return image


def test_contact_sheet_geometry_and_letterbox(tmp_path):
    images = [
        Image.new("RGB", (300, 100), (200, 0, 0)),
        Image.new("RGB", (50, 80), (0, 200, 0)),
        Image.new("L", (64, 64), 128),
    ]
    out = sheets.contact_sheet(
        images,
        ["#1 0.312 wide.jpg", "#2 0.300 tall.jpg", "#3 0.1 grey.png"],
        tmp_path / "sheet.png",
        thumb=100,
        columns=2,
    )

    sheet = open_png(out)
    margin = sheets.SHEET_MARGIN
    assert sheet.width == 2 * 100 + 3 * margin
    rows_height = sheet.height - margin
    assert rows_height % 2 == 0  # two equal rows
    # Wide image: fills the thumb width, letterboxed above and below (aspect 3:1 -> 100x33).
    x0, y0 = margin, margin
    assert sheet.getpixel((x0 + 50, y0 + 50)) == (200, 0, 0)
    assert sheet.getpixel((x0 + 50, y0 + 5)) == sheets.THUMB_BACKGROUND
    # Tall image: pillarboxed left and right (50x80 -> 62x100).
    x1 = margin + 100 + margin
    assert sheet.getpixel((x1 + 50, y0 + 50)) == (0, 200, 0)
    assert sheet.getpixel((x1 + 5, y0 + 50)) == sheets.THUMB_BACKGROUND
    assert list(tmp_path.iterdir()) == [out]  # no temp file left behind


def test_contact_sheet_upscales_small_images_with_nearest(tmp_path):
    tiny = Image.new("RGB", (32, 32), (0, 0, 0))
    tiny.paste((255, 255, 255), (0, 0, 16, 32))  # left half white, right half black
    out = sheets.contact_sheet([tiny], ["cifar"], tmp_path / "tiny.png", thumb=192)

    sheet = open_png(out)
    m = sheets.SHEET_MARGIN
    thumb = sheet.crop((m, m, m + 192, m + 192))
    # NEAREST at an exact 6x: only the two original colours, split exactly at column 96.
    assert sorted(c for _, c in thumb.getcolors()) == [(0, 0, 0), (255, 255, 255)]
    assert thumb.getpixel((95, 100)) == (255, 255, 255) and thumb.getpixel((96, 100)) == (0, 0, 0)


def test_contact_sheet_with_100_images_title_and_long_captions(tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)) for _ in range(100)]
    captions = [f"#{i + 1} 0.{i:03d} " + "a_very_long_file_name" * 5 + ".jpg" for i in range(100)]
    out = sheets.contact_sheet(images, captions, tmp_path / "nested" / "sheet.png", thumb=64, title="query: a dog")

    sheet = open_png(out)
    assert sheet.width == 10 * 64 + 11 * sheets.SHEET_MARGIN  # default: 10 columns for 100 images
    assert sheet.height > 10 * 64


def test_contact_sheet_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        sheets.contact_sheet([], [], tmp_path / "x.png")
    with pytest.raises(ValueError):
        sheets.contact_sheet([Image.new("RGB", (8, 8))], ["a", "b"], tmp_path / "x.png")


def test_long_names_are_elided_in_the_middle_and_keep_their_end():
    from PIL import ImageFont

    font = ImageFont.load_default(size=sheets.CAPTION_FONT_SIZE)
    name = "IMG_" + "x" * 200 + "_0123.jpg"
    fitted = sheets._fit_text(name, font, 100)
    assert fitted.startswith("IMG_") and fitted.endswith("0123.jpg") and "..." in fitted
    assert 80 < font.getlength(fitted) <= 100  # as much as fits
    assert sheets._fit_text("short", font, 100) == "short"


def test_hit_captions_show_the_label_when_there_is_one_and_the_whole_file_name():
    from types import SimpleNamespace

    hits = [
        SimpleNamespace(rank=1, score=0.3125, uri="/photos/2024/forest/IMG_0012.jpg", id="IMG_0012.jpg", row={"label_name": "cat"}),
        SimpleNamespace(rank=2, score=0.25, uri="/photos/b.png", id="b.png", row={"label_name": None, "zs_label": "dog"}),
        SimpleNamespace(rank=3, score=0.125, uri="cifar10:/data/cifar-10-batches-py#test/29", id="x", row={}),
    ]  # fmt: skip
    assert sheets.hit_captions(hits) == ["#1 0.312 · cat\nIMG_0012.jpg", "#2 0.250 · dog\nb.png", "#3 0.125\ntest/29"]


def test_captions_of_several_lines_make_taller_cells(tmp_path):
    one = open_png(sheets.contact_sheet([Image.new("RGB", (8, 8))], ["a"], tmp_path / "one.png", thumb=64))
    two = open_png(sheets.contact_sheet([Image.new("RGB", (8, 8))], ["a\nb.png"], tmp_path / "two.png", thumb=64))
    assert two.height > one.height and two.width == one.width
    # The second line is drawn: dark text pixels below the first line's band.
    below = np.asarray(two.convert("L"))[one.height - sheets.SHEET_MARGIN - 2 : two.height - sheets.SHEET_MARGIN]
    assert (below < 128).any()
