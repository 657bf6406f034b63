"""The torch backend of the encoder interface: an open_clip model, its preprocessing and tokenizer.

Embeddings are always L2-normalised float32 numpy arrays. Random weights
(`--pretrained none`) come from a fixed seed, so an index built with them can be
queried from another process.

torch and open_clip (seconds of start-up) are imported when a model is built or used,
not with this module: opening an index, listing indexes or re-indexing an unchanged
folder import this module but never build a model.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ClipsearchError
from ..files import file_digest
from .checkpoints import load_state_dict
from .hub import cached_file, downloads_possible, hub_cache, snapshot_folder
from .spec import RANDOM_INIT_SEED, ModelSpec, load_open_clip, tag_weights

if TYPE_CHECKING:  # annotations only; the calls import torch where they run
    import torch

log = logging.getLogger(__name__)
DEMO_CHECKPOINT = "--model tiny-rn --pretrained demo_out/run/best.safetensors"  # what `make demo` trains
RANDOM_INIT_NOTICE = "No pretrained weights loaded"  # how open_clip's warning for a model built empty starts

_SEEDED_BUILD = threading.Lock()  # see build_model


def _offline_hint(spec: ModelSpec, why: str) -> ClipsearchError:
    return ClipsearchError(
        f"weights '{spec.pretrained}' for {spec.arch} are not in the Hugging Face cache ({hub_cache()}) and "
        f"cannot be downloaded ({why}); fix: run once with network access, point HF_HOME at a cache that has "
        f"them, or pass --pretrained PATH to a local checkpoint (`make demo` trains one: {DEMO_CHECKPOINT})"
    )


def published_weights(spec: ModelSpec) -> Path | None:
    """The cached file of a published tag's weights; None: open_clip must download them. Weights that are
    neither cached nor downloadable (offline, or the hub does not answer) fail here, in a second, before
    torch loads, instead of after a minute of retries."""
    source = tag_weights(spec.arch, spec.pretrained)
    path = cached_file(*source) if source else None
    if source and path is None and not downloads_possible():
        raise _offline_hint(spec, "offline or the Hugging Face hub cannot be reached")
    return path


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RANDOM_INIT_NOTICE)


@contextlib.contextmanager
def _weights_loaded_next() -> Iterator[None]:
    """open_clip warns (on the root logger) that a model built without weights is random: untrue for one
    whose checkpoint is loaded straight after, so the warning is dropped while that model is built."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def build_model(
    spec: ModelSpec, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, Callable, Callable]:
    """Create the open_clip model for a spec on `device` (None: the default one): (model, train_transform,
    eval_transform)."""
    if spec.source != "open_clip":
        raise ClipsearchError(f"{spec.arch} is a transformers checkpoint: it embeds, but open_clip cannot build it")
    weights = published_weights(spec) if spec.is_published_tag else None  # before torch: fails fast
    import torch

    open_clip = load_open_clip()
    if spec.is_hub_open_clip:  # the pinned snapshot in the Hugging Face cache: config, weights, preprocessing
        model, train_tf, eval_tf = open_clip.create_model_and_transforms(open_clip_name(spec))
        if spec.is_checkpoint:  # weights trained from it replace the repo's
            _load_checkpoint(model, spec)
    elif spec.is_random or spec.is_checkpoint:
        # Random init is seeded so two processes build identical weights; the global RNG is left
        # untouched. The seed is global state: two threads building at once (a server warming its model
        # while a request builds one) would interleave their draws, hence the lock.
        quiet = _weights_loaded_next() if spec.is_checkpoint else contextlib.nullcontext()
        with _SEEDED_BUILD, torch.random.fork_rng(devices=[]), quiet:
            torch.manual_seed(RANDOM_INIT_SEED)
            model, train_tf, eval_tf = open_clip.create_model_and_transforms(spec.arch, pretrained=None)
        if spec.is_checkpoint:
            _load_checkpoint(model, spec)
        else:
            warnings.warn(
                f"{spec.arch} uses random weights (--pretrained none): results are not meaningful", stacklevel=2
            )
    else:
        model, train_tf, eval_tf = _build_published(open_clip, spec, weights)
    model.eval().to(device or default_device())
    return model, train_tf, eval_tf


