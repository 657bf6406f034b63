"""Which encoder serves a model: the one factory every caller that embeds asks.

A backend is how the model runs (torch today; exported CPU graphs and Hugging Face
transformers models plug in here), chosen per call; the vectors it gives are what the
index stores, so its identity goes with the spec into the manifest.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..errors import ClipsearchError
from .encoder import Encoder
from .export import DeferredInt8Encoder, export_encoder
from .exported import EXPORT_BACKENDS, ExportedEncoder, check_precision, export_folder, openvino_core, read_meta
from .hf import HFEncoder
from .interface import EncoderLike
from .spec import ModelSpec

BACKENDS: tuple[str, ...] = ("auto", "torch", *EXPORT_BACKENDS)
RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}  # the package each exported backend runs on
NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version")


def load_encoder(
    spec: ModelSpec,
    backend: str = "auto",
    precision: str | None = None,
    recorded: dict[str, Any] | None = None,
    **options: Any,
) -> EncoderLike:
    """The encoder for `spec` on `backend` in `precision` (None: the backend's default).

    "auto": torch on a CUDA machine; on a CPU, an export already cached for this model (the
    backend and precision the index `recorded` first, then OpenVINO in bf16 where the CPU has
    it natively, else fp32), else torch. `auto` never starts an export (minutes for
    ViT-B-32 on 2 cores): `--backend openvino|onnx` makes one, and later runs find it."""
    if backend not in BACKENDS:
        raise ClipsearchError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision is not None:
        check_precision(backend, precision)
    if backend == "auto" and spec.source == "open_clip":
        backend, precision = _cached_choice(spec, precision, recorded)
    if backend in EXPORT_BACKENDS:
        return _exported(spec, backend, precision or "fp32", options.get("batch_size", 64))
    if precision not in (None, "fp32"):
        raise ClipsearchError(f"the torch backend runs fp32; --precision {precision} needs --backend openvino|onnx")
    if spec.source == "hf":  # a transformers checkpoint (hf:org/name, hf:/folder): run by transformers on torch
        return HFEncoder(spec, **options)
    return Encoder(spec, **options)


def backend_info(encoder: EncoderLike) -> dict[str, Any]:
    """How an encoder makes its vectors, for the manifest (an encoder that does not say: torch fp32)."""
    describe = getattr(encoder, "backend_info", None)  # test doubles and the transformers encoder do not
    return describe() if describe else {"backend": "torch", "precision": "fp32"}


def cpu_has_native_bf16() -> bool:
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _cuda_machine() -> bool:
    # Asking torch costs seconds of imports: only where an NVIDIA driver is present.
    if not any(Path(p).exists() for p in NVIDIA_DEVICE_FILES):
        return False
    import torch

    return torch.cuda.is_available()


def _cached_choice(spec: ModelSpec, precision: str | None, recorded: dict[str, Any] | None) -> tuple[str, str | None]:
    if _cuda_machine():
        return "torch", precision
    candidates = []
    if recorded and recorded.get("backend") in EXPORT_BACKENDS:
        candidates.append((recorded["backend"], precision or recorded.get("precision") or "fp32"))
    candidates += [("openvino", precision or p) for p in ("bf16", "fp32")]
    for backend, choice in candidates:
        if read_meta(export_folder(spec, backend, choice)) is None or not importlib.util.find_spec(RUNTIMES[backend]):
            continue
        if backend == "openvino" and choice == "bf16" and precision is None and not cpu_has_native_bf16():
            continue
        return backend, choice
    if precision in ("bf16", "int8") and importlib.util.find_spec("openvino"):  # asked for: worth an export
        return "openvino", precision
    return "torch", precision


def _exported(spec: ModelSpec, backend: str, precision: str, batch_size: int) -> EncoderLike:
    if spec.source != "open_clip":
        raise ClipsearchError(f"{spec.arch} runs on the torch backend only (transformers), not {backend}")
    if not importlib.util.find_spec(RUNTIMES[backend]):
        raise ClipsearchError(
            f"--backend {backend} needs the {RUNTIMES[backend]} package (pip install {RUNTIMES[backend]})"
        )
    check_precision(backend, precision)
    meta = read_meta(export_folder(spec, backend, precision))
    if meta is not None:
        return ExportedEncoder(spec, backend, precision, meta, batch_size=batch_size)
    if backend == "openvino" and precision == "int8":  # calibrated on the first images it is asked to encode
        return DeferredInt8Encoder(spec, batch_size=batch_size)
    return export_encoder(spec, backend, precision, batch_size=batch_size)
