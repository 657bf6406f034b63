"""The exported CPU backends of the encoder interface: open_clip's towers run by OpenVINO or ONNX Runtime.

An export lives in the Hugging Face cache, one folder per model identity + backend + precision
(`$HF_HOME/clipsearch-exports/<identity>/<backend>-<precision>/`), holding the two tower graphs
and `meta.json` (width, context length, preprocessing, tokenizer, fidelity against torch fp32).
Running one needs neither torch nor open_clip: pixels are prepared in numpy (pixels.py) and
texts tokenised by the torch-free CLIP tokenizer (tokenizer.py); only making an export
(export.py) builds the torch model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from .encoder import open_clip_name
from .pixels import Preprocess
from .spec import ModelSpec, load_open_clip
from .tokenizer import ClipTokenizer

EXPORT_BACKENDS = ("openvino", "onnx")
PRECISIONS = ("fp32", "bf16", "int8")
EXPORT_FORMAT = 1  # bumped when the folder layout or the graphs change: older exports are made anew
META_FILE = "meta.json"
COMPILED_CACHE = "compiled"  # OpenVINO's cache of compiled graphs, inside the export folder
TOWER_FILES = {
    "openvino": {"image": "image.xml", "text": "text.xml"},
    "onnx": {"image": "image.onnx", "text": "text.onnx"},
}
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}  # int8 graphs keep the plugin's default for their float parts

Runner = Callable[[np.ndarray], np.ndarray]  # a batch in -> the tower's raw output


def hf_home() -> Path:
    """The Hugging Face cache folder, as huggingface_hub finds it."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"


def export_folder(spec: ModelSpec, backend: str, precision: str) -> Path:
    """Where the export of `spec` on `backend` in `precision` lives (readable name + identity hash)."""
    identity = spec.identity()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return hf_home() / "clipsearch-exports" / f"{readable}-{digest}" / f"{backend}-{precision}"


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The export's meta.json, or None when there is no complete export of the current format there."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == EXPORT_FORMAT else None


@functools.cache
def openvino_core() -> Any:
    """One OpenVINO Core for the process: compiled models must not outlive the Core (and plugin) they came from."""
    import openvino as ov

    return ov.Core()


def compile_tower(folder: Path, backend: str, precision: str, tower: str) -> Runner:
    """A runner for one tower's graph in `folder`."""
    path = str(folder / TOWER_FILES[backend][tower])
    if backend == "openvino":
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]} if precision in OPENVINO_HINTS else {}
        config["CACHE_DIR"] = str(folder / COMPILED_CACHE)  # a later process loads the compiled graph: ~1 s less
        compiled = openvino_core().compile_model(path, "CPU", config)
        output = compiled.output(0)
        return lambda batch: np.asarray(compiled(batch)[output])
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def as_unit_float32(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, np.float32)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class CpuDevice:
    """What `EncoderLike.device` names for these backends: they run on the CPU."""

    type: str = "cpu"


class ExportedEncoder:
    """Turns images and texts into L2-normalised float32 vectors with an exported model."""

    def __init__(self, spec: ModelSpec, backend: str, precision: str, meta: dict[str, Any], batch_size: int = 64):
        self.spec, self.backend, self.precision, self.meta = spec, backend, precision, meta
        self.folder = export_folder(spec, backend, precision)
        self.batch_size = batch_size
        self.device = CpuDevice()
        self.dim = int(meta["dim"])
        self.preprocess = Preprocess(meta["preprocessing"])
        self._runners: dict[str, Runner] = {}
        self._tokenizer: Callable[[list[str]], np.ndarray] | None = None

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta["preprocessing"])

    def backend_info(self) -> dict[str, Any]:
        """What the manifest records of how the vectors were made."""
        return {"backend": self.backend, "precision": self.precision, "fidelity": self.meta.get("fidelity")}

    def runner(self, tower: str) -> Runner:
        if tower not in self._runners:
            self._runners[tower] = compile_tower(self.folder, self.backend, self.precision, tower)
        return self._runners[tower]

    def tokenize(self, texts: list[str]) -> np.ndarray:
        if self._tokenizer is None:
            if self.meta.get("tokenizer") == "clip-bpe":
                self._tokenizer = ClipTokenizer(int(self.meta["context_length"]))
            else:  # a model with another tokenizer: open_clip's (this imports torch)
                tokenizer = load_open_clip().get_tokenizer(open_clip_name(self.spec))
                self._tokenizer = lambda texts: tokenizer(texts).numpy()
        return self._tokenizer(texts)

    def encode_image_tensors(self, pixels: Any) -> np.ndarray:
        """An already preprocessed batch (N, 3, H, W): a numpy array or a CPU tensor."""
        batch = np.asarray(pixels, np.float32)
        return self._encode("image", [batch[s : s + self.batch_size] for s in range(0, len(batch), self.batch_size)])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_numpy_images(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        return self._encode(
            "text", [self.tokenize(texts[s : s + self.batch_size]) for s in range(0, len(texts), self.batch_size)]
        )

    def _encode(self, tower: str, batches: list[np.ndarray]) -> np.ndarray:
        if not batches:
            return np.zeros((0, self.dim), np.float32)
        run = self.runner(tower)
        return as_unit_float32(np.concatenate([run(np.ascontiguousarray(b)) for b in batches]))


def check_precision(backend: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ClipsearchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend == "onnx" and precision == "bf16":
        raise ClipsearchError("ONNX Runtime has no bf16 CPU path here: use --backend openvino or --precision fp32|int8")


def encode_numpy_images(encoder: Any, images: Sequence[Image.Image]) -> np.ndarray:
    """Preprocess PIL images with the encoder's numpy transform (no torch) and encode them as one batch."""
    if not images:
        return np.zeros((0, encoder.dim), np.float32)
    return encoder.encode_image_tensors(np.stack([encoder.preprocess(im) for im in images]))
