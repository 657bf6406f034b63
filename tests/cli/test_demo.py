"""`clipsearch demo` runs end to end offline: generate, train, index the test split, evaluate, search.

The numbers it reports are checked against a brute-force computation on the vectors the
demo stored (recall@k by full ranking, zero-shot top-1 from freshly encoded prompts) and
against chance levels worked out here; a one-epoch run learns too little to beat them, so
what is checked is that the demo measures the model it trained, exactly.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image

from clipsearch.cli.app import main
from clipsearch.index.index import Index
from clipsearch.index.schema import vectors_of
from clipsearch.sources.shapes import shapes_meta
from clipsearch.tasks.prompts import default_templates, resolve_labels, resolve_templates

KS = (1, 5, 10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small demo run (400 images, one epoch): its folder and what it printed."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    code, printed, err = run_cli("demo", "--out", out, "--n", "400", "--epochs", "1")
    assert code == 0, err
    return out, printed


def _rank(scores: np.ndarray, true: int) -> int:
    """1-based rank of gallery item `true`: every higher score, and equal scores earlier in the gallery, come first."""
    return int((scores > scores[true]).sum() + (scores[:true] == scores[true]).sum() + 1)


def brute_force_recall(index: Index) -> dict[str, float]:
    """Recall@k both ways by ranking every image against every caption, in the documented order:
    images by id, captions by image then caption index (the order decides exact ties only)."""
    ids, images = index.vectors()
    order = np.argsort(ids)
    ids, images = [ids[i] for i in order], images[order]
    captions = index.captions_of(ids).sort_by([("image_id", "ascending"), ("caption_index", "ascending")])
    owner = np.array([ids.index(i) for i in captions.column("image_id").to_pylist()])
    similarity = vectors_of(captions).astype(np.float32) @ images.astype(np.float32).T  # captions x images
    t2i = np.array([_rank(similarity[c], owner[c]) for c in range(len(owner))])
    i2t = np.array([min(_rank(similarity[:, i], c) for c in np.flatnonzero(owner == i)) for i in range(len(ids))])
    return {
        **{f"t2i_R@{k}": float(np.mean(t2i <= k)) for k in KS},
        **{f"i2t_R@{k}": float(np.mean(i2t <= k)) for k in KS},
    }


def brute_force_zero_shot(index: Index, holdout: list[str]) -> dict[str, float]:
    """Top-1 of the nearest class prototype: each class's prompts encoded, averaged, re-normalised."""
    class_names = resolve_labels("shapes")
    prompts = resolve_templates(default_templates("shapes"), class_names)
    prototypes = np.stack([index.encoder.encode_texts(list(p)).mean(axis=0) for p in prompts])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    rows = index.rows(columns=["label_name", "vector"])
    truth = np.array([class_names.index(name) for name in rows.column("label_name").to_pylist()])
    correct = (vectors_of(rows) @ prototypes.T).argmax(axis=1) == truth
    held = np.isin(truth, [class_names.index(name) for name in holdout])
    return {
        "zs_top1": float(correct.mean()),
        "zs_seen_top1": float(correct[~held].mean()),
        "zs_heldout_top1": float(correct[held].mean()),
    }


def test_the_demo_reports_its_trained_models_numbers_and_their_chance(demo: tuple[Path, str]) -> None:
    out, printed = demo
    results = json.loads((out / "results.json").read_text())
    test, chance = results["test"], results["chance"]
    index = Index.open("demo", out / "indexes")
    assert results["model"] == index.spec.to_dict() and results["model"]["arch"] == "tiny-rn"
    assert results["model"]["checkpoint_sha256"] and results["train"]["epochs"] == 1

    holdout = shapes_meta(out / "shapes")["holdout"]
    expected = {**brute_force_recall(index), **brute_force_zero_shot(index, holdout)}
    assert set(test) == set(expected) == set(chance)
    for key, value in expected.items():
        assert test[key] == pytest.approx(value, abs=1e-6), key

    n_images = index.counts()["images"]
    per_image = [len(c) for c in index.rows(columns=["captions"]).column("captions").to_pylist()]
    n_captions = sum(per_image)
    assert n_images == 40  # the test split of 400
    for k in KS:
        assert chance[f"t2i_R@{k}"] == pytest.approx(k / n_images)
        misses = [comb(n_captions - c, k) / comb(n_captions, k) for c in per_image]
        assert chance[f"i2t_R@{k}"] == pytest.approx(1 - np.mean(misses))
    assert chance["zs_top1"] == chance["zs_seen_top1"] == chance["zs_heldout_top1"] == pytest.approx(1 / 30)

    for key, label in (("t2i_R@10", "text→image R@10"), ("zs_heldout_top1", "zero-shot top-1, held-out pairs")):
        assert f"{test[key]:.3f}" in next(line for line in printed.splitlines() if label in line)


def test_the_demo_searches_and_draws_its_queries(demo: tuple[Path, str]) -> None:
    out, printed = demo
    for line in ("text query: 'a blue triangle'", "text query: 'a red circle'", "image query"):
        assert line in printed
    for name in ("contact_sheet.png", "run/curves.png", "run/best.safetensors", "run/config.json"):
        assert (out / name).is_file(), name
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width >= 9 * 112 and sheet.height >= 6 * 112  # 6 query rows: the query, then 8 hits


def test_demo_refuses_to_clear_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keep = tmp_path / "mine.txt"
    keep.write_text("precious")
    with pytest.raises(SystemExit) as done:
        main(["demo", "--out", str(tmp_path)])
    assert done.value.code == 1 and "not a demo folder" in capsys.readouterr().err
    assert keep.read_text() == "precious"
