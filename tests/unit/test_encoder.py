"""The model layer: spec resolution, seeded random init, checkpoints, unit float32 embeddings,
batching, and the loud offline failure for weights that are not cached."""

from __future__ import annotations

import logging
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from imagegen import distinct_image
from safetensors.torch import save_file

from clipsearch.errors import ClipsearchError
from clipsearch.model.encoder import Encoder, build_model, default_device
from clipsearch.model.spec import ModelSpec

TEXTS = ["a dog", "a red circle on grass", "snow", "", "a very long caption " * 20]


@pytest.fixture(scope="module")
def images():
    return [distinct_image(seed, (40 + seed, 30 + 2 * seed)) for seed in range(7)]


def reference_image_vectors(encoder: Encoder, images) -> np.ndarray:
    """Straight through open_clip: preprocess, encode, normalise — no batching logic of ours."""
    with torch.no_grad():
        features = encoder.model.encode_image(torch.stack([encoder.preprocess(im) for im in images]))
    return F.normalize(features, dim=-1).numpy()


def test_embeddings_are_unit_float32_and_match_open_clip(tiny_encoder, images) -> None:
    vectors = tiny_encoder.encode_images(images)
    texts = tiny_encoder.encode_texts(TEXTS)
    for array, n in ((vectors, len(images)), (texts, len(TEXTS))):
        assert array.dtype == np.float32 and array.shape == (n, tiny_encoder.dim) == (n, 64)
        assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-6)
    assert np.allclose(vectors, reference_image_vectors(tiny_encoder, images), atol=1e-5)
    with torch.no_grad():
        direct = F.normalize(tiny_encoder.model.encode_text(tiny_encoder.tokenizer(TEXTS)), dim=-1).numpy()
    assert np.allclose(texts, direct, atol=1e-5)
    assert tiny_encoder.encode_images([]).shape == (0, 64) and tiny_encoder.encode_texts([]).shape == (0, 64)
    assert len({v.tobytes() for v in vectors}) == len(images)  # distinct inputs, distinct vectors


def test_random_init_is_seeded_and_batching_changes_nothing(tiny_encoder, images) -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    other = Encoder.load("tiny", "none", device="cpu", batch_size=3)  # another "process": same weights
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    assert np.allclose(other.encode_images(images), tiny_encoder.encode_images(images), atol=1e-6)
    assert np.allclose(other.encode_texts(TEXTS), tiny_encoder.encode_texts(TEXTS), atol=1e-6)
    assert other.spec.identity() == tiny_encoder.spec.identity() == "tiny@random-seed0"


def test_device_is_automatic(tiny_encoder) -> None:
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert tiny_encoder.device.type == "cpu"  # asked for explicitly by the fixture
    preprocessing = tiny_encoder.preprocessing()
    assert (
        preprocessing["size"] in (32, [32, 32]) and len(preprocessing["mean"]) == 3 and len(preprocessing["std"]) == 3
    )


def test_spec_resolution_and_identity() -> None:
    assert ModelSpec.resolve(None, None) == ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert ModelSpec.resolve("tiny", None) == ModelSpec("tiny", "none")  # no published weights
    spec = ModelSpec.resolve("RN50", "openai")
    assert ModelSpec.from_dict(spec.to_dict()) == spec and spec.identity() == "RN50@openai"
    with pytest.raises(ClipsearchError, match="unknown model 'NoSuchNet'"):
        ModelSpec.resolve("NoSuchNet", "none")
    with pytest.raises(ClipsearchError, match="unknown pretrained tag 'nope' for ViT-B-32"):
        ModelSpec.resolve("ViT-B-32", "nope")
    with pytest.raises(ClipsearchError, match="checkpoint not found"):
        ModelSpec.resolve("tiny", "missing/weights.safetensors")


def test_missing_weights_offline_fail_loudly_with_the_fix() -> None:
    """HF_HUB_OFFLINE=1 and an empty cache (conftest): the default model cannot be had."""
    with pytest.raises(ClipsearchError) as caught:
        Encoder.load("ViT-B-32", "laion2b_s34b_b79k")
    message = str(caught.value)
    assert "not in the Hugging Face cache" in message and "--pretrained PATH" in message and "network" in message
    assert "\n" not in message


def test_checkpoints_load_and_are_pinned_by_hash(tmp_path: Path, tiny_encoder, images) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in tiny_encoder.model.state_dict().items()}
    changed = {k: (v * 1.5 if k.startswith("visual.") and v.is_floating_point() else v) for k, v in state.items()}
    save_file(changed, str(tmp_path / "changed.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "same.pt")

    same = Encoder.load("tiny", str(tmp_path / "same.pt"), device="cpu")  # wrapped + prefixed keys unpacked
    assert np.allclose(same.encode_images(images), tiny_encoder.encode_images(images), atol=1e-6)
    other = Encoder.load("tiny", str(tmp_path / "changed.safetensors"), device="cpu")
    assert not np.allclose(other.encode_images(images), tiny_encoder.encode_images(images), atol=1e-3)
    assert other.spec.identity().startswith("tiny@sha256:") and other.spec.identity() != same.spec.identity()

    # An index pins its checkpoint by content: an edited file is refused, not silently used.
    spec = other.spec
    save_file(state, str(tmp_path / "changed.safetensors"))
    with pytest.raises(ClipsearchError, match="changed since the index was built"):
        Encoder(spec, device="cpu")


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    with open(tmp_path / "code.pt", "wb") as f:  # a pickle that would run code: weights_only refuses it
        pickle.dump(Path("/"), f)
    with pytest.raises(ClipsearchError, match="cannot load checkpoint"):
        Encoder.load("tiny", str(tmp_path / "code.pt"), device="cpu")
    save_file({"unrelated.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ClipsearchError, match="does not fit tiny"):
        Encoder.load("tiny", str(tmp_path / "other.safetensors"), device="cpu")


def test_a_loaded_checkpoint_is_not_called_random_and_random_weights_are(
    tmp_path: Path, tiny_encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """open_clip logs "No pretrained weights loaded … initialized randomly" for every model it builds empty:
    untrue when a checkpoint is loaded next (issue 14, item 14)."""
    save_file(
        {k: v.detach().clone().contiguous() for k, v in tiny_encoder.model.state_dict().items()},
        str(tmp_path / "best.safetensors"),
    )
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        Encoder.load("tiny", str(tmp_path / "best.safetensors"), device="cpu")
    assert not [r for r in caplog.records if "random" in r.getMessage()] and not warned
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="random weights"):
        Encoder.load("tiny", "none", device="cpu")
    assert any("initialized randomly" in r.getMessage() for r in caplog.records)


def test_random_weights_built_in_parallel_threads_are_the_seeded_ones() -> None:
    """A server warms its model in a thread while a request may build one: each gets the seeded weights."""
    spec = ModelSpec.resolve("tiny", "none")
    reference = [p.detach().clone() for p in build_model(spec)[0].parameters()]
    built: dict[int, list[torch.Tensor]] = {}

    def build(slot: int) -> None:
        built[slot] = [p.detach().clone() for p in build_model(spec)[0].parameters()]

    threads = [threading.Thread(target=build, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for params in built.values():
        assert all(torch.equal(a, b) for a, b in zip(params, reference))
