"""report.py: files are real PNG/JSON with the promised geometry; tables show the numbers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from clipsearch import files
from clipsearch.present import plots, sheets, tables
from clipsearch.tasks import metrics


def rendered(table) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def row(text: str, label: str) -> str:
    """The rendered table line whose first cell is ``label``."""
    return next(line for line in text.splitlines() if line.strip("│┃ ").startswith(label))


def open_png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    image.load()
    return image


# --------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------


def test_contact_sheet_geometry_and_letterbox(tmp_path):
    images = [Image.new("RGB", (300, 100), (200, 0, 0)), Image.new("RGB", (50, 80), (0, 200, 0)), Image.new("L", (64, 64), 128)]
    out = sheets.contact_sheet(images, ["#1 0.312 wide.jpg", "#2 0.300 tall.jpg", "#3 0.1 grey.png"], tmp_path / "sheet.png", thumb=100, columns=2)

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


def test_fit_text_truncates_to_width():
    from PIL import ImageFont

    font = ImageFont.load_default(size=sheets.CAPTION_FONT_SIZE)
    fitted = sheets._fit_text("x" * 200, font, 100)
    assert fitted.endswith("...") and font.getlength(fitted) <= 100
    assert sheets._fit_text("short", font, 100) == "short"


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes, normalize", [(10, True), (10, False), (100, True)])
def test_plot_confusion(tmp_path, n_classes, normalize):
    rng = np.random.default_rng(n_classes)
    confusion = rng.integers(0, 20, size=(n_classes, n_classes)) + np.eye(n_classes, dtype=int) * 50
    confusion[0] = 0  # a class with no samples must not break normalisation
    names = [f"class_{i}" for i in range(n_classes)]
    out = plots.plot_confusion(confusion, names, tmp_path / "confusion.png", normalize=normalize, title="zero-shot")

    image = open_png(out)
    assert image.width > image.height >= 600  # square matrix plus a colour bar


def test_plot_confusion_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError):
        plots.plot_confusion(np.eye(3), ["a", "b"], tmp_path / "c.png")


def test_plot_recall_curves(tmp_path):
    curves = {"text_to_image": np.linspace(0.3, 0.95, 50), "image_to_text": np.linspace(0.5, 0.99, 50).tolist()}
    image = open_png(plots.plot_recall_curves(curves, tmp_path / "recall.png", title="flickr"))
    assert image.size == (7 * plots.PLOT_DPI, 5 * plots.PLOT_DPI)


def test_plot_training_curves_with_mixed_rows(tmp_path):
    rows = []
    for epoch in range(3):
        for step in range(epoch * 10, epoch * 10 + 10, 2):
            rows.append({"epoch": epoch, "step": step, "train_loss": 4.0 / (step + 1), "lr": 1e-3})
        rows.append({"epoch": epoch, "step": epoch * 10 + 9, "val_t2i_R@1": 0.1 * epoch, "val_i2t_R@5": 0.2 * epoch, "val_zs_seen": np.float32(0.5)})
    image = open_png(plots.plot_training_curves(rows, tmp_path / "training.png"))
    assert image.size == (9 * plots.PLOT_DPI, 7 * plots.PLOT_DPI)

    only_loss = [{"epoch": e, "train_loss": 1.0 / (e + 1)} for e in range(4)]  # no step, no val keys
    assert plots.plot_training_curves(only_loss, tmp_path / "loss.png").exists()
    with pytest.raises(ValueError):
        plots.plot_training_curves([{"epoch": 0, "lr": 0.1}], tmp_path / "none.png")


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def test_write_json_round_trips_numpy_types(tmp_path):
    obj = {
        "int": np.int64(3),
        "float": np.float32(0.25),
        "array": np.arange(3, dtype=np.int32),
        "matrix": np.eye(2),
        "tuple": (np.bool_(True), 1),
        "nan": float("nan"),
        "nested": {1: [np.float64(1.5)]},
    }
    path = files.write_json(tmp_path / "sub" / "result.json", obj)

    text = path.read_text()
    assert json.loads(text) == {
        "int": 3,
        "float": 0.25,
        "array": [0, 1, 2],
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "tuple": [True, 1],
        "nan": None,
        "nested": {"1": [1.5]},
    }
    assert text.startswith('{\n  "int": 3')  # indent 2
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_write_json_failure_keeps_previous_file(tmp_path):
    path = files.write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def small_report(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=60)
    scores = rng.standard_normal((60, 3))
    scores[np.arange(60), labels] += 1.0
    return metrics.classification_report(scores, labels, ["cat", "dog", "[bird]"])


def test_classification_table_shows_the_numbers():
    result = small_report(0)
    text = rendered(tables.classification_table(result, "CIFAR-3 zero-shot"))

    assert "CIFAR-3 zero-shot" in text
    for label, key in (("top-1", "top1"), ("top-3", "top5"), ("mean per-class recall", "mean_per_class_recall")):
        assert f"{100 * result[key]:.2f}" in row(text, label)
    assert str(result["n"]) in row(text, "top-1")
    for entry in result["per_class"]:
        line = row(text, entry["name"])
        assert str(entry["n"]) in line and f"{100 * entry['accuracy']:.2f}" in line


def test_comparison_table_puts_methods_side_by_side():
    results = {"zero-shot": small_report(1), "linear probe": small_report(2)}
    text = rendered(tables.comparison_table(results, ["cat", "dog", "[bird]"]))

    header = next(line for line in text.splitlines() if "zero-shot" in line)
    assert "linear probe" in header
    for label, key in (("top-1", "top1"), ("top-5", "top5"), ("mean per-class recall", "mean_per_class_recall")):
        line = row(text, label)
        for result in results.values():
            assert f"{100 * result[key]:.2f}" in line
    bird = row(text, "[bird]")
    for result in results.values():
        assert f"{100 * result['per_class'][2]['accuracy']:.2f}" in bird