def _build_published(
    open_clip: Any, spec: ModelSpec, weights: Path | None
) -> tuple[torch.nn.Module, Callable, Callable]:
    """A published tag's model: from its cached file (no request to the hub, with the tag's preprocessing,
    as open_clip sets it for the tag), else downloaded by open_clip."""
    tag = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
    if weights is not None:
        return open_clip.create_model_and_transforms(
            spec.arch,
            pretrained=str(weights),
            image_mean=tag.get("mean"),
            image_std=tag.get("std"),
            image_interpolation=tag.get("interpolation"),
            image_resize_mode=tag.get("resize_mode"),
        )
    try:
        open_clip.download_pretrained(tag)
    except Exception as err:  # missing repo, hub errors: all fixed the same way
        raise _offline_hint(spec, type(err).__name__) from err
    return open_clip.create_model_and_transforms(spec.arch, pretrained=spec.pretrained)


def _load_checkpoint(model: torch.nn.Module, spec: ModelSpec) -> None:
    path = Path(spec.pretrained)
    if not path.is_file():
        raise ClipsearchError(f"checkpoint not found: {path}")
    if file_digest(path, "sha256") != spec.checkpoint_sha256:
        raise ClipsearchError(f"checkpoint {path} changed since the index was built (content hash differs)")
    missing, unexpected = model.load_state_dict(load_state_dict(path), strict=False)
    if missing or unexpected:
        raise ClipsearchError(
            f"checkpoint {path} does not fit {spec.arch}: {len(missing)} missing and {len(unexpected)} unexpected weights"
        )


def open_clip_name(spec: ModelSpec) -> str:
    """The name open_clip builds a spec's model and tokenizer by (a hub model: its cached snapshot folder;
    with a checkpoint trained from it, the snapshot main points to, for the architecture)."""
    if not spec.is_hub_open_clip:
        return spec.arch
    return f"local-dir:{snapshot_folder(spec.arch, None if spec.is_checkpoint else spec.pretrained)}"


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Encoder:
    """Turns images and texts into L2-normalised float32 vectors."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        built: tuple[torch.nn.Module, Callable] | None = None,
    ):
        """`built` = (model, eval transform) already in memory, e.g. the model being trained,
        so validation embeds through exactly the code an index uses."""
        if built is None:  # before torch is imported: weights that cannot be had fail in a second
            model, _train_transform, preprocess = build_model(spec, device)  # augmentation: training's
            built = (model, preprocess)
        import torch

        self.spec = spec
        self.device = torch.device(device) if device else default_device()
        self.batch_size = batch_size
        self.model, self.preprocess = built
        self.tokenizer = load_open_clip().get_tokenizer(open_clip_name(spec))
        with torch.inference_mode():  # the embedding width, whatever the tower types
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])

    @classmethod
    def load(cls, arch: str | None = None, pretrained: str | None = None, **kwargs: Any) -> Encoder:
        return cls(ModelSpec.resolve(arch, pretrained), **kwargs)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def preprocessing(self) -> dict[str, Any]:
        """How pixels become tensors, for the manifest."""
        cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}) or {})
        cfg.setdefault("size", self.image_size)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}

    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode an already preprocessed batch (N, 3, H, W)."""
        return batched_unit_vectors(
            len(pixels),
            self.batch_size,
            self.dim,
            lambda rows: self.model.encode_image(pixels[rows].to(self.device, non_blocking=True), normalize=True),
        )

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_pil_images(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return batched_unit_vectors(
            len(texts),
            self.batch_size,
            self.dim,
            lambda rows: self.model.encode_text(self.tokenizer(list(texts[rows])).to(self.device), normalize=True),
        )


def batched_unit_vectors(n: int, batch_size: int, dim: int, embed: Callable[[slice], torch.Tensor]) -> np.ndarray:
    """`embed` run on consecutive slices of `n` inputs without gradients: (n, dim) unit float32 rows.
    Both torch encoders (open_clip and transformers) batch through this."""
    import torch

    with torch.inference_mode():
        out = [embed(slice(start, start + batch_size)).float().cpu() for start in range(0, n, batch_size)]
    return as_unit_float32(torch.cat(out)) if out else np.zeros((0, dim), np.float32)


def encode_pil_images(encoder: Any, images: Sequence[Image.Image]) -> np.ndarray:
    """Preprocess PIL images with the encoder's own transform and encode them as one batch."""
    import torch

    if not images:
        return np.zeros((0, encoder.dim), np.float32)
    return encoder.encode_image_tensors(torch.stack([torch.as_tensor(encoder.preprocess(im)) for im in images]))


def as_unit_float32(vectors: torch.Tensor) -> np.ndarray:
    """Vectors as unit-length float32 numpy rows (every torch-run backend returns these)."""
    # Re-normalise in float32: the model may have computed in lower precision.
    array = vectors.numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)
