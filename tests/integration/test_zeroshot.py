"""Zero-shot classification: `classify`, `predict`, `eval zeroshot` (with corruptions and the
shapes seen / held-out split), each checked against an independent computation: vectors read
from the LanceDB table directly, prototypes from open_clip.build_zero_shot_classifier."""

import json
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import lancedb
import numpy as np
import open_clip
import pytest
import torch
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli, run_json
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from clipsearch.errors import ClipsearchError
from clipsearch.sources.cifar import locate_cifar
from clipsearch.sources.images import open_uri
from clipsearch.sources.shapes import class_names as shapes_class_names
from clipsearch.sources.shapes import generate_shapes
from clipsearch.tasks.corruptions import CORRUPTIONS, Corruption, parse_corruption
from clipsearch.tasks.metrics import classification_report
from clipsearch.tasks.prompts import resolve_labels, template_set
from clipsearch.tasks.zeroshot import zero_shot_accuracy, zero_shot_report
from clipsearch.tasks.zeroshot_eval import corrupted_vectors, inferred_labels
from clipsearch.training.validate import score_embeddings

TINY = ["--model", "tiny", "--pretrained", "none"]
CIFAR10_CLASSNAMES, CIFAR100_CLASSNAMES = resolve_labels("cifar10"), resolve_labels("cifar100")
CIFAR_TEMPLATES, SIMPLE_TEMPLATES, SHAPES_TEMPLATES = (
    template_set("cifar"),
    template_set("simple"),
    template_set("shapes"),
)


def stored(root: Path, name: str, where: str | None = None) -> dict:
    """Columns of an index's live images, read with lancedb directly (not through clipsearch)."""
    table = lancedb.connect(str(root / name / "db")).open_table("images")
    rows = table.search().where(f"deleted = false{f' AND {where}' if where else ''}").limit(None).to_arrow()
    columns = {
        column: rows.column(column).to_pylist()
        for column in ("id", "uri", "label_name", "zs_label", "zs_score", "zs_labelset")
    }
    vectors = np.array(rows.column("vector").to_pylist(), dtype=np.float32)
    columns["vectors"] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return columns


def open_clip_prototypes(encoder, class_names, templates) -> np.ndarray:
    """(dim, C) zero-shot weights straight from open_clip."""
    weights = open_clip.build_zero_shot_classifier(
        encoder.model, encoder.tokenizer, list(class_names), list(templates), device="cpu"
    )
    return weights.numpy()


def truth_of(label_names, class_names) -> np.ndarray:
    position = {name: i for i, name in enumerate(class_names)}
    return np.array([position[name.replace("_", " ")] for name in label_names])


def topk_hits(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([t in row for t, row in zip(truth, np.argsort(-scores, axis=1)[:, :k])]))


@pytest.fixture(scope="module")
def cifar10_index(tmp_path_factory):
    """1,000 CIFAR-10-format test images (100 a class) indexed through the CLI with the tiny model."""
    tmp = tmp_path_factory.mktemp("cifar10")
    make_cifar_archive(tmp, "cifar10", n_train_per_class=1, n_test_per_class=100, seed=1)
    root = tmp / "indexes"
    code, _, stderr = run_cli(
        "index",
        "cifar10",
        "--name",
        "c10",
        "--split",
        "test",
        "--data-dir",
        tmp,
        "--root",
        root,
        "--workers",
        "0",
        *TINY,
    )
    assert code == 0, stderr
    return root


@pytest.fixture
def fresh_cifar10_index(cifar10_index, tmp_path):
    """A copy of the CIFAR-10 index for a test that writes to it, so no other test sees its labels."""
    root = tmp_path / "indexes"
    shutil.copytree(cifar10_index, root)
    return root


@pytest.fixture(scope="module")
def cifar100_index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cifar100")
    make_cifar_archive(tmp, "cifar100", n_train_per_class=1, n_test_per_class=2, seed=2)
    root = tmp / "indexes"
    code, _, stderr = run_cli(
        "index", "cifar100", "--name", "c100", "--data-dir", tmp, "--root", root, "--workers", "0", *TINY
    )
    assert code == 0, stderr
    return root


# -- eval zeroshot ----------------------------------------------------------------------


