"""The two tiny indexes every web test (API and browser) runs against, built by tests/web/conftest.py once per
session: a captioned, labelled folder index (the generated shapes dataset: ids with slashes, three splits)
and a CIFAR-10 index whose pixels live in its archive. The shapes index uses a tiny-rn CLIP trained here on
other generated shapes, so that zero-shot can be checked for the right label, not only for equal numbers;
the CIFAR index uses the seeded random tiny model."""

from __future__ import annotations

from pathlib import Path

from cifar_fixture import make_cifar_archive
from cli_runner import run_cli
from index_helpers import TINY

SHAPES_INDEX, CIFAR_INDEX = "shapes", "c10"
SHAPES_IMAGES, CIFAR_IMAGES = 48, 20
TRAIN_IMAGES, TRAIN_EPOCHS = 400, 10  # seeded: every test image of these three classes is then labelled right


def build_web_indexes(base: Path) -> Path:
    """SHAPES_INDEX (folder `<base>/shapes`) and CIFAR_INDEX under `<base>/indexes`; returns that root."""
    root = base / "indexes"
    code, _, stderr = run_cli("shapes", base / "shapes", "--n", SHAPES_IMAGES, "--size", "32", "--seed", "3")
    assert code == 0, stderr
    trained = ("--model", "tiny-rn", "--pretrained", train_shapes_model(base))
    code, _, stderr = run_cli(
        "index", base / "shapes", "--name", SHAPES_INDEX, "--root", root, "--workers", "0", *trained
    )
    assert code == 0, stderr
    make_cifar_archive(base, "cifar10", n_train_per_class=1, n_test_per_class=CIFAR_IMAGES // 10, seed=4)
    code, _, stderr = run_cli(
        "index", "cifar10", "--name", CIFAR_INDEX, "--data-dir", base, "--root", root, "--workers", "0", *TINY
    )
    assert code == 0, stderr
    return root


def train_shapes_model(base: Path) -> Path:
    """The checkpoint of a tiny-rn CLIP trained on TRAIN_IMAGES other generated shapes (seed 7)."""
    data, run = base / "train-shapes", base / "run"
    code, _, stderr = run_cli("shapes", data, "--n", TRAIN_IMAGES, "--size", "32", "--seed", "7")
    assert code == 0, stderr
    code, _, stderr = run_cli(
        "train", data, "--out", run, "--arch", "tiny-rn", "--epochs", TRAIN_EPOCHS, "--batch-size", "32",
        "--lr", "5e-3", "--workers", "0",
    )  # fmt: skip
    assert code == 0, stderr
    return run / "best.safetensors"
