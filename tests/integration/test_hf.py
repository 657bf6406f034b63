"""Hugging Face models: transformers CLIP checkpoints (`hf:FOLDER`, `hf:org/name` from the cache) and
open_clip hub repos (`hf-hub:org/name`), each checked against the library's own computation
(transformers' get_*_features and the quickstart's softmax over logits_per_image; open_clip's model)."""

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from cli_runner import run_cli, run_json
from hf_fixture import REVISION, put_in_hf_cache, save_tiny_clip, save_tiny_open_clip_repo, save_tiny_siglip
from imagegen import distinct_image, write_distinct_images

from clipsearch.model.backends import load_encoder
from clipsearch.model.spec import ModelSpec, load_open_clip

transformers = pytest.importorskip("transformers")

TEXTS = ["cat", "a photo of a dog", "a much longer sentence about a bird on a wire"]
LONG_TEXT = " ".join(["a very long caption"] * 30)  # over 77 tokens: cut as transformers cuts it
NAMES = [f"im{i}.png" for i in range(6)]
# `clipsearch ARGS` in a fresh interpreter; its last line: [exit code, the model libraries it imported].
COLD_PROBE = """
import json, sys
from clipsearch.cli.app import main
try:
    main(sys.argv[1:]); code = 0
except SystemExit as stop:
    code = stop.code or 0
print(json.dumps([code, [m for m in ("torch", "open_clip", "transformers") if m in sys.modules]]))
"""


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="module")
def reference(clip_folder):
    """transformers' own model and processor for the folder (not clipsearch's loader)."""
    return transformers.CLIPModel.from_pretrained(clip_folder).eval(), transformers.CLIPProcessor.from_pretrained(
        clip_folder
    )


def _unit(t: torch.Tensor) -> np.ndarray:
    t = t if isinstance(t, torch.Tensor) else t.pooler_output
    return torch.nn.functional.normalize(t.float(), dim=-1).detach().numpy()


def _prompts_file(tmp_path):
    path = tmp_path / "bare.txt"
    path.write_text("{}\n")  # the label itself is the prompt, as in the quickstart
    return path


def test_embeddings_equal_transformers_own_features(clip_folder, reference):
    model, processor = reference
    encoder = load_encoder(ModelSpec.resolve(f"hf:{clip_folder}", None), device="cpu")
    images = [distinct_image(seed, (40 + 7 * seed, 36)) for seed in range(3)]
    with torch.no_grad():
        want_images = _unit(model.get_image_features(**processor(images=images, return_tensors="pt")))
        tokens = processor(text=[*TEXTS, LONG_TEXT], padding=True, truncation=True, return_tensors="pt")
        want_texts = _unit(model.get_text_features(**tokens))
    got_images, got_texts = encoder.encode_images(images), encoder.encode_texts([*TEXTS, LONG_TEXT])
    assert got_images.dtype == got_texts.dtype == np.float32 and encoder.dim == 16
    np.testing.assert_allclose(got_images, want_images, atol=1e-5)
    np.testing.assert_allclose(got_texts, want_texts, atol=1e-5)
    assert encoder.logit_scale == pytest.approx(np.exp(2.5), rel=1e-6)


