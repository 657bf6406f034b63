"""What produced a vector: `ModelSpec` (architecture + weights) and its identity string.

Naming and checking a model needs no torch: open_clip (which imports torch,
torchvision and timm, seconds of start-up) is loaded only when an architecture
or a pretrained tag must be looked up, never to read a spec back from a manifest.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ClipsearchError
from ..files import file_digest
from .hub import HF_HUB_PREFIX, HF_PREFIX, LOCAL_FOLDER, is_folder_name, is_hub_name, resolve_folder, resolve_repo

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
# Where open_clip fetches the default weights from (its pretrained table; a test checks they agree): known
# here so that checking whether they can be had costs no import of open_clip (seconds of torch).
DEFAULT_WEIGHTS_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
# The weights file names open_clip tries in a hub repo named without one, safetensors first.
HUB_WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_INIT = "none"
RANDOM_INIT_SEED = 0
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
CONFIG_DIR = Path(__file__).parent / "configs"


@functools.cache
def load_open_clip() -> ModuleType:
    """open_clip with the shipped architectures ("tiny", "tiny-rn", "mini") registered as ordinary names."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def shipped_architectures() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@functools.cache
def known_architectures() -> frozenset[str]:
    """open_clip's architectures (its model_configs/*.json, found without importing open_clip, which
    imports torch) and the shipped ones: checking a manifest's model costs no second of imports."""
    spec = importlib.util.find_spec("open_clip")
    folders = [Path(f) / "model_configs" for f in (spec.submodule_search_locations or [])] if spec else []
    return frozenset(shipped_architectures()) | {p.stem for folder in folders for p in folder.glob("*.json")}


