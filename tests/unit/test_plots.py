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


def test_recall_figure_draws_each_curve_marks_and_labels_the_requested_k_and_a_chance_line():
    curves = {"text to image": np.linspace(0.3, 0.95, 50), "image to text": np.linspace(0.5, 0.99, 50).tolist()}
    chance = {"text to image": np.arange(1, 51) / 500, "image to text": np.arange(1, 51) / 100}
    figure = plots.recall_figure(curves, title="flickr", marks=(1, 5, 20), chance=chance)

    (axes,) = figure.axes
    lines = axes.get_lines()
    assert len(lines) == 6  # per direction: the curve, its marks, its chance line
    labels = []
    for (name, curve), (line, marks, random) in zip(curves.items(), zip(lines[::3], lines[1::3], lines[2::3])):
        assert line.get_label() == name
        assert np.array_equal(line.get_xdata(), np.arange(1, 51)) and np.allclose(line.get_ydata(), curve)
        assert list(marks.get_xdata()) == [1, 5, 20]
        assert np.allclose(marks.get_ydata(), np.asarray(curve)[[0, 4, 19]])
        assert marks.get_marker() == "o" and marks.get_color() == line.get_color()
        assert random.get_label() == f"{name} (chance)" and random.get_linestyle() == ":"
        assert np.allclose(random.get_ydata(), chance[name]) and random.get_color() == line.get_color()
        labels += [f"{100 * np.asarray(curve)[k - 1]:.1f}" for k in (1, 5, 20)]
    assert texts(axes.texts) == labels  # the value at each requested k, in percent
    assert [t.xy for t in axes.texts[:3]] == [
        (k, pytest.approx(np.asarray(curves["text to image"])[k - 1])) for k in (1, 5, 20)
    ]
    assert texts(axes.get_legend().get_texts()) == [
        "text to image", "text to image (chance)", "image to text", "image to text (chance)"
    ]  # fmt: skip
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("flickr", "k", "recall@k")
    assert axes.get_ylim() == (0.0, 1.08)


def test_short_recall_curves_mark_only_the_ks_they_have(tmp_path):
    figure = plots.recall_figure({"t2i": [0.2, 0.4, 0.6]})

    _, marks = figure.axes[0].get_lines()
    assert (
        list(marks.get_xdata()) == [1] and list(marks.get_ydata()) == [0.2] and texts(figure.axes[0].texts) == ["20.0"]
    )
    image = Image.open(plots.plot_recall_curves({"t2i": [0.2, 0.4, 0.6]}, tmp_path / "recall.png"))
    assert image.format == "PNG" and image.size == (7 * plots.PLOT_DPI, 5 * plots.PLOT_DPI)
    with pytest.raises(ValueError):
        plots.recall_figure({})


# -- training curves ----------------------------------------------------------------------------


def mixed_rows() -> list[dict]:
    """Training rows every 2 steps with loss and lr (fractional epochs); one validation row per epoch."""
    rows = []
    for epoch in range(3):
        rows.append(
            {
                "epoch": epoch,
                "step": epoch * 10,
                "val_t2i_R@1": 0.1 * epoch,
                "val_i2t_R@1": 0.15 * epoch,
                "val_i2t_R@5": 0.2 * epoch,
                "val_zs_top1": np.float32(0.5),
                "val_zs_heldout_top1": 0.25,
                "val_loss": float("nan"),  # not finite: left out, not drawn as a gap
            }
        )
        for step in range(epoch * 10 + 2, epoch * 10 + 11, 2):
            rows.append({"epoch": step / 10, "step": step, "train_loss": 4.0 / (step + 1), "lr": 1e-3 * (step + 1)})
    return rows


CHANCE = {"t2i_R@1": 0.05, "i2t_R@1": 0.08, "i2t_R@5": 0.3, "zs_top1": 0.1, "zs_heldout_top1": 0.1}


