"""Making an export: open_clip's towers converted once per model identity + backend + precision.

The torch model is built (encoder.build_model), each tower traced to an OpenVINO IR or an ONNX
graph, int8 quantised (OpenVINO: NNCF with a calibration set of the images being indexed for the
image tower, data-free int8 weights for the text tower; ONNX: dynamic int8), and the result
compared with torch fp32 on a fixed probe set; that fidelity goes into meta.json and the index
manifest. The folder is written under a temporary name and renamed, so a half-made export is
never found.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from .encoder import build_model, open_clip_name
from .exported import (
    EXPORT_FORMAT,
    META_FILE,
    TOWER_FILES,
    CpuDevice,
    ExportedEncoder,
    as_unit_float32,
    compile_tower,
    encode_numpy_images,
    read_meta,
)
from .exported import export_folder as folder_of
from .pixels import Preprocess
from .spec import ModelSpec, load_open_clip
from .tokenizer import ClipTokenizer

if TYPE_CHECKING:
    import torch

INT8_MIN_COSINE = 0.995  # an int8 export further from torch fp32 than this is refused
PROBE_IMAGES = 32
PROBE_SEED = 0
PROBE_TEXTS = (
    "a photo of a dog",
    "a cat sleeping on a red sofa",
    "A busy street in Tokyo at night, neon signs",
    "two people riding bicycles along the beach at sunset",
    "a bowl of ramen 🍜 with chopsticks",
    "café au lait, croissant et journal",
    "an aerial view of a green forest",
    "blue circle",
    "a small yellow triangle on a white background",
    "close-up of a person's hands typing on a laptop keyboard",
    "snow-covered mountains under a clear sky",
    "children playing football in a park",
)
TOKENIZER_CHECKS = ("", "  Mixed CASE &amp; <html> entities  ", "naïve 日本語 😀", "word " * 90)


def probe_images(n: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> list[Image.Image]:
    """Seeded smooth colour fields with a bright square: varied, deterministic, no files."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((96, 96), Image.Resampling.BICUBIC)
        x, y, side = (int(v) for v in rng.integers(0, 60, 3))
        image.paste(tuple(int(c) for c in rng.integers(0, 256, 3)), (x, y, x + side // 2 + 8, y + side // 2 + 8))
        images.append(image)
    return images


class _Tower:
    """One tower of an open_clip model as a module with a single input (what the converters trace)."""

    @staticmethod
    def wrap(model: torch.nn.Module, tower: str) -> torch.nn.Module:
        import torch

        class Tower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.model.encode_image(x) if tower == "image" else self.model.encode_text(x)

        return Tower().eval()


class Exporter:
    """The torch model of a spec, ready to be exported (built once, kept for a deferred int8 export)."""

    def __init__(self, spec: ModelSpec):
        import torch

        self.spec = spec
        self.model, _train_tf, _eval_tf = build_model(spec, "cpu")
        self.model.float()
        visual = self.model.visual
        size = visual.image_size
        cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
        cfg.setdefault("size", int(size[0] if isinstance(size, (tuple, list)) else size))
        self.preprocessing = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        self.preprocess = Preprocess(self.preprocessing)
        self.open_clip_tokenizer = load_open_clip().get_tokenizer(open_clip_name(spec))
        self.context_length = int(self.open_clip_tokenizer(["a"]).shape[-1])
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.open_clip_tokenizer(["a"])).shape[-1])

    def tokenizer_kind(self) -> str | None:
        """ "clip-bpe" when the torch-free tokenizer gives open_clip's ids for this model, else None."""
        texts = [*PROBE_TEXTS, *TOKENIZER_CHECKS]
        ours = ClipTokenizer(self.context_length)(texts)
        theirs = self.open_clip_tokenizer(texts)
        return "clip-bpe" if tuple(theirs.shape) == ours.shape and bool((theirs.numpy() == ours).all()) else None

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe set as model inputs: (pixels, token ids)."""
        pixels = np.stack([self.preprocess(im) for im in probe_images()])
        return pixels, self.open_clip_tokenizer(list(PROBE_TEXTS)).numpy()

    def torch_vectors(self, pixels: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            images = self.model.encode_image(torch.from_numpy(pixels)).float().numpy()
            texts = self.model.encode_text(torch.from_numpy(tokens)).float().numpy()
        return as_unit_float32(images), as_unit_float32(texts)

    def export(self, backend: str, precision: str, calibration: np.ndarray | None = None) -> dict[str, Any]:
        """Make the export (atomically) and return its meta; int8 below INT8_MIN_COSINE is refused."""
        final = folder_of(self.spec, backend, precision)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            pixels, tokens = self.inputs()
            if backend == "openvino":
                self._openvino(work, precision, pixels if calibration is None else calibration, tokens)
            else:
                self._onnx(work, precision, pixels, tokens)
            meta = self._meta(work, backend, precision, pixels, tokens)
            (work / META_FILE).write_text(json.dumps(meta, indent=2))
            if final.exists():  # an older format, or another process made it first: ours replaces it
                shutil.rmtree(final, ignore_errors=True)
            try:
                work.rename(final)
            except OSError:  # another process renamed its own export into place just now: use that one
                if read_meta(final) is None:
                    raise
            return meta
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _meta(self, work: Path, backend: str, precision: str, pixels: np.ndarray, tokens: np.ndarray) -> dict:
        fidelity = measure_fidelity(
            self.torch_vectors(pixels, tokens), self._run(work, backend, precision, pixels, tokens)
        )
        worst = min(fidelity["image_cosine"], fidelity["text_cosine"])
        if precision == "int8" and worst < INT8_MIN_COSINE:
            raise ClipsearchError(
                f"int8 export of {self.spec.identity()} on {backend} is too far from fp32 (mean cosine {worst:.4f} < "
                f"{INT8_MIN_COSINE}); use --precision bf16 or fp32"
            )
        return {
            "format": EXPORT_FORMAT,
            "identity": self.spec.identity(),
            "backend": backend,
            "precision": precision,
            "dim": self.dim,
            "context_length": self.context_length,
            "preprocessing": self.preprocessing,
            "tokenizer": self.tokenizer_kind(),
            "fidelity": fidelity,
        }

    @staticmethod
    def _run(work: Path, backend: str, precision: str, pixels: np.ndarray, tokens: np.ndarray) -> tuple:
        images = compile_tower(work, backend, precision, "image")(pixels)
        texts = compile_tower(work, backend, precision, "text")(tokens)
        return as_unit_float32(images), as_unit_float32(texts)

    def _openvino(self, work: Path, precision: str, calibration: np.ndarray, tokens: np.ndarray) -> None:
        # Through ONNX: OpenVINO reads it directly, and tracing to ONNX is several times faster here
        # than OpenVINO's own TorchScript route (1.7 s against 15 s for the tiny model).
        import openvino as ov

        self._onnx(work, "fp32", calibration[:2], tokens[:2])
        for tower in ("image", "text"):
            onnx_path = work / TOWER_FILES["onnx"][tower]
            graph = ov.convert_model(str(onnx_path))
            if precision == "int8":
                graph = self._quantize(graph, tower, calibration)
            ov.save_model(graph, str(work / TOWER_FILES["openvino"][tower]), compress_to_fp16=False)
            onnx_path.unlink()

    def _quantize(self, graph: Any, tower: str, calibration: np.ndarray) -> Any:
        """int8 with NNCF: the image tower calibrated on `calibration`, the text tower's weights data-free."""
        import nncf

        nncf.set_log_level(logging.ERROR)
        with contextlib.redirect_stdout(sys.stderr):  # NNCF draws progress bars on stdout, which --json owns
            if tower == "text":
                return nncf.compress_weights(graph)
            samples = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
            vit = hasattr(self.model.visual, "transformer")
            return nncf.quantize(
                graph, samples, subset_size=len(calibration), model_type=nncf.ModelType.TRANSFORMER if vit else None
            )

    def _onnx(self, work: Path, precision: str, pixels: np.ndarray, tokens: np.ndarray) -> None:
        import torch

        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
        try:
            for tower, example in (("image", pixels[:2]), ("text", tokens[:2])):
                path = work / TOWER_FILES["onnx"][tower]
                float_path = path.with_suffix(".fp32.onnx") if precision == "int8" else path
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer notes on the towers' Python control flow
                    torch.onnx.export(
                        _Tower.wrap(self.model, tower),
                        (torch.from_numpy(example),),
                        str(float_path),
                        input_names=["input"],
                        output_names=["output"],
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                        opset_version=17,
                        dynamo=False,
                    )
                if precision == "int8":
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
                    float_path.unlink()
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)