def architecture_image_size(arch: str) -> int:
    """The side in pixels of the images an open_clip architecture takes, from its config (no model is built)."""
    config = load_open_clip().get_model_config(arch)
    if config is None:
        raise ClipsearchError(f"unknown architecture {arch!r}")
    size = config["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _published_tags(arch: str) -> list[str]:
    # The shipped architectures have none: naming one (`--model tiny`) then needs no open_clip.
    return [] if arch in shipped_architectures() else list(load_open_clip().list_pretrained_tags_by_model(arch))


def tag_weights(arch: str, tag: str) -> tuple[str, tuple[str, ...]] | None:
    """(hub repo, weights file names in the order open_clip tries them) of a published pretrained tag;
    None for one open_clip downloads by URL."""
    if (arch, tag) == (DEFAULT_ARCH, DEFAULT_PRETRAINED):
        return DEFAULT_WEIGHTS_REPO, HUB_WEIGHTS_FILES
    hub_entry = load_open_clip().get_pretrained_cfg(arch, tag).get("hf_hub", "")
    if not hub_entry:
        return None
    repo, filename = hub_entry.rstrip("/"), ""
    if not hub_entry.endswith("/"):  # "org/name/file.bin": that file, its safetensors twin first
        repo, _, filename = hub_entry.rpartition("/")
    if not filename:
        return repo, HUB_WEIGHTS_FILES
    if filename.endswith((".bin", ".pth")):
        return repo, (filename[:-4] + ".safetensors", filename)
    return repo, (filename,)


def _looks_like_path(pretrained: str) -> bool:
    return pretrained.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in pretrained or "\\" in pretrained


@dataclass(frozen=True)
class ModelSpec:
    """What produced a vector: architecture + weights. Stored in every manifest."""

    arch: str = DEFAULT_ARCH
    pretrained: str = DEFAULT_PRETRAINED  # a tag, a checkpoint path, "none"; a hub repo's commit (model/hub.py)
    checkpoint_sha256: str | None = None  # set for checkpoint files and saved transformers folders

    @classmethod
    def resolve(cls, arch: str | None, pretrained: str | None) -> ModelSpec:
        """Validate names and pin a checkpoint file by its content hash (a hub repo by its commit)."""
        arch = arch or DEFAULT_ARCH
        if is_hub_name(arch):  # hf:org/name, hf:/saved/folder, hf-hub:org/name: no open_clip lookup
            return cls._resolve_hub(arch, pretrained)
        if arch not in known_architectures():  # open_clip's configs, found without importing it
            raise ClipsearchError(
                f"unknown model '{arch}': choose an open_clip architecture "
                f"(e.g. ViT-B-32, RN50) or a shipped one ({', '.join(shipped_architectures())})"
            )
        if pretrained is None and arch == DEFAULT_ARCH:
            pretrained = DEFAULT_PRETRAINED
        elif pretrained is None:  # the first published tag
            tags = _published_tags(arch)
            pretrained = tags[0] if tags else RANDOM_INIT
        if pretrained == RANDOM_INIT:
            return cls(arch, RANDOM_INIT)
        if _looks_like_path(pretrained) or Path(pretrained).is_file():
            path = Path(pretrained).expanduser().resolve()
            if not path.is_file():
                raise ClipsearchError(f"checkpoint not found: {pretrained}")
            return cls(arch, str(path), file_digest(path, "sha256"))
        if (arch, pretrained) == (DEFAULT_ARCH, DEFAULT_PRETRAINED):  # a known tag: no look-up in open_clip
            return cls(arch, pretrained)
        tags = _published_tags(arch)
        if pretrained not in tags:
            choices = ", ".join(tags) if tags else "none published; pass a checkpoint path or 'none'"
            raise ClipsearchError(f"unknown pretrained tag '{pretrained}' for {arch} (choices: {choices})")
        return cls(arch, pretrained)

    @classmethod
    def _resolve_hub(cls, arch: str, pretrained: str | None) -> ModelSpec:
        if pretrained == RANDOM_INIT:  # also the trainer's default
            raise ClipsearchError(
                f"{arch} comes with its weights: --pretrained none does not apply (train an hf-hub: model "
                f"from its weights with --pretrained main)"
            )
        if is_folder_name(arch):
            return cls(*resolve_folder(arch, pretrained))
        if arch.startswith(HF_HUB_PREFIX) and pretrained and _looks_like_path(pretrained):
            # Weights trained from a hub model: its architecture from the cached repo, the weights from the file.
            arch = resolve_repo(arch, None)[0]
            path = Path(pretrained).expanduser().resolve()
            if not path.is_file():
                raise ClipsearchError(f"checkpoint not found: {pretrained}")
            return cls(arch, str(path), file_digest(path, "sha256"))
        return cls(*resolve_repo(arch, pretrained))

    @property
    def is_random(self) -> bool:
        return self.pretrained == RANDOM_INIT

    @property
    def is_checkpoint(self) -> bool:
        return self.checkpoint_sha256 is not None

    @property
    def is_published_tag(self) -> bool:
        """Weights open_clip publishes under a tag of the architecture (`ViT-B-32` + `laion2b_s34b_b79k`)."""
        return self.source == "open_clip" and not (self.is_random or self.is_checkpoint or self.is_hub_open_clip)

    @property
    def source(self) -> str:
        """Who loads it: "open_clip" (a tag, a checkpoint, hf-hub:org/name) or "hf" (transformers)."""
        return "hf" if self.arch.startswith(HF_PREFIX) else "open_clip"

    @property
    def is_hub_open_clip(self) -> bool:
        """An open_clip model published on the Hugging Face hub (`hf-hub:org/name`)."""
        return self.arch.startswith(HF_HUB_PREFIX)

    def identity(self) -> str:
        """A short string equal for exactly the specs that give the same vectors."""
        if self.pretrained == LOCAL_FOLDER and self.checkpoint_sha256:  # the same files anywhere: one identity
            return f"hf:folder@sha256:{self.checkpoint_sha256[:16]}"
        if self.is_checkpoint:
            return f"{self.arch}@sha256:{self.checkpoint_sha256[:16]}"
        if self.is_random:
            return f"{self.arch}@random-seed{RANDOM_INIT_SEED}"
        return f"{self.arch}@{self.pretrained}"

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "pretrained": self.pretrained, "checkpoint_sha256": self.checkpoint_sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(data["arch"], data["pretrained"], data.get("checkpoint_sha256"))