def test_training_figure_has_a_panel_per_kind_with_chance_lines_one_legend_each_and_an_epoch_axis():
    rows = mixed_rows()
    figure = plots.training_figure(rows, CHANCE)

    loss_axes, retrieval_axes, zero_shot_axes, lr_axes = figure.axes
    assert [a.get_title() for a in (loss_axes, retrieval_axes, zero_shot_axes)] == [
        "loss", "retrieval recall@k (val)", "zero-shot top-1 (val)"
    ]  # fmt: skip
    train_epochs = [row["epoch"] for row in rows if "train_loss" in row]
    losses = lines_by_label(loss_axes)
    assert set(losses) == {"train_loss", "val_loss"}
    assert list(losses["train_loss"].get_xdata()) == train_epochs
    assert np.allclose(losses["train_loss"].get_ydata(), [4.0 / (r["step"] + 1) for r in rows if "train_loss" in r])
    assert list(losses["val_loss"].get_xdata()) == []  # only NaN values
    (lr,) = lr_axes.get_lines()
    assert lr.get_label() == "lr" and np.allclose(lr.get_ydata(), [1e-3 * (r["step"] + 1) for r in rows if "lr" in r])
    assert lr_axes.get_ylabel() == "learning rate" and lr_axes.get_legend() is None
    assert texts(loss_axes.get_legend().get_texts()) == ["val_loss", "train_loss", "lr"]  # one legend for both axes

    retrieval = lines_by_label(retrieval_axes)
    assert list(retrieval) == ["t2i_R@1", "i2t_R@1", "i2t_R@5", "t2i_R@1 chance", "i2t_R@1 chance", "i2t_R@5 chance"]
    assert list(retrieval["i2t_R@5"].get_xdata()) == [0, 1, 2] and np.allclose(
        retrieval["i2t_R@5"].get_ydata(), [0, 0.2, 0.4]
    )
    assert retrieval["t2i_R@1"].get_color() == retrieval["i2t_R@1"].get_color() != retrieval["i2t_R@5"].get_color()
    assert retrieval["i2t_R@1"].get_linestyle() == "--" and retrieval["t2i_R@1"].get_linestyle() == "-"
    for metric, level in CHANCE.items():
        if "R@" in metric:  # a level of its own: drawn in its metric's colour
            line = retrieval[f"{metric} chance"]
            assert list(line.get_ydata()) == [level, level] and line.get_linestyle() == ":"
            assert line.get_color() == retrieval[metric].get_color()
    zero_shot = lines_by_label(zero_shot_axes)
    assert list(zero_shot) == ["zs_top1", "zs_heldout_top1", "chance"]  # the shared 1/classes level, once
    assert list(zero_shot["chance"].get_ydata()) == [0.1, 0.1] and zero_shot["chance"].get_color() == "gray"
    assert np.allclose(zero_shot["zs_top1"].get_ydata(), 0.5)  # numpy scalars are numbers too
    assert zero_shot_axes.get_xlabel() == "epoch" and loss_axes.get_xlabel() == ""  # one shared epoch axis
    for axes in (loss_axes, retrieval_axes, zero_shot_axes):
        assert axes.get_legend() is not None


def test_training_figure_x_axis_falls_back_to_step_then_row_and_leaves_out_empty_panels(tmp_path):
    by_step = plots.training_figure([{"step": s, "train_loss": 1.0 / (s + 1)} for s in range(4)])
    by_row = plots.training_figure([{"train_loss": 2.0}, {"epoch": 1, "train_loss": 1.0}])

    assert len(by_step.axes) == 1  # only losses, no lr: one panel, no twin axis
    (line,) = by_step.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 1, 2, 3] and by_step.axes[0].get_xlabel() == "step"
    assert list(by_row.axes[0].get_lines()[0].get_xdata()) == [0, 1] and by_row.axes[0].get_xlabel() == "row"
    image = Image.open(plots.plot_training_curves(mixed_rows(), tmp_path / "training.png", CHANCE))
    assert image.format == "PNG" and image.size == (9 * plots.PLOT_DPI, round((2.6 * 3 + 0.6) * plots.PLOT_DPI))
    for bad in ([], [{"epoch": 0, "lr": 0.1}]):
        with pytest.raises(ValueError):
            plots.training_figure(bad)
