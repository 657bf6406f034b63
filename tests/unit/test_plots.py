"""present/plots.py: each figure shows the data it is given, read back through matplotlib's objects
(image cells, line data, labels), and the plot functions write that figure as a PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsearch.present import plots


def texts(artists) -> list[str]:
    return [artist.get_text() for artist in artists]


def lines_by_label(axes) -> dict:
    return {line.get_label(): line for line in axes.get_lines()}


# -- confusion matrix ---------------------------------------------------------------------------


def random_confusion(n_classes: int) -> np.ndarray:
    rng = np.random.default_rng(n_classes)
    confusion = rng.integers(0, 20, size=(n_classes, n_classes)) + np.eye(n_classes, dtype=int) * 50
    confusion[0] = 0  # a class with no samples must not break normalisation
    return confusion


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_figure_cells_labels_and_annotations(normalize):
    confusion = random_confusion(10)
    names = [f"class_{i}" for i in range(10)]
    figure = plots.confusion_figure(confusion, names, normalize=normalize, title="zero-shot")

    axes, colorbar = figure.axes
    expected = confusion.astype(np.float64)
    if normalize:
        expected[1:] /= confusion[1:].sum(axis=1, keepdims=True)  # row 0 has no samples: it stays 0
    (image,) = axes.images
    assert np.allclose(np.asarray(image.get_array()), expected, rtol=0, atol=1e-12)
    assert image.get_clim() == ((0.0, 1.0) if normalize else (0.0, float(confusion.max())))
    assert colorbar.get_ylabel() == ("fraction of true class" if normalize else "count")
    assert texts(axes.get_xticklabels()) == names == texts(axes.get_yticklabels())
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("zero-shot", "predicted", "true")
    # One annotation per cell, row by row, holding the cell's value.
    cells = [f"{value:.2f}" for value in expected.flat] if normalize else [str(v) for v in confusion.flat]
    assert texts(axes.texts) == cells
    assert [t.get_position() for t in axes.texts[:11]] == [(c, r) for r in range(2) for c in range(10)][:11]


def test_confusion_figure_of_many_classes_has_no_annotations():
    confusion = random_confusion(100)
    figure = plots.confusion_figure(confusion, [f"c{i}" for i in range(100)])

    axes = figure.axes[0]
    assert np.asarray(axes.images[0].get_array()).shape == (100, 100)
    assert len(axes.texts) == 0 and len(axes.get_xticklabels()) == 100
    assert np.asarray(axes.images[0].get_array())[5].sum() == pytest.approx(1.0)


def test_plot_confusion_writes_the_figure_as_png(tmp_path):
    out = plots.plot_confusion(random_confusion(3), ["a", "b", "c"], tmp_path / "sub" / "confusion.png", title="t")

    image = Image.open(out)
    assert image.format == "PNG" and image.width > image.height  # a square matrix plus a colour bar
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]  # no temp file left behind
    with pytest.raises(ValueError):
        plots.confusion_figure(np.eye(3), ["a", "b"])


# -- recall@k -----------------------------------------------------------------------------------


def test_recall_figure_draws_each_curve_and_marks_r_at_1_5_10():
    curves = {"text to image": np.linspace(0.3, 0.95, 50), "image to text": np.linspace(0.5, 0.99, 50).tolist()}
    figure = plots.recall_figure(curves, title="flickr")

    (axes,) = figure.axes
    lines = axes.get_lines()
    assert len(lines) == 4  # a curve and its R@1/5/10 markers per direction
    for (name, curve), (line, marks) in zip(curves.items(), zip(lines[::2], lines[1::2])):
        assert line.get_label() == name
        assert np.array_equal(line.get_xdata(), np.arange(1, 51)) and np.allclose(line.get_ydata(), curve)
        assert list(marks.get_xdata()) == [1, 5, 10]
        assert np.allclose(marks.get_ydata(), np.asarray(curve)[[0, 4, 9]])
        assert marks.get_marker() == "o" and marks.get_color() == line.get_color()
    assert texts(axes.get_legend().get_texts()) == list(curves)
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("flickr", "k", "recall@k")
    assert axes.get_ylim() == (0.0, 1.02)


def test_short_recall_curves_mark_only_the_ks_they_have(tmp_path):
    figure = plots.recall_figure({"t2i": [0.2, 0.4, 0.6]})

    _, marks = figure.axes[0].get_lines()
    assert list(marks.get_xdata()) == [1] and list(marks.get_ydata()) == [0.2]
    image = Image.open(plots.plot_recall_curves({"t2i": [0.2, 0.4, 0.6]}, tmp_path / "recall.png"))
    assert image.format == "PNG" and image.size == (7 * plots.PLOT_DPI, 5 * plots.PLOT_DPI)
    with pytest.raises(ValueError):
        plots.recall_figure({})


# -- training curves ----------------------------------------------------------------------------


def mixed_rows() -> list[dict]:
    """Training rows every 2 steps with loss and lr; one validation row per epoch."""
    rows = []
    for epoch in range(3):
        for step in range(epoch * 10, epoch * 10 + 10, 2):
            rows.append({"epoch": epoch, "step": step, "train_loss": 4.0 / (step + 1), "lr": 1e-3 * (step + 1)})
        rows.append(
            {
                "epoch": epoch,
                "step": epoch * 10 + 9,
                "val_t2i_R@1": 0.1 * epoch,
                "val_i2t_R@5": 0.2 * epoch,
                "val_zs_seen": np.float32(0.5),
                "val_loss": float("nan"),  # not finite: left out, not drawn as a gap
            }
        )
    return rows


def test_training_figure_draws_each_key_from_the_rows_that_carry_it():
    rows = mixed_rows()
    figure = plots.training_figure(rows)

    loss_axes, metric_axes, lr_axes = figure.axes
    train_steps = [row["step"] for row in rows if "train_loss" in row]
    val_steps = [row["step"] for row in rows if "val_t2i_R@1" in row]
    losses = lines_by_label(loss_axes)
    assert set(losses) == {"train_loss", "val_loss"}
    assert list(losses["train_loss"].get_xdata()) == train_steps
    assert np.allclose(losses["train_loss"].get_ydata(), [4.0 / (s + 1) for s in train_steps])
    assert list(losses["val_loss"].get_xdata()) == []  # only NaN values
    (lr,) = lr_axes.get_lines()
    assert lr.get_label() == "lr" and np.allclose(lr.get_ydata(), [1e-3 * (s + 1) for s in train_steps])
    assert lr_axes.get_ylabel() == "learning rate"
    metrics = lines_by_label(metric_axes)
    assert list(metrics) == ["val_t2i_R@1", "val_i2t_R@5", "val_zs_seen"]
    assert list(metrics["val_i2t_R@5"].get_xdata()) == val_steps == [9, 19, 29]
    assert np.allclose(metrics["val_i2t_R@5"].get_ydata(), [0.0, 0.2, 0.4])
    assert np.allclose(metrics["val_zs_seen"].get_ydata(), 0.5)  # numpy scalars are numbers too
    assert (loss_axes.get_title(), metric_axes.get_title(), metric_axes.get_xlabel()) == ("loss", "validation", "step")


def test_training_figure_x_axis_falls_back_to_epoch_then_row(tmp_path):
    by_epoch = plots.training_figure([{"epoch": e, "train_loss": 1.0 / (e + 1)} for e in range(4)])
    by_row = plots.training_figure([{"train_loss": 2.0}, {"epoch": 1, "train_loss": 1.0}])

    assert len(by_epoch.axes) == 2  # no lr: no twin axis
    (line,) = by_epoch.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 1, 2, 3] and by_epoch.axes[1].get_xlabel() == "epoch"
    assert list(by_row.axes[0].get_lines()[0].get_xdata()) == [0, 1] and by_row.axes[1].get_xlabel() == "row"
    image = Image.open(plots.plot_training_curves(mixed_rows(), tmp_path / "training.png"))
    assert image.format == "PNG" and image.size == (9 * plots.PLOT_DPI, 7 * plots.PLOT_DPI)
    for bad in ([], [{"epoch": 0, "lr": 0.1}]):
        with pytest.raises(ValueError):
            plots.training_figure(bad)
