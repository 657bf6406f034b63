"""The evaluation and probe commands that encode run on the backend asked for (issue 11: --backend/--precision
like index/search): a torch-free ONNX Runtime export of the index's own model gives the same zero-shot
numbers as torch within the fidelity bound, re-encoding corrupted images included, and a joint probe's
class prompts are encoded by it. (`eval retrieval`, `probe eval` and `probe apply` encode nothing: stored
vectors only.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import run_json

from clipsearch.index.index import Index
from clipsearch.model.exported import ExportedEncoder
from clipsearch.sources.shapes import generate_shapes

pytest.importorskip("onnxruntime")

NAME = "shapes"
BOUND = 0.005  # half a point: the goal issue 11 sets for exported backends against torch fp32
ONNX = ["--backend", "onnx", "--precision", "fp32"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_encoder) -> Path:
    base = tmp_path_factory.mktemp("backends")
    generate_shapes(base / "data", n=200, size=32, seed=5)
    Index.create(NAME, base / "indexes", encoder=tiny_encoder).add_folder(base / "data", workers=0, progress=False)
    return base / "indexes"


@pytest.fixture
def exported_calls(monkeypatch) -> list[str]:
    """Which towers of an exported encoder ran."""
    calls: list[str] = []
    encode = ExportedEncoder._encode
    monkeypatch.setattr(
        ExportedEncoder, "_encode", lambda self, tower, b: calls.append(tower) or encode(self, tower, b)
    )
    return calls


def test_zero_shot_on_an_onnx_export_matches_torch_within_the_bound(root, exported_calls):
    for extra in ([], ["--corruption", "gaussian_noise:2", "--workers", "0"]):
        torch_result = run_json("eval", "zeroshot", NAME, *extra, "--backend", "torch", "--root", root)
        assert not exported_calls
        onnx_result = run_json("eval", "zeroshot", NAME, *extra, *ONNX, "--root", root)
        assert "text" in exported_calls and ("image" in exported_calls) == bool(extra)
        assert onnx_result["n"] == torch_result["n"] > 0
        for key in ("top1", "top5", "mean_per_class_recall"):
            assert onnx_result[key] == pytest.approx(torch_result[key], abs=BOUND)
        exported_calls.clear()


def test_a_joint_probe_encodes_its_class_prompts_on_the_backend(root, exported_calls):
    args = ("probe", "train", NAME, "--kind", "joint", "--max-epochs", "0", "--root", root)
    torch_probe = run_json(*args, "--backend", "torch", "--out", root / "t.safetensors")
    assert not exported_calls
    onnx_probe = run_json(*args, *ONNX, "--out", root / "o.safetensors")
    assert exported_calls == ["text"]  # the class prompts, once, by the export
    assert onnx_probe["validation"]["top1"] == pytest.approx(torch_probe["validation"]["top1"], abs=BOUND)
