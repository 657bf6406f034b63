"""clipsearch: CLIP embeddings of images, indexed for search, classification and evaluation."""

from .errors import ClipsearchError

__version__ = "0.1.0"
__all__ = ["ClipsearchError", "Encoder", "Index", "ModelSpec"]


def __getattr__(name: str):
    # Loaded on first use: `import clipsearch` (and `clipsearch --help`) stays cheap.
    if name == "Index":
        from .api import Index

        return Index
    if name == "Encoder":
        from .model.encoder import Encoder

        return Encoder
    if name == "ModelSpec":
        from .model.spec import ModelSpec

        return ModelSpec
    raise AttributeError(f"module 'clipsearch' has no attribute {name!r}")