def measure_fidelity(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict:
    """Mean cosine of each tower's vectors to the reference's, and the mean overlap of each probe
    image's 5 nearest probe images under both (how much a search would change)."""
    (ref_images, ref_texts), (images, texts) = reference, candidate
    return {
        "probe": f"{len(ref_images)} seeded images, {len(ref_texts)} texts",
        "image_cosine": round(float(np.mean(np.sum(ref_images * images, axis=1))), 6),
        "text_cosine": round(float(np.mean(np.sum(ref_texts * texts, axis=1))), 6),
        "top5_overlap": round(neighbour_overlap(ref_images, images, 5), 4),
    }


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    def neighbours(vectors: np.ndarray) -> np.ndarray:
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    ours, theirs = neighbours(reference), neighbours(candidate)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))


def export_encoder(spec: ModelSpec, backend: str, precision: str, batch_size: int = 64) -> ExportedEncoder:
    """Make the export now and return the encoder running it."""
    meta = Exporter(spec).export(backend, precision)
    return ExportedEncoder(spec, backend, precision, meta, batch_size=batch_size)


class DeferredInt8Encoder:
    """An OpenVINO int8 encoder whose export waits for the first images it must encode: they are
    the calibration set (the images being indexed). Until then it answers what the manifest needs."""

    def __init__(self, spec: ModelSpec, batch_size: int = 64):
        self.spec, self.batch_size = spec, batch_size
        self.exporter: Exporter | None = Exporter(spec)
        self.dim, self.preprocess = self.exporter.dim, self.exporter.preprocess
        self.device = CpuDevice()
        self.ready: ExportedEncoder | None = None

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    def preprocessing(self) -> dict[str, Any]:
        return dict(self.exporter.preprocessing if self.exporter else self.ready.preprocessing())

    def backend_info(self) -> dict[str, Any]:
        return self.ready.backend_info() if self.ready else {"backend": "openvino", "precision": "int8"}

    def encode_image_tensors(self, pixels: Any) -> np.ndarray:
        if self.ready is None:
            meta = self.exporter.export("openvino", "int8", np.asarray(pixels, np.float32))
            self.ready = ExportedEncoder(self.spec, "openvino", "int8", meta, batch_size=self.batch_size)
            self.exporter = None  # the torch model is no longer needed
        return self.ready.encode_image_tensors(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_numpy_images(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.ready is None:
            raise ClipsearchError(
                f"no int8 export of {self.spec.identity()} yet: it is calibrated on the images being indexed, "
                "so index images with --precision int8 first"
            )
        return self.ready.encode_texts(texts)