def test_eval_zeroshot_equals_an_independent_computation_and_sklearn(cifar10_index, tiny_encoder):
    result = run_json("eval", "zeroshot", "c10", "--templates", "cifar,simple", "--root", cifar10_index)
    rows = stored(cifar10_index, "c10", "split = 'test'")
    truth = truth_of(rows["label_name"], CIFAR10_CLASSNAMES)

    assert len(truth) == 1000 and result["n"] == 1000 and result["excluded"] == 0
    assert (result["labels"], result["templates"], result["n_prompts"]) == ("cifar10", "cifar", 180)
    assert set(result["template_sets"]) == {"cifar", "simple"}
    for name, templates in (("cifar", CIFAR_TEMPLATES), ("simple", SIMPLE_TEMPLATES)):
        report = result["template_sets"][name]
        scores = rows["vectors"] @ open_clip_prototypes(tiny_encoder, CIFAR10_CLASSNAMES, templates)
        predicted = scores.argmax(axis=1)
        assert report["top1"] == float(np.mean(predicted == truth))
        assert report["top5"] == topk_hits(scores, truth, 5)
        assert report["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(truth, predicted), abs=1e-12)
        assert np.array_equal(report["confusion"], sk_confusion_matrix(truth, predicted, labels=range(10)))
        assert [c["accuracy"] for c in report["per_class"]] == pytest.approx(
            recall_score(truth, predicted, average=None, labels=range(10))
        )
        assert [c["name"] for c in report["per_class"]] == list(CIFAR10_CLASSNAMES)
    assert all(result[key] == value for key, value in result["template_sets"]["cifar"].items())  # the first set on top

    out = cifar10_index / "c10" / "eval" / "zeroshot-test"
    assert result["files"]["results"] == str(out / "results.json")
    assert json.loads((out / "results.json").read_text())["template_sets"] == result["template_sets"]
    for folder in (out, out / "cifar", out / "simple"):
        assert Image.open(folder / "confusion.png").format == "PNG"
    assert (
        json.loads((out / "simple" / "results.json").read_text())["top1"] == result["template_sets"]["simple"]["top1"]
    )


def test_eval_zeroshot_leaves_out_rows_outside_the_label_set_and_names_errors(cifar10_index, tiny_encoder):
    result = run_json("eval", "zeroshot", "c10", "--labels", "dog,cat", "--root", cifar10_index)
    rows = stored(cifar10_index, "c10")
    kept = [i for i, name in enumerate(rows["label_name"]) if name in ("dog", "cat")]
    scores = rows["vectors"][kept] @ open_clip_prototypes(tiny_encoder, ["dog", "cat"], SIMPLE_TEMPLATES)

    assert (result["n"], result["excluded"], result["templates"]) == (200, 800, "simple")
    assert result["top1"] == float(
        np.mean(scores.argmax(axis=1) == truth_of([rows["label_name"][i] for i in kept], ["dog", "cat"]))
    )
    for args, message in (
        (["--labels", "apple,pear"], "none of the 1000 images of split 'test' has a label in 'apple,pear'"),
        (["--split", "val"], "no images in split 'val' (splits: test;"),
        (["--corruption", "fog:2"], "unknown corruption 'fog'"),
        (["--templates", "nosuch"], "unknown templates 'nosuch'"),
    ):
        code, stdout, stderr = run_cli("eval", "zeroshot", "c10", "--root", cifar10_index, *args)
        assert (code, stdout) == (1, "")
        assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1


def test_cifar100_labels_are_inferred_and_the_report_is_printed(cifar100_index, tiny_encoder):
    code, stdout, stderr = run_cli("eval", "zeroshot", "c100", "--root", cifar100_index)
    result = json.loads((cifar100_index / "c100" / "eval" / "zeroshot-test" / "results.json").read_text())
    rows = stored(cifar100_index, "c100", "split = 'test'")
    truth = truth_of(rows["label_name"], CIFAR100_CLASSNAMES)
    scores = rows["vectors"] @ open_clip_prototypes(tiny_encoder, CIFAR100_CLASSNAMES, CIFAR_TEMPLATES)

    assert code == 0, stderr
    assert (result["labels"], result["n"], len(result["per_class"])) == ("cifar100", 200, 100)
    assert "lawn_mower" in rows["label_name"] and (result["per_class"][41]["name"], result["per_class"][41]["n"]) == (
        "lawn mower",
        2,
    )
    assert result["top1"] == float(np.mean(scores.argmax(axis=1) == truth))
    assert result["top5"] == topk_hits(scores, truth, 5)
    assert "mean per-class recall" in stdout and "lawn mower" in stdout and f"{100 * result['top1']:.2f}" in stdout
    assert "results.json" in stderr and "confusion.png" in stderr


# -- classify -------------------------------------------------------------------------------


def test_classify_writes_the_argmax_label_and_search_filters_on_it(fresh_cifar10_index, tiny_encoder):
    before = stored(fresh_cifar10_index, "c10")
    faiss_file = fresh_cifar10_index / "c10" / "images.faiss"
    faiss_mtime = faiss_file.stat().st_mtime_ns

    result = run_json("classify", "c10", "--labels", "cifar10", "--root", fresh_cifar10_index)

    after = stored(fresh_cifar10_index, "c10")
    scores = after["vectors"] @ open_clip_prototypes(tiny_encoder, CIFAR10_CLASSNAMES, CIFAR_TEMPLATES)
    expected = [CIFAR10_CLASSNAMES[c] for c in scores.argmax(axis=1)]
    assert after["zs_label"] == expected
    assert np.allclose(after["zs_score"], scores.max(axis=1), atol=1e-5)
    assert set(after["zs_labelset"]) == {"cifar10"}
    assert sorted(after["id"]) == sorted(before["id"]) and set(before["zs_label"]) == {None}
    order = np.argsort(before["id"]), np.argsort(after["id"])
    assert np.array_equal(before["vectors"][order[0]], after["vectors"][order[1]])
    assert result["n"] == 1000 and result["counts"] == {name: expected.count(name) for name in result["counts"]}
    assert sum(result["counts"].values()) == 1000 and set(result["counts"]) == set(CIFAR10_CLASSNAMES)

    manifest = json.loads((fresh_cifar10_index / "c10" / "manifest.json").read_text())
    version = lancedb.connect(str(fresh_cifar10_index / "c10" / "db")).open_table("images").version
    assert manifest["ann"]["table_version"] == version  # the FAISS file is still current: not rebuilt
    for label in {name for name in expected}:
        hits = run_json(
            "search", "c10", "a photo", "--where", f"zs_label = '{label}'", "-k", "1000", "--root", fresh_cifar10_index
        )
        assert sorted(hit["id"] for hit in hits) == sorted(i for i, name in zip(after["id"], expected) if name == label)
    assert faiss_file.stat().st_mtime_ns == faiss_mtime

    code, stdout, _ = run_cli("classify", "c10", "--labels", "cifar10", "--root", fresh_cifar10_index)
    top_label, top_count = next(iter(result["counts"].items()))
    assert code == 0 and top_label in stdout and str(top_count) in stdout and "1000" in stdout


# -- predict ----------------------------------------------------------------------------------


def test_predict_top5_is_the_softmax_over_all_classes(cifar10_index, tiny_encoder, tmp_path):
    row = stored(cifar10_index, "c10", "id = 'cifar10/test/00042'")
    image_path = tmp_path / "query.png"
    open_uri(row["uri"][0]).save(image_path)

    result = run_json("predict", image_path, "--labels", "cifar100", "--templates", "simple", "-k", "5", *TINY)

    with torch.no_grad():
        pixels = tiny_encoder.preprocess(Image.open(image_path).convert("RGB"))[None]
        vector = tiny_encoder.model.encode_image(pixels, normalize=True).numpy()[0]
    logits = 100 * vector.astype(np.float64) @ open_clip_prototypes(tiny_encoder, CIFAR100_CLASSNAMES, SIMPLE_TEMPLATES)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    best = np.argsort(-probabilities)[:5]
    predictions = result[0]["predictions"]
    assert result[0]["image"] == str(image_path)
    assert [p["label"] for p in predictions] == [CIFAR100_CLASSNAMES[c] for c in best]
    assert [p["probability"] for p in predictions] == pytest.approx(probabilities[best], abs=1e-5)
    assert sum(p["probability"] for p in predictions) <= 1.0
    assert [p["cosine"] for p in predictions] == pytest.approx(logits[best] / 100, abs=1e-5)

    code, stdout, _ = run_cli("predict", image_path, "--labels", "cifar100", "--templates", "simple", *TINY)
    assert code == 0 and stdout.count(" %") == 5
    assert f"{predictions[0]['label']}" in stdout and f"{100 * predictions[0]['probability']:.2f} %" in stdout
    code, stdout, stderr = run_cli("predict", image_path, "--labels", "cat,dog", "-k", "3", *TINY)
    assert (code, stdout, stderr) == (1, "", "error: -k must be between 1 and the number of classes (2), got 3\n")


# -- corruptions ---------------------------------------------------------------------------------


def test_eval_under_corruption_reencodes_the_corrupted_pixels_without_writing(cifar10_index, tiny_encoder):
    version = lancedb.connect(str(cifar10_index / "c10" / "db")).open_table("images").version
    labels = ["airplane", "automobile", "deer"]  # classes whose random-model predictions this corruption changes

    result = run_json(
        "eval",
        "zeroshot",
        "c10",
        "--labels",
        ",".join(labels),
        "--corruption",
        "contrast:5",
        "--workers",
        "0",
        "--root",
        cifar10_index,
    )

    rows = stored(cifar10_index, "c10", "label_name IN ('airplane', 'automobile', 'deer')")
    corrupted = tiny_encoder.encode_images(
        [Corruption("contrast", 5).apply(open_uri(uri), id_) for id_, uri in zip(rows["id"], rows["uri"])]
    )
    prototypes = open_clip_prototypes(tiny_encoder, labels, SIMPLE_TEMPLATES)
    scores, clean = corrupted @ prototypes, rows["vectors"] @ prototypes
    truth = truth_of(rows["label_name"], labels)
    assert (result["corruption"], result["n"], result["excluded"]) == ("contrast:5", 300, 700)
    assert result["top1"] == float(np.mean(scores.argmax(axis=1) == truth))
    assert np.array_equal(result["confusion"], sk_confusion_matrix(truth, scores.argmax(axis=1)))
    assert not np.array_equal(scores.argmax(axis=1), clean.argmax(axis=1))  # the corruption reached the model
    assert lancedb.connect(str(cifar10_index / "c10" / "db")).open_table("images").version == version
    assert (cifar10_index / "c10" / "eval" / "zeroshot-test-contrast-5" / "results.json").is_file()


def test_corrupted_vectors_do_not_depend_on_batches_or_workers(cifar10_index, tiny_encoder):
    rows = stored(cifar10_index, "c10")
    ids, uris = rows["id"][:24], rows["uri"][:24]
    noise = Corruption("gaussian_noise", 3)

    in_process = corrupted_vectors(tiny_encoder, ids, uris, noise, batch_size=24, workers=0)
    in_workers = corrupted_vectors(tiny_encoder, ids, uris, noise, batch_size=5, workers=2)

    assert np.allclose(in_process, in_workers, atol=1e-5)
    assert not np.allclose(in_process, rows["vectors"][:24], atol=1e-3)


def _textured_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, size=(8, 8, 3)), np.ones((8, 8, 1)))  # 64x64 blocks: edges to blur
    return Image.fromarray(base.astype(np.uint8), "RGB")


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_grows_with_severity(name):
    image = _textured_image()
    original = np.asarray(image, dtype=np.float64)
    distances = []
    for severity in range(1, 6):
        corruption = parse_corruption(f"{name}:{severity}")
        corrupted = corruption.apply(image, "cifar10/test/00001")
        assert (corrupted.mode, corrupted.size) == ("RGB", image.size)
        assert np.array_equal(np.asarray(corrupted), np.asarray(corruption.apply(image, "cifar10/test/00001")))
        distances.append(np.abs(np.asarray(corrupted, dtype=np.float64) - original).mean())
    assert distances[0] > 0 and distances == sorted(distances)
    noisy = name.endswith("noise")
    other_key = np.asarray(Corruption(name, 3).apply(image, "cifar10/test/00002"))
    assert noisy == (not np.array_equal(other_key, np.asarray(Corruption(name, 3).apply(image, "cifar10/test/00001"))))


