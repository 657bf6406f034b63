"""The transformers backend of the encoder interface: a Hugging Face CLIP-family checkpoint
(CLIPModel, SiglipModel, ... any model with get_image_features / get_text_features), run with its
own processor's preprocessing (resize, crop, mean/std) and tokenizer.

Embeddings are L2-normalised float32 like every backend's. The checkpoint's own temperature
(`logit_scale`, stored as its log) is kept, so `predict` gives the probabilities transformers'
`logits_per_image.softmax(dim=1)` gives. transformers (seconds of start-up) is imported when a
model is built, never with this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from .encoder import batched_unit_vectors, default_device, encode_pil_images
from .hub import model_folder
from .spec import ModelSpec

if TYPE_CHECKING:  # annotations only
    import torch

log = logging.getLogger(__name__)


class PixelProcessor:
    """One PIL image -> the (3, H, W) tensor the model takes, by the checkpoint's image processor.
    A small object of its own: DataLoader workers receive it without the model."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


def _features(output: Any) -> torch.Tensor:
    # transformers 4 returns the projected features; 5 a model output carrying them as its pooler output.
    return output if not hasattr(output, "pooler_output") else output.pooler_output


def _load(folder: Any, spec: ModelSpec) -> tuple[Any, Any]:
    try:
        import transformers
    except ImportError as err:
        raise ClipsearchError(f"{spec.arch} needs transformers: pip install 'clipsearch[hf]'") from err

    transformers.utils.logging.disable_progress_bar()  # one model load is not worth a bar per file
    try:
        model = transformers.AutoModel.from_pretrained(folder)
        processor = transformers.AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as err:  # unknown model type, missing or broken files
        raise ClipsearchError(f"cannot load {spec.arch} with transformers: {err}".splitlines()[0]) from err
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ClipsearchError(f"{spec.arch} is a {type(model).__name__}, not a CLIP-family image-text model")
    if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
        raise ClipsearchError(f"{spec.arch} has no image processor and tokenizer (save them with save_pretrained)")
    return model, processor


class HFEncoder:
    """Turns images and texts into L2-normalised float32 vectors with a transformers checkpoint."""

    def __init__(self, spec: ModelSpec, device: str | torch.device | None = None, batch_size: int = 64):
        import torch

        self.spec = spec
        self.device = torch.device(device) if device else default_device()
        self.batch_size = batch_size
        model, processor = _load(model_folder(spec.arch, spec.pretrained, spec.checkpoint_sha256), spec)
        self.model = model.eval().to(self.device)
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.preprocess = PixelProcessor(self.image_processor)
        # SigLIP was trained on texts padded to the full length; CLIP pools at the end token, so any padding does.
        self.padding = "max_length" if "siglip" in self.model.config.model_type else True
        # Longer texts are cut to what the text tower takes (a saved tokenizer may not know the limit).
        positions = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", None)
        self.max_length = min(self.tokenizer.model_max_length, positions or self.tokenizer.model_max_length)
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else None
        self.dim = int(self.encode_texts(["a"]).shape[-1])

    @property
    def image_size(self) -> int:
        crop = getattr(self.image_processor, "crop_size", None) or {}
        size = getattr(self.image_processor, "size", None) or {}
        side = crop.get("height") or size.get("height") or size.get("shortest_edge")
        return int(side)

    def preprocessing(self) -> dict[str, Any]:
        """How pixels become tensors, for the manifest."""
        processor = self.image_processor
        return {
            "processor": type(processor).__name__,
            "size": self.image_size,
            "resize": dict(getattr(processor, "size", None) or {}),
            "center_crop": bool(getattr(processor, "do_center_crop", False)),
            "mean": list(processor.image_mean),
            "std": list(processor.image_std),
            "resample": int(getattr(processor, "resample", 3)),
        }

    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode an already preprocessed batch (N, 3, H, W)."""
        return batched_unit_vectors(
            len(pixels),
            self.batch_size,
            getattr(self, "dim", 0),
            lambda rows: _features(self.model.get_image_features(pixel_values=pixels[rows].to(self.device))),
        )

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_pil_images(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return batched_unit_vectors(
            len(texts), self.batch_size, getattr(self, "dim", 0), lambda rows: self._text_features(texts[rows])
        )

    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        inputs = {name: tokens[name].to(self.device) for name in ("input_ids", "attention_mask") if name in tokens}
        return _features(self.model.get_text_features(**inputs))