def test_a_siglip_checkpoint_embeds_as_transformers_does(tmp_path):
    folder = save_tiny_siglip(tmp_path / "siglip")
    model = transformers.SiglipModel.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    encoder = load_encoder(ModelSpec.resolve(f"hf:{folder}", None), device="cpu")
    images = [distinct_image(seed) for seed in range(2)]
    with torch.no_grad():  # SigLIP's texts are padded to the full length, as it was trained
        texts = [*TEXTS, LONG_TEXT]
        tokens = processor(text=texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        want_texts = _unit(model.get_text_features(**tokens))
        want_images = _unit(model.get_image_features(**processor(images=images, return_tensors="pt")))
    np.testing.assert_allclose(encoder.encode_texts([*TEXTS, LONG_TEXT]), want_texts, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(images), want_images, atol=1e-5)


def test_predict_equals_the_quickstart_softmax(clip_folder, reference, tmp_path):
    model, processor = reference
    image_path = tmp_path / "q.png"
    distinct_image(7, (64, 48)).save(image_path)
    result = run_json(
        "predict", image_path, "--labels", ",".join(TEXTS), "--templates", _prompts_file(tmp_path), "-k", "3",
        "--model", f"hf:{clip_folder}",
    )  # fmt: skip
    from PIL import Image

    inputs = processor(text=TEXTS, images=Image.open(image_path), return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model(**inputs).logits_per_image.softmax(dim=1)[0].numpy()
    got = {p["label"]: p["probability"] for p in result[0]["predictions"]}
    np.testing.assert_allclose([got[t] for t in TEXTS], want, atol=1e-5)


def test_a_transformers_model_runs_on_torch_only(clip_folder, tmp_path):
    image_path = tmp_path / "q.png"
    distinct_image(1).save(image_path)
    args = ["predict", image_path, "--labels", "a,b", "-k", "1", "--model", f"hf:{clip_folder}", "--backend", "onnx"]
    code, _, stderr = run_cli(*args)
    assert code == 1 and "runs on the torch backend only" in stderr and stderr.count("\n") == 1, stderr


def test_an_index_built_with_a_folder_searches_and_refuses_other_models(clip_folder, tmp_path):
    root, images = tmp_path / "idx", tmp_path / "pics"
    write_distinct_images(images, NAMES)
    code, _, stderr = run_cli(
        "index", images, "--name", "hf", "--root", root, "--workers", "0", "--model", f"hf:{clip_folder}"
    )
    assert code == 0, stderr
    info = run_json("info", "hf", "--root", root)
    spec = ModelSpec.resolve(f"hf:{clip_folder}", None)
    assert spec.identity().startswith("hf:folder@sha256:") and json.dumps(info).count(spec.identity()) >= 1
    hits = run_json("search", "hf", "--image", images / NAMES[3], "-k", "2", "--root", root)
    assert hits[0]["id"] == NAMES[3] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(run_json("search", "hf", "a photo of a cat", "-k", "3", "--root", root)) == 3
    code, _, stderr = run_cli("search", "hf", "cat", "--root", root, "--model", "tiny", "--pretrained", "none")
    assert code == 1 and "was built with hf:folder@sha256:" in stderr and len(stderr.strip().splitlines()) == 1
    # The same files elsewhere are the same model; changed weights are not.
    copy = shutil.copytree(clip_folder, tmp_path / "copy")
    assert ModelSpec.resolve(f"hf:{copy}", None).identity() == spec.identity()
    save_tiny_clip(copy, seed=1)
    assert ModelSpec.resolve(f"hf:{copy}", None).identity() != spec.identity()


def test_a_repo_in_the_hf_cache_loads_offline_by_its_name(clip_folder, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put_in_hf_cache(hf_home, "org/tiny-clip", clip_folder)
    spec = ModelSpec.resolve("hf:org/tiny-clip", None)
    assert spec.identity() == f"hf:org/tiny-clip@{REVISION}"
    root, images = tmp_path / "idx", tmp_path / "pics"
    write_distinct_images(images, NAMES[:3])
    code, _, stderr = run_cli(
        "index", images, "--name", "c", "--root", root, "--workers", "0", "--model", "hf:org/tiny-clip"
    )
    assert code == 0, stderr
    by_name = run_json(
        "search", "c", "--image", images / NAMES[1], "-k", "1", "--root", root, "--model", "hf:org/tiny-clip"
    )
    assert by_name[0]["id"] == NAMES[1]
    # A folder's vectors equal the cached repo's, but the identities differ (commit vs content): refused.
    code, _, stderr = run_cli("search", "c", "cat", "--root", root, "--model", f"hf:{clip_folder}")
    assert code == 1 and f"hf:org/tiny-clip@{REVISION}" in stderr
    # Re-indexing the unchanged folder, naming the model, loads neither transformers nor torch.
    args = ["index", str(images), "--name", "c", "--root", str(root), "--workers", "0", "--model", "hf:org/tiny-clip"]
    done = subprocess.run([sys.executable, "-c", COLD_PROBE, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1]) == [0, []], done.stderr


def test_a_missing_repo_offline_fails_in_one_line_at_once(tmp_path):
    image = tmp_path / "q.png"
    distinct_image(0).save(image)
    args = ["predict", str(image), "--labels", "a,b", "-k", "2", "--model", "hf:org/absent"]
    start = time.perf_counter()  # in this process: the check itself, without the interpreter's start
    code, _, stderr = run_cli(*args)
    assert time.perf_counter() - start < 2.0 and code == 1
    assert "org/absent is not in the Hugging Face cache" in stderr and stderr.count("\n") == 1
    # As a user runs it: a fresh process, one line, no traceback.
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "clipsearch", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: org/absent is not in the Hugging Face cache")


def test_an_open_clip_hub_repo_loads_from_the_cache_and_indexes(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    snapshot = put_in_hf_cache(hf_home, "org/tiny-open-clip", save_tiny_open_clip_repo(tmp_path / "repo"))
    root, images = tmp_path / "idx", tmp_path / "pics"
    write_distinct_images(images, NAMES[:4])
    code, _, stderr = run_cli(
        "index", images, "--name", "oc", "--root", root, "--workers", "0", "--model", "hf-hub:org/tiny-open-clip"
    )
    assert code == 0, stderr
    assert run_json("info", "oc", "--root", root)["model_id"] == f"hf-hub:org/tiny-open-clip@{REVISION}"
    # The stored vector is open_clip's own embedding of the image, with the repo's weights and preprocessing.
    open_clip = load_open_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{snapshot}")
    from PIL import Image

    with torch.no_grad():
        want = _unit(model.eval().encode_image(preprocess(Image.open(images / NAMES[2]).convert("RGB"))[None]))[0]
    hit = run_json("search", "oc", "--image", images / NAMES[2], "-k", "1", "--root", root)[0]
    assert hit["id"] == NAMES[2]
    encoder = load_encoder(ModelSpec.resolve("hf-hub:org/tiny-open-clip", None), device="cpu")
    np.testing.assert_allclose(
        encoder.encode_images([Image.open(images / NAMES[2]).convert("RGB")])[0], want, atol=1e-5
    )


def test_weights_trained_from_a_hub_model_index_with_its_architecture(tmp_path, monkeypatch):
    """`--model hf-hub:org/name --pretrained RUN/best.safetensors` (what `train` suggests): the repo's
    architecture and preprocessing, the file's weights, pinned by the file's hash."""
    from safetensors.torch import save_file

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    snapshot = put_in_hf_cache(hf_home, "org/tiny-open-clip", save_tiny_open_clip_repo(tmp_path / "repo"))
    model, _, preprocess = load_open_clip().create_model_and_transforms(f"local-dir:{snapshot}")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.5).add_(0.01)
    checkpoint = tmp_path / "best.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    spec = ModelSpec.resolve("hf-hub:org/tiny-open-clip", str(checkpoint))
    assert spec.identity().startswith("hf-hub:org/tiny-open-clip@sha256:")
    image = distinct_image(3)
    with torch.no_grad():
        want = _unit(model.eval().encode_image(preprocess(image)[None]))
    np.testing.assert_allclose(load_encoder(spec, device="cpu").encode_images([image]), want, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "pretrained", "message"),
    [
        ("hf:not-a-repo", None, "names no Hugging Face repo"),
        ("hf-hub:org/absent", None, "org/absent is not in the Hugging Face cache"),
        ("hf:org/absent", "v2", "org/absent@v2 is not in the Hugging Face cache"),
        ("hf-hub:org/absent", "none", "comes with its weights"),
        ("hf:./no/such/folder", None, "is not a saved transformers model"),
    ],
)
def test_bad_hugging_face_names_are_one_line_errors(model, pretrained, message, tmp_path):
    extra = ["--pretrained", pretrained] if pretrained else []
    write_distinct_images(tmp_path / "pics", NAMES[:1])
    code, _, stderr = run_cli("index", tmp_path / "pics", "--root", tmp_path / "idx", "--model", model, *extra)
    assert code == 1 and message in stderr and stderr.count("\n") == 1, stderr


def test_online_a_missing_repo_is_fetched_into_the_cache_once(clip_folder, tmp_path, monkeypatch):
    """Online, a repo not in the cache is fetched with huggingface_hub (here a stand-in that fills the
    cache as it would), only model files asked for; a fetch that fails is one line."""
    import huggingface_hub

    hf_home, asked = tmp_path / "hf", []
    monkeypatch.setenv("HF_HOME", str(hf_home))
    for name in ("HF_HUB_OFFLINE", "CLIPSEARCH_OFFLINE"):
        monkeypatch.setenv(name, "0")

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        asked.append((repo_id, revision, tuple(allow_patterns)))
        if repo_id == "org/gone":
            raise OSError("404 Client Error: Repository Not Found\nmore detail")
        return str(put_in_hf_cache(hf_home, repo_id, clip_folder))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    spec = ModelSpec.resolve("hf:org/fetched", None)
    assert spec.identity() == f"hf:org/fetched@{REVISION}" and len(asked) == 1
    assert "*.safetensors" in asked[0][2] and "*.json" in asked[0][2]
    assert ModelSpec.resolve("hf:org/fetched", None) == spec and len(asked) == 1  # now cached: no fetch
    code, _, stderr = run_cli("index", tmp_path, "--root", tmp_path / "idx", "--model", "hf:org/gone")
    assert code == 1 and stderr.strip() == (
        "error: cannot download org/gone from the Hugging Face hub: 404 Client Error: Repository Not Found"
    )


def test_without_transformers_a_transformers_model_is_a_one_line_error(clip_folder, monkeypatch):
    from clipsearch.errors import ClipsearchError

    spec = ModelSpec.resolve(f"hf:{clip_folder}", None)  # naming one needs no transformers
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed: importing it fails
    with pytest.raises(ClipsearchError, match=r"needs transformers: pip install 'clipsearch\[hf\]'"):
        load_encoder(spec, device="cpu")