def test_contrast_follows_the_cifar10c_formula():
    image = _textured_image(1)
    pixels = np.asarray(image, dtype=np.float64) / 255
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    expected = np.round(np.clip((pixels - mean) * 0.4 + mean, 0, 1) * 255)

    assert np.array_equal(np.asarray(Corruption("contrast", 3).apply(image, "x")), expected)


@pytest.mark.parametrize("spec, message", [
    ("fog:3", "unknown corruption 'fog'"),
    ("jpeg", "needs a severity from 1 to 5"),
    ("jpeg:0", "needs a severity from 1 to 5"),
    ("gaussian_blur:6", "needs a severity from 1 to 5"),
])  # fmt: skip
def test_bad_corruption_specs_are_one_line_errors(spec, message):
    with pytest.raises(ClipsearchError, match=message) as caught:
        parse_corruption(spec)
    assert "\n" not in str(caught.value)


# -- seen / held-out accuracy (shapes) -------------------------------------------------------------


def test_zero_shot_accuracy_splits_seen_and_held_out_rows():
    rng = np.random.default_rng(0)
    class_names = [f"class {i}" for i in range(30)]
    prototypes = rng.normal(size=(30, 16))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    truth = rng.integers(0, 30, size=600)
    vectors = prototypes[truth] + rng.normal(scale=0.35, size=(600, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    holdout = ["class 3", "class 7", "class 11", "class 19", "class 28"]
    labels = [class_names[t] for t in truth] + ["not a class", None]
    vectors = np.vstack([vectors, vectors[:2]])

    result = zero_shot_accuracy(vectors, labels, class_names, prototypes, holdout=holdout)

    correct = (vectors[:600] @ prototypes.T).argmax(axis=1) == truth
    held = np.isin(truth, [3, 7, 11, 19, 28])
    assert (result["n"], result["excluded"]) == (600, 2)
    assert result["top1"] == float(correct.mean())
    assert result["seen"] == {"top1": float(correct[~held].mean()), "n": int((~held).sum())}
    assert result["held_out"] == {"top1": float(correct[held].mean()), "n": int(held.sum()), "classes": holdout}
    assert 0 < result["held_out"]["top1"] < 1 and 0 < result["seen"]["top1"] < 1
    assert "seen" not in zero_shot_accuracy(vectors, labels, class_names, prototypes)


def test_eval_zeroshot_on_shapes_reports_the_shared_seen_and_held_out_accuracy(tmp_path, tiny_encoder):
    meta = generate_shapes(tmp_path / "shapes", n=100, size=32, seed=0, split_fractions=(0.4, 0.3, 0.3))
    root = tmp_path / "indexes"
    code, _, stderr = run_cli("index", tmp_path / "shapes", "--name", "shapes", "--root", root, "--workers", "0", *TINY)
    assert code == 0, stderr

    result = run_json("eval", "zeroshot", "shapes", "--root", root)

    rows = stored(root, "shapes", "split = 'test'")
    prototypes = open_clip_prototypes(tiny_encoder, shapes_class_names(), SHAPES_TEMPLATES).T
    shared = zero_shot_accuracy(
        rows["vectors"], rows["label_name"], shapes_class_names(), prototypes, holdout=meta["holdout"]
    )
    trainer, _ = score_embeddings(  # what the trainer's validation logs for these vectors
        rows["id"], rows["vectors"], rows["label_name"], None, None, shapes_class_names(), prototypes, meta["holdout"]
    )
    assert (result["labels"], result["templates"], result["n"]) == ("shapes", "shapes", 30)
    assert (
        result["seen"]["n"] == 25 and result["held_out"]["n"] == 5 and result["held_out"]["classes"] == meta["holdout"]
    )
    assert (
        result["seen"] == shared["seen"]
        and result["held_out"] == shared["held_out"]
        and result["top1"] == shared["top1"]
    )
    assert (trainer["zs_top1"], trainer["zs_seen_top1"], trainer["zs_heldout_top1"]) == (
        result["top1"],
        result["seen"]["top1"],
        result["held_out"]["top1"],
    )


def test_trainer_and_eval_top1_are_one_computation_even_with_ties():
    """zero_shot_accuracy (the trainer's) is zero_shot_report's top-1 (eval zeroshot's), ties included."""
    rng = np.random.default_rng(1)
    prototypes = rng.normal(size=(6, 8))
    prototypes[3] = prototypes[1]  # identical classes: every image ties between them, the lower index wins
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    truth = rng.integers(0, 6, size=300)
    vectors = prototypes[truth] + rng.normal(scale=0.3, size=(300, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    class_names = [f"class {i}" for i in range(6)]
    labels = [class_names[t] for t in truth]

    trainer = zero_shot_accuracy(vectors, labels, class_names, prototypes)["top1"]
    report = zero_shot_report(vectors, truth, class_names, prototypes)

    expected = classification_report(vectors.astype(np.float32) @ prototypes.astype(np.float32).T, truth, class_names)
    assert trainer == report["top1"] == expected["top1"]
    assert report == expected
    assert report["per_class"][3]["n"] > 0 and report["per_class"][3]["accuracy"] == 0.0  # it loses every tie to 1


def test_labels_of_an_index_without_a_known_dataset_must_be_given():
    index = SimpleNamespace(name="photos", manifest={"sources": ["/home/me/Pictures"]})

    with pytest.raises(ClipsearchError, match=r"cannot tell the classes of index 'photos'.*name its labels"):
        inferred_labels(index)


# -- CIFAR through the CLI -----------------------------------------------------------------------


def test_index_refuses_a_hostile_cifar_pickle_in_one_line(tmp_path):
    folder = locate_cifar("cifar10", make_cifar_archive(tmp_path, "cifar10"), download=False)
    marker = tmp_path / "pwned"

    class RunsCommand:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": RunsCommand(), b"labels": [0]}, f, protocol=2)

    code, stdout, stderr = run_cli(
        "index", "cifar10", "--name", "evil", "--data-dir", folder, "--root", tmp_path / "indexes", *TINY
    )

    assert code == 1 and "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and re.fullmatch(
        r"error: \S+/test_batch refused: the file tries to load \w+\.exec, .*", errors[0]
    )
    assert not marker.exists()
