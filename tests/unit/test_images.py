"""Robust decoding (acceptance check 4): a folder seeded with every kind of awkward or broken
file indexes without a crash, bad files land in `skipped` with a reason, awkward-but-valid
files become correct upright RGB pixels; JPEG draft decoding stays close to a full decode."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from imagegen import exif_rotated_jpeg, photo_like, write_distinct_images, write_png_header
from index_helpers import count_encoded
from PIL import Image

from clipsearch.index.index import Index
from clipsearch.sources.folder import scan_folder
from clipsearch.sources.images import (
    MAX_ASPECT_RATIO,
    ImageDecodeError,
    decode_image,
    is_image_file,
    read_image_bytes,
    time_limit,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


# -- the awkward files, one writer each ---------------------------------------------------
def write_cmyk_jpeg(path: Path) -> None:
    Image.new("RGB", (40, 30), (200, 30, 40)).convert("CMYK").save(path, quality=95)


def write_16bit_png(path: Path) -> np.ndarray:
    """Greyscale 16-bit gradient 0..65535 from left to right; returns its values."""
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(values).save(path)  # mode I;16
    return values


def write_palette_png(path: Path) -> None:
    """Left half transparent palette entry, right half opaque blue."""
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 255, 0] + [0, 0, 255] + [0, 0, 0] * 254)  # 0: green (transparent), 1: blue
    image.paste(1, (20, 0, 40, 20))
    image.save(path, transparency=0)


def write_animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (30, 30), RED), Image.new("RGB", (30, 30), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_truncated_jpeg(path: Path) -> None:
    photo_like(200, 150, seed=5).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


GOOD = [
    "plain.jpg",
    "UPPER.JPG",
    "lower.jpeg",
    "Mixed.Png",
    "pic.webp",
    "pic.bmp",
    "pic.tif",
    "pic.TIFF",
    "deep/sub dir/ünïcødé name ✓.png",
]
AWKWARD = ["cmyk.jpg", "sixteen.png", "palette.png", "anim.gif", "exif6.jpg", "rgba.png"]
BROKEN = {  # name -> a word its skip reason must contain
    "empty.jpg": "not an image",
    "truncated.jpg": "truncated",
    "text named.jpg": "not an image",
    "bomb.png": "too large",
}
UNREADABLE = "no read permission.jpg"


def can_read_despite_chmod(path: Path) -> bool:
    """chmod 000 does not stop root (tests often run as root in containers)."""
    try:
        path.open("rb").close()
        return True
    except PermissionError:
        return False


@pytest.fixture(scope="module")
def awkward_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("awkward")
    write_distinct_images(folder, GOOD)
    write_cmyk_jpeg(folder / "cmyk.jpg")
    write_16bit_png(folder / "sixteen.png")
    write_palette_png(folder / "palette.png")
    write_animated_gif(folder / "anim.gif")
    exif_rotated_jpeg(folder / "exif6.jpg")
    Image.new("RGBA", (20, 20), (10, 200, 10, 128)).save(folder / "rgba.png")
    (folder / "empty.jpg").write_bytes(b"")
    write_truncated_jpeg(folder / "truncated.jpg")
    (folder / "text named.jpg").write_text("this is not a picture\n")
    write_png_header(folder / "bomb.png", 20000, 20000)
    write_distinct_images(folder, [UNREADABLE], first_seed=99)
    (folder / UNREADABLE).chmod(0)
    (folder / "notes.txt").write_text("not an image suffix: never scanned")
    return folder


def test_awkward_folder_indexes_without_a_crash(
    awkward_folder: Path, tmp_path: Path, tiny_encoder, monkeypatch
) -> None:
    unreadable_is_readable = can_read_despite_chmod(awkward_folder / UNREADABLE)
    index = Index.create("awkward", tmp_path, encoder=tiny_encoder)
    stats = index.add_folder(awkward_folder, workers=2, progress=False)  # decode in real worker processes

    expected_good = set(GOOD) | set(AWKWARD) | ({UNREADABLE} if unreadable_is_readable else set())
    expected_bad = set(BROKEN) | (set() if unreadable_is_readable else {UNREADABLE})
    indexed = set(index.rows(columns=["id"]).column("id").to_pylist())
    assert indexed == expected_good
    skipped = {row["id"]: row["reason"] for row in index.skipped()}
    assert set(skipped) == expected_bad
    for name, word in BROKEN.items():
        assert word in skipped[name], (name, skipped[name])
    if not unreadable_is_readable:
        assert "permission" in skipped[UNREADABLE] or "unreadable" in skipped[UNREADABLE]
    assert (stats.new, stats.skipped, stats.encoded) == (len(expected_good), len(expected_bad), len(expected_good))
    assert dict(stats.skipped_reasons) == skipped
    assert index.counts()["skipped"] == len(expected_bad)

    # The EXIF-rotated photo is stored upright (portrait), and so are the pixels that were encoded.
    row = index.rows("id = 'exif6.jpg'", ["width", "height", "vector"]).to_pylist()[0]
    assert (row["width"], row["height"]) == (40, 60)
    stored = np.asarray(Image.open(awkward_folder / "exif6.jpg").convert("RGB"))
    upright = Image.fromarray(np.rot90(stored, k=-1).copy())  # orientation 6: turn clockwise
    sideways = Image.fromarray(stored)
    vector = np.asarray(row["vector"], np.float32)
    assert float(vector @ tiny_encoder.encode_images([upright])[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(vector @ tiny_encoder.encode_images([sideways])[0]) < 0.9999

    # The animated GIF was encoded from its first (red) frame.
    gif_vector = np.asarray(index.rows("id = 'anim.gif'", ["vector"]).to_pylist()[0]["vector"], np.float32)
    red, blue = tiny_encoder.encode_images([Image.new("RGB", (30, 30), RED), Image.new("RGB", (30, 30), BLUE)])
    assert float(gif_vector @ red) == pytest.approx(1.0, abs=1e-5)
    assert float(gif_vector @ blue) < float(gif_vector @ red)

    # Unchanged bad files are remembered, not decoded again; the skipped list stays as it was.
    calls = count_encoded(monkeypatch, tiny_encoder)
    again = index.add_folder(awkward_folder, workers=0, progress=False)
    assert sum(calls) == 0 and again.unchanged == len(expected_good) and again.skipped == len(expected_bad)
    assert {row["id"]: row["reason"] for row in index.skipped()} == skipped


def test_unreadable_file_is_skipped_with_reason(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, ["ok.png", "locked.png"])
    (folder / "locked.png").chmod(0)
    if can_read_despite_chmod(folder / "locked.png"):
        pytest.skip("running as root: file permissions do not stop reads, so an unreadable file cannot be made")
    index = Index.create("locked", tmp_path / "idx", encoder=tiny_encoder)
    stats = index.add_folder(folder, workers=0, progress=False)
    assert stats.new == 1 and stats.skipped == 1
    assert index.skipped()[0]["id"] == "locked.png"
    assert "permission" in index.skipped()[0]["reason"] or "unreadable" in index.skipped()[0]["reason"]


# -- pixel checks of each awkward format -------------------------------------------------
def test_exif_orientation_gives_upright_pixels(tmp_path: Path) -> None:
    path = tmp_path / "exif6.jpg"
    expected = exif_rotated_jpeg(path)
    for min_size in (None, 16):  # with and without JPEG draft scaling
        image = decode_image(path, min_size=min_size)
        pixels = np.asarray(image, np.float32)
        assert image.mode == "RGB" and image.info["original_size"] == (40, 60)
        assert image.size == ((40, 60) if min_size is None else (20, 30))  # draft: half scale, still >= 16
        h, w = pixels.shape[:2]
        top_right = pixels[: h // 5, -w // 5 :].mean(axis=(0, 1))
        top_left = pixels[: h // 5, : w // 5].mean(axis=(0, 1))
        assert top_right[0] > 200 and top_right[1:].max() < 60, top_right  # the red marker is top right
        assert np.abs(top_left - 40).max() < 15, top_left
    assert np.abs(np.asarray(decode_image(path), np.int16) - expected).mean() < 6  # only JPEG loss


def test_sixteen_bit_png_keeps_its_gradient(tmp_path: Path) -> None:
    values = write_16bit_png(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    pixels = np.asarray(decode_image(tmp_path / "sixteen.png"), np.int32)
    assert pixels.shape == (16, 64, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.abs(pixels[..., 0] - values.astype(np.int64) * 255 // 65535).max() <= 1
    assert pixels.min() == 0 and pixels.max() == 255 and (pixels < 250).mean() > 0.9  # not all white


def test_palette_with_transparency_goes_on_white(tmp_path: Path) -> None:
    write_palette_png(tmp_path / "palette.png")
    pixels = np.asarray(decode_image(tmp_path / "palette.png"))
    assert (pixels[:, :20] == 255).all()  # the transparent (green) entry became background
    assert (pixels[:, 20:] == BLUE).all()


def test_cmyk_alpha_and_greyscale_become_rgb(tmp_path: Path) -> None:
    write_cmyk_jpeg(tmp_path / "cmyk.jpg")
    cmyk = decode_image(tmp_path / "cmyk.jpg")
    assert cmyk.mode == "RGB" and np.abs(np.asarray(cmyk, np.float32).mean(axis=(0, 1)) - (200, 30, 40)).max() < 4
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (np.asarray(decode_image(tmp_path / "clear.png")) == 255).all()
    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    assert (np.asarray(decode_image(tmp_path / "grey.png")) == 77).all()


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    write_animated_gif(tmp_path / "anim.gif")
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert np.abs(np.asarray(decode_image(tmp_path / "anim.gif"), np.int16) - RED).max() <= 2


def test_bad_files_raise_one_line_reasons(tmp_path: Path) -> None:
    write_png_header(tmp_path / "bomb.png", 20000, 20000)  # past Pillow's own bomb limit
    write_png_header(tmp_path / "big.png", 12000, 10000)  # 120 MP: only our limit catches it
    write_truncated_jpeg(tmp_path / "truncated.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    expected = {
        "bomb.png": "too large",
        "big.png": "exceeds 100 megapixels",
        "truncated.jpg": "truncated",
        "empty.jpg": "not an image",
        "text.jpg": "not an image",
        "missing.jpg": "not found",
    }
    for name, words in expected.items():
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(tmp_path / name)
        assert words in str(caught.value) and "\n" not in str(caught.value), (name, caught.value)


def test_scan_finds_every_suffix_in_any_case(tmp_path: Path) -> None:
    names = [
        "a.jpg",
        "b.JPEG",
        "c.Png",
        "d.webp",
        "e.BMP",
        "f.gif",
        "g.tif",
        "h.TIFF",
        "sub/i.jpg",
        "skip/j.jpg",
        "k_thumb.jpg",
        ".hidden/l.jpg",
    ]
    write_distinct_images(tmp_path, [n.replace(".JPEG", ".jpeg").replace(".BMP", ".bmp") for n in names])
    for lower, upper in (("b.jpeg", "b.JPEG"), ("e.bmp", "e.BMP")):
        os.replace(tmp_path / lower, tmp_path / upper)
    (tmp_path / "readme.txt").write_text("x")
    found = [item.id for item in scan_folder(tmp_path, exclude=["skip", "*_thumb.jpg"])]
    assert found == ["a.jpg", "b.JPEG", "c.Png", "d.webp", "e.BMP", "f.gif", "g.tif", "h.TIFF", "sub/i.jpg"]
    assert all(is_image_file(n) for n in names) and not is_image_file("x.txt")


# -- JPEG draft decoding ---------------------------------------------------------------
def _full_decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def test_draft_decode_matches_full_decode(tmp_path: Path, tiny_encoder) -> None:
    """A camera-size JPEG decoded at reduced DCT scale gives nearly the model input of a full decode."""
    path = tmp_path / "photo.jpg"
    photo_like(3000, 2000, seed=11).save(path, quality=90)
    full = _full_decode(path)
    # The real model's preprocessing (224 px) and the tiny model's (32 px).
    vit_preprocess = open_clip.image_transform(224, is_train=False)
    report = {}
    for label, preprocess, size in (
        ("224px", vit_preprocess, 224),
        ("tiny", tiny_encoder.preprocess, tiny_encoder.image_size),
    ):
        drafted = decode_image(path, min_size=size)
        assert min(drafted.size) >= size and drafted.size[0] < 3000  # reduced, never below the model input
        assert drafted.info["original_size"] == (3000, 2000)
        a, b = preprocess(full), preprocess(drafted)
        diff = (a - b).abs()
        report[label] = (float(diff.max()), float(diff.mean()), drafted.size)
        assert float(diff.mean()) < 0.03, report  # normalised units: pixel std ~ 1/0.27 per 255
        assert float(diff.max()) < 0.6, report
        if label == "tiny":
            vectors = tiny_encoder.encode_image_tensors(torch.stack([a, b]))
            report["cosine"] = float(vectors[0] @ vectors[1])
            assert report["cosine"] > 0.999, report
    print(f"draft vs full decode: {report}")


def test_decode_accepts_bytes(tmp_path: Path) -> None:
    """In-memory bytes (e.g. an uploaded query) decode to the same pixels as the file."""
    write_distinct_images(tmp_path, ["q.png"])
    from_bytes = decode_image((tmp_path / "q.png").read_bytes())
    assert np.array_equal(np.asarray(from_bytes), np.asarray(Image.open(tmp_path / "q.png").convert("RGB")))


# -- hostile files (issue 12: items 1, 2, 4) ------------------------------------------------
@pytest.mark.timeout(20)
def test_fifo_and_device_are_refused_without_opening_them(tmp_path: Path) -> None:
    """A FIFO would block the open forever, /dev/zero never ends: both refused by their file type."""
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    for name, kind in (("pipe.jpg", "a FIFO"), ("zero.jpg", "a character device")):
        with pytest.raises(ImageDecodeError, match=f"not a regular file \\({kind}\\)"):
            decode_image(tmp_path / name)


def test_extreme_aspect_ratio_is_refused_from_the_header(tmp_path: Path) -> None:
    """A 300000x1 PNG is 0.3 MP (under the pixel bound) but would preprocess to a 67 MP tensor."""
    Image.new("L", (300_000, 1), 128).save(tmp_path / "strip.png")
    Image.new("L", (1, 300_000), 128).save(tmp_path / "column.png")
    for name in ("strip.png", "column.png"):
        with pytest.raises(ImageDecodeError, match="too narrow"):
            decode_image(tmp_path / name)
    Image.new("RGB", (MAX_ASPECT_RATIO * 4, 4)).save(tmp_path / "panorama.png")  # at the bound: kept
    assert decode_image(tmp_path / "panorama.png").size == (MAX_ASPECT_RATIO * 4, 4)


def test_reads_are_bounded_in_size(tmp_path: Path) -> None:
    distinct_image_path = tmp_path / "ok.png"
    Image.new("RGB", (40, 30), RED).save(distinct_image_path)
    size = distinct_image_path.stat().st_size
    assert len(read_image_bytes(distinct_image_path, limit=size)) == size
    with pytest.raises(ImageDecodeError, match="too large"):
        read_image_bytes(distinct_image_path, limit=size - 1)


def test_time_limit_stops_a_stall_and_gives_back_a_timer_that_was_already_set() -> None:
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)  # e.g. pytest-timeout's own alarm
        with time_limit(5):
            pass
        assert 20 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30  # the outer timer still runs
        with pytest.raises(ImageDecodeError, match=r"longer than 0\.05 s"), time_limit(0.05):
            time.sleep(2)
        assert 20 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired
