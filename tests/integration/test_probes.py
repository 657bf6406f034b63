"""Probes on stored features (`probe train/eval/apply`, `eval compare`), each number checked
against an independent computation: vectors read from the LanceDB table directly, scikit-learn
fits written here, zero-shot prototypes from open_clip.build_zero_shot_classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lancedb
import numpy as np
import open_clip
import PIL.Image
import pytest
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli, run_json
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from clipsearch.index.index import Index
from clipsearch.model.encoder import Encoder
from clipsearch.sources import images
from clipsearch.sources.shapes import generate_shapes
from clipsearch.tasks import outputs
from clipsearch.tasks.probes import Probe
from clipsearch.tasks.prompts import resolve_labels, template_set

NAME = "shapes"
FAST = ["--max-epochs", "12", "--patience", "4"]  # mlp/joint: enough to learn something, quick on 2 cores
FEW = ["--shots", "4"]  # linear: a quick C search where the full one is not the point


def stored(root: Path, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, label names, vectors) of a split, read with lancedb directly and sorted by id."""
    table = lancedb.connect(str(root / NAME / "db")).open_table("images")
    rows = sorted(
        table.search().where(f"deleted = false AND split = '{split}'").limit(None).to_arrow().to_pylist(),
        key=lambda r: r["id"],
    )
    return (
        [r["id"] for r in rows],
        [r["label_name"] for r in rows],
        np.array([r["vector"] for r in rows], dtype=np.float32),
    )


def arrays(root: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and class indices of the split's rows labelled with one of `classes`."""
    _, names, vectors = stored(root, split)
    keep = [n in classes for n in names]
    return vectors[keep], np.array([classes.index(n) for n, k in zip(names, keep) if k])


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The reference scikit-learn fits here on one thread: BLAS threads on small arrays crawl on shared cores."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoder) -> Path:
    """A tiny-model index of 600 generated shapes (480 train over 25 seen classes, 60 val, 60 test)."""
    base = tmp_path_factory.mktemp("probes")
    generate_shapes(base / "data", n=600, size=32, seed=0)
    Index.create(NAME, base / "indexes", encoder=tiny_encoder).add_folder(base / "data", workers=0, progress=False)
    return base / "indexes"


@pytest.fixture
def root(built: Path, tmp_path: Path) -> Path:
    """A private copy of the index, so a test's probes and labels never leak into another's."""
    shutil.copytree(built, tmp_path / "indexes")
    return tmp_path / "indexes"


@pytest.fixture(scope="module")
def classes(built: Path) -> list[str]:
    return sorted(set(stored(built, "train")[1]))


def independent_c_search(train: tuple, val: tuple) -> tuple[float, dict[float, float]]:
    """CLIP_benchmark's find_peak search, written as it is there: strict '>' in [left, peak, right] order."""
    grid = np.logspace(-6, 6, 97)
    accuracies: dict[int, float] = {}

    def accuracy(i: int) -> float:
        if i not in accuracies:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=grid[i], max_iter=1000)).fit(
                train[0].astype(np.float64), train[1]
            )
            accuracies[i] = float((model.predict(val[0].astype(np.float64)) == val[1]).mean())
        return accuracies[i]

    def find_peak(indices: list[int]) -> int:
        best, best_accuracy = 0, -1.0
        for i in indices:
            if accuracy(i) > best_accuracy:
                best, best_accuracy = i, accuracy(i)
        return best

    peak = find_peak(list(range(0, 97, 16)))
    span = 8
    while span > 0:
        peak = find_peak([max(peak - span, 0), peak, min(peak + span, 96)])
        span //= 2
    return float(grid[peak]), {float(grid[i]): a for i, a in accuracies.items()}


# -- acceptance check 3: the linear probe is scikit-learn with the validation-best C ----------------


def test_linear_probe_is_a_direct_sklearn_fit_with_the_validation_best_c(root, classes):
    meta = run_json("probe", "train", NAME, "--kind", "linear", "--root", root)

    train, val, test = (arrays(root, split, classes) for split in ("train", "val", "test"))
    assert meta["class_names"] == classes and meta["n_train"] == len(train[1]) == 480 and meta["n_val"] == len(val[1])
    best_c, accuracies = independent_c_search(train, val)
    row = 1.01 / len(val[1])  # a warm-started fit may flip one borderline validation image
    searched = {p["C"]: p["val_top1"] for p in meta["c_search"]}
    assert meta["C"] == meta["searched_C"] and meta["c_search_rows"] == 480  # no sampling at this size
    assert searched[meta["C"]] == max(searched.values()) == pytest.approx(meta["validation"]["top1"])
    for c, top1 in searched.items():  # each point scores as a scikit-learn fit from scratch
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        model.fit(train[0].astype(np.float64), train[1])
        assert top1 == pytest.approx(float((model.predict(val[0].astype(np.float64)) == val[1]).mean()), abs=row)
    assert searched[meta["C"]] >= accuracies[best_c] - row  # as good as CLIP_benchmark's exhaustive search

    direct = make_pipeline(StandardScaler(), LogisticRegression(C=meta["C"], max_iter=1000))
    direct.fit(np.concatenate([train[0], val[0]]).astype(np.float64), np.concatenate([train[1], val[1]]))
    expected = direct.predict(test[0].astype(np.float64))
    weights = load_file(str(root / NAME / "probes" / "linear.safetensors"))
    np.testing.assert_allclose(weights["coef"], direct[-1].coef_, rtol=1e-6, atol=1e-9)

    probe = Probe.load(root / NAME / "probes" / "linear.safetensors")
    assert probe.scores(test[0]).argmax(axis=1).tolist() == expected.tolist()  # the same predictions, row by row

    result = run_json("probe", "eval", NAME, "linear", "--root", root)
    assert result["n"] == len(expected) and result["excluded"] == 10  # the held-out classes' test images
    assert result["top1"] == pytest.approx(float((expected == test[1]).mean()))
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (test[1], expected), 1)
    assert result["confusion"] == confusion.tolist()
    assert (root / NAME / "eval" / "probe-linear-test" / "confusion.png").stat().st_size > 1000


# -- acceptance check 1: features come from the index, never from images --------------------------


def test_probe_train_and_eval_never_decode_or_encode_an_image(root, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded or encoded")

    for target, attribute in (
        (PIL.Image, "open"),
        (images, "decode_image"),
        (images, "open_uri"),
        (Encoder, "encode_images"),
        (Encoder, "encode_image_tensors"),
    ):
        monkeypatch.setattr(target, attribute, refuse)
    texts = []
    encode_texts = Encoder.encode_texts
    monkeypatch.setattr(Encoder, "encode_texts", lambda self, batch: texts.extend(batch) or encode_texts(self, batch))

    for kind, options, name in (("linear", FEW, "linear-4shot"), ("mlp", FAST, "mlp"), ("joint", FAST, "joint")):
        assert run_json("probe", "train", NAME, "--kind", kind, *options, "--root", root)["kind"] == kind
        assert run_json("probe", "eval", NAME, name, "--root", root)["n"] == 50
    assert texts and all(isinstance(t, str) for t in texts)  # only the joint head's class prompts were encoded


# -- acceptance check 4: few-shot picks ---------------------------------------------------------


def test_shots_pick_exactly_k_per_class_the_same_for_the_same_seed(root, classes):
    def train_shots(seed: int, name: str) -> dict:
        out = root / f"{name}.safetensors"
        return run_json(
            "probe",
            "train",
            NAME,
            "--kind",
            "linear",
            "--shots",
            "3",
            "--seed",
            str(seed),
            "--out",
            out,
            "--root",
            root,
        )

    first = train_shots(5, "a")
    again = train_shots(5, "b")
    other = train_shots(6, "c")

    ids, names, _ = stored(root, "train")
    label_of = dict(zip(ids, names))
    picked = [label_of[i] for i in first["shot_ids"]]  # KeyError if a pick is not a train image
    assert sorted(picked) == sorted(classes * 3) and len(set(first["shot_ids"])) == 75
    assert first["n_train"] == 75 and set(first["train_counts"].values()) == {3}
    assert (
        again["shot_ids"] == first["shot_ids"] and again["C"] == first["C"] and again["c_search"] == first["c_search"]
    )
    assert other["shot_ids"] != first["shot_ids"]
    assert (
        load_file(str(root / "a.safetensors"))["coef"].tobytes()
        == load_file(str(root / "b.safetensors"))["coef"].tobytes()
    )


def test_a_few_shot_probe_gets_its_own_name_and_every_title_says_its_shots(root, monkeypatch):
    full = run_json("probe", "train", NAME, "--kind", "linear", "--root", root)
    code, stdout, _ = run_cli("probe", "train", NAME, "--kind", "linear", *FEW, "--root", root)
    assert code == 0 and "linear-4shot (linear, 4-shot)" in stdout

    probes = root / NAME / "probes"
    assert json.loads((probes / "linear.json").read_text())["n_train"] == full["n_train"] == 480  # not overwritten
    assert json.loads((probes / "linear-4shot.json").read_text())["n_train"] == 4 * 25
    titles = []
    monkeypatch.setattr(outputs, "plot_confusion", lambda *args, title, **kw: titles.append(title) or args[2])
    code, stdout, _ = run_cli("probe", "eval", NAME, "linear-4shot", "--root", root)
    assert code == 0 and "linear-4shot (linear, 4-shot)" in stdout and "4-shot" in titles[-1]
    assert run_json("probe", "eval", NAME, "linear-4shot", "--root", root)["shots"] == 4
    assert run_json("probe", "eval", NAME, "linear", "--root", root)["shots"] is None
    code, stdout, _ = run_cli("probe", "apply", NAME, "linear-4shot", "--root", root)
    assert code == 0 and "4-shot" in stdout


# -- acceptance check 5: determinism ----------------------------------------------------------


def test_same_seed_gives_the_same_probe_and_metrics(root):
    runs = [
        run_json(
            "probe",
            "train",
            NAME,
            "--kind",
            "mlp",
            *FAST,
            "--seed",
            "3",
            "--out",
            root / f"m{i}.safetensors",
            "--root",
            root,
        )
        for i in range(2)
    ]
    other = run_json(
        "probe", "train", NAME, "--kind", "mlp", *FAST, "--seed", "4", "--out", root / "m9.safetensors", "--root", root
    )

    assert runs[0]["validation"] == runs[1]["validation"] and runs[0]["history"] == runs[1]["history"]
    assert runs[0]["history"] != other["history"]
    weights = [load_file(str(root / f"m{i}.safetensors")) for i in range(2)]
    assert all(weights[0][key].tobytes() == weights[1][key].tobytes() for key in weights[0])
    evals = [run_json("probe", "eval", NAME, root / f"m{i}.safetensors", "--root", root) for i in range(2)]
    assert {k: v for k, v in evals[0].items() if k not in ("seconds", "probe", "outputs")} == {
        k: v for k, v in evals[1].items() if k not in ("seconds", "probe", "outputs")
    }


# -- the joint head starts at zero-shot ------------------------------------------------------


def test_joint_head_starts_exactly_at_zero_shot_and_never_ends_below_it_on_val(root, classes, tiny_encoder):
    meta = run_json("probe", "train", NAME, "--kind", "joint", *FAST, "--root", root)
    untrained = run_json(
        "probe", "train", NAME, "--kind", "joint", "--max-epochs", "0", "--out", root / "zs.safetensors", "--root", root
    )

    assert meta["templates"] == "shapes"  # the shapes dataset's own templates, found from the index
    prototypes = open_clip.build_zero_shot_classifier(
        tiny_encoder.model, tiny_encoder.tokenizer, classes, template_set("shapes"), device="cpu"
    ).numpy()
    val_vectors, val_labels = arrays(root, "val", classes)
    zero_shot_val = float(((val_vectors @ prototypes).argmax(axis=1) == val_labels).mean())
    assert meta["history"][0]["val_top1"] == pytest.approx(zero_shot_val)  # epoch 0 = the zero-shot head
    assert meta["validation"]["top1"] >= zero_shot_val
    weights = load_file(str(root / "zs.safetensors"))
    assert not weights["image_delta"].any() and not weights["text_delta"].any() and weights["log_gain"] == 0
    assert untrained["logit_scale"] == 100.0

    test_vectors, test_labels = arrays(root, "test", classes)
    result = run_json("probe", "eval", NAME, root / "zs.safetensors", "--root", root)
    assert result["top1"] == pytest.approx(float(((test_vectors @ prototypes).argmax(axis=1) == test_labels).mean()))


# -- apply: searchable labels -----------------------------------------------------------------


def test_apply_writes_searchable_probe_labels(root):
    run_json("probe", "train", NAME, "--kind", "linear", *FEW, "--root", root)
    manifest_before = json.loads((root / NAME / "manifest.json").read_text())
    result = run_json("probe", "apply", NAME, "linear-4shot", "--root", root)

    table = lancedb.connect(str(root / NAME / "db")).open_table("images")
    rows = sorted(table.search().where("deleted = false").limit(None).to_arrow().to_pylist(), key=lambda r: r["id"])
    weights = load_file(str(root / NAME / "probes" / "linear-4shot.safetensors"))
    meta = json.loads((root / NAME / "probes" / "linear-4shot.json").read_text())
    vectors = np.array([r["vector"] for r in rows], dtype=np.float64)
    logits = (vectors - weights["mean"]) / weights["scale"] @ weights["coef"].T + weights["intercept"]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)

    assert result["n"] == len(rows) == 600 and sum(result["counts"].values()) == 600
    assert [r["probe_label"] for r in rows] == [meta["class_names"][c] for c in logits.argmax(axis=1)]
    np.testing.assert_allclose([r["probe_score"] for r in rows], probabilities.max(axis=1), rtol=1e-5)
    assert {r["probe_name"] for r in rows} == {"linear-4shot"} and result["shots"] == 4

    label = max(result["counts"], key=result["counts"].get)
    hits = run_json("search", NAME, "a red circle", "-k", "600", "--where", f"probe_label = '{label}'", "--root", root)
    assert len(hits) == result["counts"][label] and all(h["probe_label"] == label for h in hits)
    manifest = json.loads((root / NAME / "manifest.json").read_text())
    assert (
        manifest["ann"]["table_version"] == table.version != manifest_before["ann"]["table_version"]
    )  # FAISS kept, not rebuilt


