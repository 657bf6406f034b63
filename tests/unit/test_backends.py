"""The exported CPU backends (OpenVINO, ONNX Runtime) against the torch backend on the tiny models:
vectors within the fidelity bounds, indexes that answer queries from the other backend, the
numpy preprocessing equal to open_clip's transform, `auto`'s choice, and int8's refusal.

With an export cached, queries import no torch (issue 11, part 2), nor lancedb (the hits' rows come
from the rows file, the table version from its folder): checked with `sys.modules` in a
fresh interpreter. Exports take seconds each, so each one is made once per session in a shared cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from imagegen import distinct_image, photo_like, write_distinct_images

from clipsearch.api import Index
from clipsearch.errors import ClipsearchError
from clipsearch.model import export
from clipsearch.model.backends import load_encoder
from clipsearch.model.encoder import Encoder
from clipsearch.model.exported import ExportedEncoder, export_folder
from clipsearch.model.pixels import Preprocess
from clipsearch.model.spec import ModelSpec, load_open_clip

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

EXPORTS = [("tiny", "openvino", "fp32"), ("tiny-rn", "onnx", "int8"), ("tiny-rn", "openvino", "int8")]
# Runs each `clipsearch ARGS` of $COMMANDS (JSON) in one fresh interpreter; prints their JSON outputs
# and the heavy modules it then holds.
PROBE = """
import io, json, os, sys
from contextlib import redirect_stdout
from clipsearch.cli.app import main
reports = []
for args in json.loads(os.environ["COMMANDS"]):
    out = io.StringIO()
    with redirect_stdout(out):
        try:
            main(args)
        except SystemExit as stop:
            assert not stop.code, stop.code
    reports.append(json.loads(out.getvalue()))
heavy = [m for m in ("torch", "open_clip", "torchvision", "lancedb") if m in sys.modules]
print(json.dumps({"hits": reports, "heavy": heavy}))
"""
MIN_COSINE = {"fp32": 0.9999, "int8": export.INT8_MIN_COSINE}
TEXTS = ["a dog", "a red car on a street", "zwei Katzen 🐱🐱", "blue", "the quick brown fox " * 10]


@contextmanager
def hf_home(folder: Path) -> Iterator[None]:
    before = os.environ.get("HF_HOME")
    os.environ["HF_HOME"] = str(folder)
    try:
        yield
    finally:
        os.environ["HF_HOME"] = before or ""


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the EXPORTS (int8 OpenVINO calibrated on the images it is first given)."""
    folder = tmp_path_factory.mktemp("exports")
    with hf_home(folder):
        for arch, backend, precision in EXPORTS:
            encoder = load_encoder(ModelSpec(arch, "none"), backend, precision)
            encoder.encode_images([distinct_image(seed) for seed in range(100, 124)])  # calibration
    return folder


@pytest.fixture
def cached(export_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(export_cache))
    return export_cache


@pytest.fixture(scope="session")
def torch_encoders() -> dict[str, Encoder]:
    return {arch: Encoder(ModelSpec(arch, "none"), device="cpu") for arch in ("tiny", "tiny-rn")}


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, axis=1)))


@pytest.mark.parametrize(("arch", "backend", "precision"), EXPORTS)
def test_exported_vectors_equal_torch_within_the_bounds(cached, torch_encoders, arch, backend, precision) -> None:
    encoder = load_encoder(ModelSpec(arch, "none"), backend, precision)
    assert isinstance(encoder, ExportedEncoder) and encoder.backend_info()["backend"] == backend
    reference = torch_encoders[arch]
    images = [photo_like(70, 50, seed) for seed in range(12)]  # not the calibration nor the probe images
    image_vectors, text_vectors = encoder.encode_images(images), encoder.encode_texts(TEXTS)
    assert image_vectors.shape == (12, reference.dim) and image_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-5)
    assert mean_cosine(image_vectors, reference.encode_images(images)) >= MIN_COSINE[precision]
    assert mean_cosine(text_vectors, reference.encode_texts(TEXTS)) >= MIN_COSINE[precision]
    fidelity = encoder.backend_info()["fidelity"]  # measured at export on the probe set
    assert min(fidelity["image_cosine"], fidelity["text_cosine"]) >= MIN_COSINE[precision]
    assert 0.0 <= fidelity["top5_overlap"] <= 1.0


