"""`clipsearch eval retrieval`: recall@k both ways against a brute-force computation straight from
the LanceDB tables, the multi-caption rule with 1 to 7 captions per image, the JSON contract, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from caption_fixture import (
    brute_force_recall,
    karpathy_image,
    random_captions,
    table_rows,
    write_flickr8k,
    write_image,
    write_karpathy,
)
from cli_runner import run_cli
from PIL import Image

from clipsearch.index.index import Index
from clipsearch.index.schema import captions_schema, rows_to_table
from clipsearch.index.store import CAPTIONS, IMAGES, sql_in
from clipsearch.sources.shapes import generate_shapes
from clipsearch.tasks.retrieval import report_from_vectors

KS = (1, 5, 10)
N_TEST, N_TRAIN, N_DELETED = 500, 10, 3


@pytest.fixture(scope="module")
def flickr500(tmp_path_factory, tiny_encoder) -> Path:
    """An index root holding `f500`: a Flickr8k-layout dataset of 500 test images × 5 captions plus 10
    train images, the first three test images marked deleted (as a re-scan does with removed files)."""
    base = tmp_path_factory.mktemp("flickr500")
    write_flickr8k(base / "data", {"test": N_TEST, "train": N_TRAIN}, captions_per_image=5)
    index = Index.create("f500", base / "indexes", encoder=tiny_encoder)
    index.add_dataset("flickr8k", split="all", data_dir=base / "data", workers=0, progress=False)
    gone = sorted(index.vectors("split = 'test'")[0])[:N_DELETED]
    index.store.update(IMAGES, sql_in("id", gone), {"deleted": True})
    return base / "indexes"


def _eval_json(root: Path, *args: str) -> dict:
    code, stdout, stderr = run_cli("eval", "retrieval", "f500", "--root", root, "--json", *args)
    assert code == 0, stderr
    return json.loads(stdout)


def test_recall_equals_brute_force_on_500_images(flickr500, tmp_path) -> None:
    report = _eval_json(flickr500, "--out", tmp_path / "out")

    expected = brute_force_recall(flickr500 / "f500", "test", KS)
    assert (report["n_images"], report["n_captions"]) == (N_TEST - N_DELETED, 5 * (N_TEST - N_DELETED))
    for key in ("text_to_image", "image_to_text", "n_images", "n_captions", "n_image_queries"):
        assert report[key] == expected[key], key
    assert 0 < report["text_to_image"]["R@10"] < 1  # random weights: neither trivial nor perfect


def test_json_shape_and_files(flickr500, tmp_path) -> None:
    report = _eval_json(flickr500, "--out", tmp_path)

    assert {"text_to_image", "image_to_text", "n_images", "n_captions"} <= set(report)
    for direction in ("text_to_image", "image_to_text"):
        assert list(report[direction]) == ["R@1", "R@5", "R@10", "mean_rank", "median_rank"]
        assert all(isinstance(v, float) for v in report[direction].values())
    assert isinstance(report["n_images"], int) and isinstance(report["n_captions"], int)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {k: saved[k] for k in ("text_to_image", "image_to_text")} == {
        k: report[k] for k in ("text_to_image", "image_to_text")
    }
    for direction, curve in saved["curves"].items():
        assert len(curve) == 50 and curve == sorted(curve)
        assert [curve[k - 1] for k in KS] == [saved[direction][f"R@{k}"] for k in KS]
    with Image.open(tmp_path / "recall_at_k.png") as plot:
        assert plot.format == "PNG" and plot.width > 300

    other_ks = _eval_json(flickr500, "--out", tmp_path, "--ks", "3,1,50")
    assert list(other_ks["image_to_text"]) == ["R@1", "R@3", "R@50", "mean_rank", "median_rank"]
    assert other_ks["image_to_text"]["R@50"] == saved["curves"]["image_to_text"][49]


def test_split_filter_and_table_output(flickr500, tmp_path) -> None:
    train = _eval_json(flickr500, "--split", "train", "--out", tmp_path)
    assert train == {**train, **brute_force_recall(flickr500 / "f500", "train", KS)}
    assert (train["n_images"], train["n_captions"]) == (N_TRAIN, 5 * N_TRAIN)

    code, stdout, _ = run_cli("eval", "retrieval", "f500", "--root", flickr500, "--out", tmp_path)
    test = brute_force_recall(flickr500 / "f500", "test", KS)
    assert code == 0
    assert "text → image" in stdout and "image → text" in stdout and "median rank" in stdout
    assert f"{100 * test['image_to_text']['R@10']:.2f}" in stdout and str(test["n_captions"]) in stdout


def test_user_errors_are_one_line(flickr500, tmp_path, tiny_encoder) -> None:
    for args, message in (
        (("--ks", "1,x"), "--ks must be comma-separated whole numbers"),
        (("--ks", "0,5"), "--ks needs positive numbers"),
        (("--split", "val"), "no images in split 'val' (splits: test, train;"),
    ):
        code, stdout, stderr = run_cli("eval", "retrieval", "f500", "--root", flickr500, *args)
        assert (code, stdout) == (1, "") and stderr.startswith("error: ") and message in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1

    for i in range(2):
        write_image(tmp_path / "plain" / f"{i}.png", seed=i)
    Index.create("plain", tmp_path / "indexes", encoder=tiny_encoder).add_folder(
        tmp_path / "plain", workers=0, progress=False
    )
    code, _, stderr = run_cli("eval", "retrieval", "plain", "--root", tmp_path / "indexes", "--split", "all")
    assert code == 1 and "has no captions for its 2 images" in stderr


def test_folder_with_a_captions_file_and_uncaptioned_images(tmp_path) -> None:
    folder = tmp_path / "photos"
    texts = random_captions([3, 1, 2, 2, 4], seed=5)
    for i in range(7):
        write_image(folder / f"{i}.png", seed=i)
    captions_file = tmp_path / "mine.csv"  # not in the folder; images 5 and 6 have no captions
    captions_file.write_text(
        "file,caption\n" + "".join(f"photos/{i}.png,{t}\n" for i, ts in enumerate(texts) for t in ts)
    )
    code, _, stderr = run_cli(
        "index",
        folder,
        "--captions",
        captions_file,
        "--name",
        "p",
        "--model",
        "tiny",
        "--pretrained",
        "none",
        "--workers",
        "0",
    )
    assert code == 0, stderr

    code, stdout, stderr = run_cli("eval", "retrieval", "p", "--split", "all", "--json", "--out", tmp_path / "out")

    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["n_images"], report["n_captions"], report["n_image_queries"]) == (7, 12, 5)
    expected = brute_force_recall(Index.open("p").store.path, "all", KS)
    assert {k: report[k] for k in expected} == expected


def test_one_to_seven_captions_per_image_through_the_index(tmp_path) -> None:
    """COCO layout; image i has i % 7 + 1 captions. Vectors are then set so that only each image's LAST
    caption matches it (caption i·e_i), while its other captions lean to the next image: the rule
    'any true caption in the top k' gives image->text R@1 = 1, the naive first-caption rule does not."""
    counts = [i % 7 + 1 for i in range(14)]
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(len(counts))]
    for i, name in enumerate(names):
        write_image(tmp_path / "data" / "val2014" / name, seed=i)
    texts = random_captions(counts, seed=3)
    write_karpathy(
        tmp_path / "data" / "dataset_coco.json",
        [karpathy_image(n, "test", t, "val2014") for n, t in zip(names, texts)],
        "coco",
    )
    code, _, stderr = run_cli(
        "index",
        "coco",
        "--data-dir",
        tmp_path / "data",
        "--name",
        "c7",
        "--model",
        "tiny",
        "--pretrained",
        "none",
        "--workers",
        "0",
    )
    assert code == 0, stderr

    index = Index.open("c7")
    dim = index.manifest["dim"]
    basis = np.eye(dim, dtype=np.float32)
    row_of = {f"coco/val2014/{name}": i for i, name in enumerate(names)}
    image_vectors = pa.FixedSizeListArray.from_arrays(pa.array(basis[: len(names)].ravel()), dim)
    images = pa.table({"id": list(row_of), "vector": image_vectors})
    index.store.update_columns(IMAGES, images)
    captions = table_rows(index.store.path, CAPTIONS)
    assert sorted((r["image_id"], r["caption_index"]) for r in captions) == sorted(
        (image_id, c) for image_id, i in row_of.items() for c in range(counts[i])
    )
    for row in captions:
        i = row_of[row["image_id"]]
        last = row["caption_index"] == counts[i] - 1
        vector = basis[i] if last else basis[(i + 1) % len(names)] + 0.5 * basis[i]
        row["vector"] = vector / np.linalg.norm(vector)
    index.store.delete(CAPTIONS, "true")
    shuffled = [captions[j] for j in np.random.default_rng(0).permutation(len(captions))]  # table order must not matter
    index.store.add(CAPTIONS, rows_to_table(shuffled, captions_schema(dim)))

    code, stdout, stderr = run_cli("eval", "retrieval", "c7", "--json", "--out", tmp_path / "out")
    assert code == 0, stderr
    report = json.loads(stdout)

    n_captions = sum(counts)
    assert report["image_to_text"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mean_rank": 1.0, "median_rank": 1.0}
    assert report["text_to_image"]["R@1"] == len(names) / n_captions  # only the last captions rank their image first
    assert report["text_to_image"]["mean_rank"] == (len(names) + 2 * (n_captions - len(names))) / n_captions
    expected = brute_force_recall(index.store.path, "test", KS)
    assert {k: report[k] for k in expected} == expected
    naive = brute_force_recall(index.store.path, "test", KS, positives="first")
    assert naive["image_to_text"]["R@1"] == counts.count(1) / len(names) != report["image_to_text"]["R@1"]


def test_validation_style_vectors_give_the_same_report(tmp_path, tiny_encoder) -> None:
    """What the trainer's validation does: encode a split's images and captions in memory and call
    report_from_vectors; `eval retrieval` on the index of the same data must give the same numbers."""
    data = tmp_path / "shapes"
    generate_shapes(data, n=60, size=32, seed=0, split_fractions=(0.0, 0.0, 1.0))  # a test split only
    Index.create("shapes", encoder=tiny_encoder).add_folder(data, workers=0, progress=False)
    code, stdout, stderr = run_cli("eval", "retrieval", "shapes", "--json", "--out", tmp_path / "out")
    assert code == 0, stderr
    indexed = json.loads(stdout)

    records = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    test = [r for r in records if r["split"] == "test"][::-1]  # another order than the table's
    image_vectors = tiny_encoder.encode_images([Image.open(data / r["file"]).convert("RGB") for r in test])
    caption_ids = [r["file"] for r in test for _ in r["captions"]]
    caption_vectors = tiny_encoder.encode_texts([c for r in test for c in r["captions"]])
    in_memory = report_from_vectors([r["file"] for r in test], image_vectors, caption_ids, caption_vectors, KS)

    for key in ("text_to_image", "image_to_text", "n_images", "n_captions"):
        assert in_memory[key] == indexed[key], key
    assert indexed["n_images"] == 60