# -- eval compare: four rows, each equal to its own evaluation -------------------------------------


def test_eval_compare_puts_zero_shot_and_the_three_probes_side_by_side(root, classes, tiny_encoder):
    run_json("probe", "train", NAME, "--kind", "mlp", *FAST, "--root", root)  # saved: compare reuses it
    run_json("probe", "train", NAME, "--kind", "joint", *FAST, "--root", root)
    result = run_json("eval", "compare", NAME, "--root", root)

    assert list(result["methods"]) == ["zero-shot", "linear", "mlp", "joint"]
    assert result["trained"] == ["linear"] and result["class_names"] == classes and result["n"] == 50
    prototypes = open_clip.build_zero_shot_classifier(
        tiny_encoder.model, tiny_encoder.tokenizer, classes, template_set("shapes"), device="cpu"
    ).numpy()
    test_vectors, test_labels = arrays(root, "test", classes)
    zero_shot = result["methods"]["zero-shot"]
    assert zero_shot["top1"] == pytest.approx(float(((test_vectors @ prototypes).argmax(axis=1) == test_labels).mean()))
    for kind in ("linear", "mlp", "joint"):
        alone = run_json("probe", "eval", NAME, kind, "--root", root)
        assert {k: result["methods"][kind][k] for k in ("top1", "top5", "mean_per_class_recall", "per_class")} == {
            k: alone[k] for k in ("top1", "top5", "mean_per_class_recall", "per_class")
        }
    assert result["methods"]["linear"]["top1"] > zero_shot["top1"]  # even random tiny features carry colour

    code, stdout, stderr = run_cli("eval", "compare", NAME, "--root", root)  # all three reused now
    assert code == 0 and "probes trained now: none" in stderr
    header = next(line for line in stdout.splitlines() if "zero-shot" in line)
    assert [word for word in ("zero-shot", "linear", "mlp", "joint") if word in header] == [
        "zero-shot",
        "linear",
        "mlp",
        "joint",
    ]
    top1 = next(line for line in stdout.splitlines() if "top-1" in line)
    assert f"{100 * zero_shot['top1']:.2f}" in top1 and f"{100 * result['methods']['linear']['top1']:.2f}" in top1
    assert (
        json.loads((root / NAME / "eval" / "compare-test" / "results.json").read_text())["methods"] == result["methods"]
    )


