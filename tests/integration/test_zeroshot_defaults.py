"""`eval zeroshot` defaults (issue 14 item 11): without --labels a CIFAR-format dataset of other classes is
evaluated on its stored label names (not CIFAR-10's), and a template comparison's top-level confusion.png
is the best set's, with one per set named by the set; every confusion title carries top-1 and n."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli, run_json

from clipsearch.index.index import Index
from clipsearch.tasks import outputs
from clipsearch.tasks.prompts import template_set

FRUIT = ["apple", "pear", "plum", "fig", "lime", "kiwi"]
TINY = ["--model", "tiny", "--pretrained", "none"]


@pytest.fixture(scope="module")
def fruit(tmp_path_factory) -> Path:
    """A CIFAR-10-format archive whose batches.meta names three fruit, indexed through the CLI."""
    tmp = tmp_path_factory.mktemp("fruit")
    make_cifar_archive(tmp, "cifar10", n_train_per_class=1, n_test_per_class=20, seed=4, names=FRUIT)
    root = tmp / "indexes"
    args = ("index", "cifar10", "--name", "fruit", "--split", "test", "--data-dir", tmp, "--root", root)
    code, _, stderr = run_cli(*args, "--workers", "0", *TINY)
    assert code == 0, stderr
    return root


def expected_top1(root: Path, tiny_encoder, templates: list[str]) -> float:
    rows = Index.open("fruit", root).rows(columns=["label_name", "vector"]).to_pylist()
    vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
    truth = np.array([FRUIT.index(r["label_name"]) for r in rows])
    weights = open_clip.build_zero_shot_classifier(
        tiny_encoder.model, tiny_encoder.tokenizer, FRUIT, templates, device="cpu"
    ).numpy()
    return float(np.mean((vectors @ weights).argmax(axis=1) == truth))


def test_default_labels_are_the_stored_names_of_a_cifar_format_dataset(fruit, tiny_encoder):
    result = run_json("eval", "zeroshot", "fruit", "--root", fruit)

    assert result["labels"] == ",".join(sorted(FRUIT)) and [c["name"] for c in result["per_class"]] == sorted(FRUIT)
    assert (result["n"], result["excluded"], result["templates"]) == (120, 0, "cifar")  # CIFAR's own templates
    assert result["top1"] == pytest.approx(expected_top1(fruit, tiny_encoder, template_set("cifar")))


def test_a_template_comparison_plots_the_best_set_at_the_top_and_one_per_set(fruit, monkeypatch):
    plotted = {}
    plot = outputs.plot_confusion

    def recording(confusion, class_names, out, title=""):
        plotted[Path(out)] = (np.asarray(confusion).tolist(), title)
        return plot(confusion, class_names, out, title=title)

    monkeypatch.setattr(outputs, "plot_confusion", recording)
    result = run_json("eval", "zeroshot", "fruit", "--templates", "cifar,shapes,simple", "--root", fruit)

    sets = result["template_sets"]
    best = max(sets, key=lambda name: sets[name]["top1"])
    assert best != "cifar"  # the first set is not the best: the top-level plot must not simply be the first
    top = Path(result["files"]["confusion"])
    confusion, title = plotted[top]
    assert confusion == sets[best]["confusion"]
    assert f"{best} (best of 3 template sets)" in title
    assert f"top-1 {100 * sets[best]['top1']:.2f} %" in title and "n = 120" in title
    for name, report in sets.items():
        path = Path(result["files"][f"confusion:{name}"])
        assert path.parent.name == name and path.is_file()
        assert plotted[path][0] == report["confusion"] and f"top-1 {100 * report['top1']:.2f} %" in plotted[path][1]