def test_an_index_built_on_one_backend_answers_queries_from_another(cached, tmp_path, torch_encoders) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, [f"img{i}.png" for i in range(8)])
    exported = load_encoder(ModelSpec("tiny", "none"), "openvino", "fp32")
    for name, builder, asker in (("by_torch", torch_encoders["tiny"], exported), ("by_ov", exported, None)):
        Index.create(name, tmp_path / "idx", encoder=builder).add_folder(folder, workers=0, progress=False)
        index = Index.open(name, tmp_path / "idx", encoder=asker or torch_encoders["tiny"])
        for i in range(8):
            hits = index.search(image=folder / f"img{i}.png", k=2)
            assert hits[0].id == f"img{i}.png" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        own = Index.open(name, tmp_path / "idx", encoder=builder)
        theirs, ours = index.search("a dog", k=8), own.search("a dog", k=8)
        np.testing.assert_allclose([h.score for h in theirs], [h.score for h in ours], atol=1e-4)
    assert Index.open("by_ov", tmp_path / "idx").manifest["encoder"]["backend"] == "openvino"
    assert Index.open("by_torch", tmp_path / "idx").info()["encoder"] == {"backend": "torch", "precision": "fp32"}


def test_auto_uses_a_cached_export_and_never_makes_one(cached, monkeypatch, tmp_path) -> None:
    tiny, tiny_rn = ModelSpec("tiny", "none"), ModelSpec("tiny-rn", "none")
    chosen = load_encoder(tiny)
    assert isinstance(chosen, ExportedEncoder) and (chosen.backend, chosen.precision) == ("openvino", "fp32")
    recorded = load_encoder(tiny_rn, recorded={"backend": "onnx", "precision": "int8"})
    assert (recorded.backend, recorded.precision) == ("onnx", "int8")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    assert isinstance(load_encoder(tiny), Encoder)
    assert not (tmp_path / "empty").exists()


def test_int8_further_than_the_bound_is_refused_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export, "INT8_MIN_COSINE", 1.01)  # no int8 export reaches it
    spec = ModelSpec("tiny-rn", "none")
    with pytest.raises(ClipsearchError, match="too far from fp32") as refused:
        load_encoder(spec, "onnx", "int8")
    assert "\n" not in str(refused.value)
    folder = export_folder(spec, "onnx", "int8")
    assert not folder.exists() and not list(folder.parent.iterdir())  # no export, no half-made one


def test_choices_the_backends_do_not_have_are_refused() -> None:
    spec = ModelSpec("tiny", "none")
    for backend, precision, message in (
        ("tensorrt", None, "unknown backend"),
        ("openvino", "fp8", "unknown precision"),
        ("onnx", "bf16", "no bf16"),
        ("torch", "int8", "runs fp32"),
    ):
        with pytest.raises(ClipsearchError, match=message):
            load_encoder(spec, backend, precision)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_numpy_preprocessing_equals_open_clip(resize_mode: str) -> None:
    open_clip = load_open_clip()
    cfg = {
        "size": 224,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": resize_mode,
    }
    theirs = open_clip.image_transform(224, is_train=False, resize_mode=resize_mode)
    for width, height in ((300, 200), (224, 224), (481, 640), (100, 50), (31, 700)):
        image = photo_like(width, height, seed=width)
        np.testing.assert_allclose(Preprocess(cfg)(image), theirs(image).numpy(), atol=1e-6)


def test_queries_on_a_cached_export_import_no_torch(cached, tmp_path: Path, torch_encoders) -> None:
    folder, root = tmp_path / "photos", tmp_path / "idx"
    write_distinct_images(folder, [f"img{i}.png" for i in range(6)])
    exported = load_encoder(ModelSpec("tiny", "none"), "openvino", "fp32")
    Index.create("base", root, encoder=exported).add_folder(folder, workers=0, progress=False)
    commands = [
        ["search", "base", "a dog", "--root", str(root), "--json", "-k", "3"],
        ["search", "base", "--image", str(folder / "img2.png"), "--root", str(root), "--json", "-k", "1"],
    ]
    env = {**os.environ, "COMMANDS": json.dumps(commands)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == [], f"a query on a cached export imported {result['heavy']}"
    text_hits, image_hits = result["hits"]
    by_torch = Index.open("base", root, encoder=torch_encoders["tiny"]).search("a dog", k=3)
    assert [h["id"] for h in text_hits] == [h.id for h in by_torch]
    assert [h["score"] for h in text_hits] == pytest.approx([h.score for h in by_torch], abs=1e-4)
    assert image_hits[0]["id"] == "img2.png"