# -- refusals -------------------------------------------------------------------------------


def test_a_probe_of_another_model_is_refused_in_one_line(root):
    run_json("probe", "train", NAME, "--kind", "linear", *FEW, "--root", root)
    shutil.copytree(root / NAME, root / "other")
    manifest = json.loads((root / "other" / "manifest.json").read_text())
    manifest["model"] = {
        "arch": "mini",
        "pretrained": "none",
        "checkpoint_sha256": None,
    }  # as if built with another model
    (root / "other" / "manifest.json").write_text(json.dumps(manifest))
    probe = root / NAME / "probes" / "linear-4shot.safetensors"

    for command in ("eval", "apply"):
        code, stdout, stderr = run_cli("probe", command, "other", probe, "--root", root)
        assert code == 1 and stdout == ""
        assert stderr.strip().count("\n") == 0 and "tiny@random-seed0" in stderr and "mini@random-seed0" in stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["probe", "train", NAME, "--kind", "svm"], "unknown probe kind"),
        (["probe", "train", NAME, "--kind", "linear", "--shots", "0"], "shots must be at least 1"),
        (["probe", "train", NAME, "--kind", "linear", "--val-split", "dev"], "no images in split 'dev'"),
        (["probe", "eval", NAME, "nope"], "no probe 'nope'"),
    ],
)
def test_user_errors_are_one_line(root, args, message):
    code, _, stderr = run_cli(*args, "--root", root)
    assert code == 1 and message in stderr and stderr.strip().count("\n") == 0


# -- label sets: CIFAR-100's raw names ------------------------------------------------------------


def test_cifar100_raw_names_map_to_the_label_set(tmp_path, tiny_encoder):
    archive = make_cifar_archive(tmp_path, "cifar100", n_train_per_class=10, n_test_per_class=3, n_classes=4)
    index = Index.create("c100", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_dataset("cifar100", split="all", data_dir=archive, workers=0, progress=False)

    meta = run_json(
        "probe", "train", "c100", "--kind", "linear", "--labels", "cifar100", "--root", tmp_path / "indexes"
    )
    assert meta["class_names"] == resolve_labels("cifar100")[:4]  # "aquarium fish" for the stored "aquarium_fish"
    assert len(meta["classes_without_images"]) == 96
    train_rows = index.rows("split = 'train'", ["label_name"]).column("label_name").to_pylist()
    assert meta["n_train"] == len(train_rows) and "aquarium_fish" in train_rows
    assert run_json("probe", "eval", "c100", "linear", "--root", tmp_path / "indexes")["n"] == 12
