"""clipsearch: CLIP embeddings of images, indexed for search, classification and evaluation."""

from .errors import ClipsearchError

__version__ = "0.1.0"
__all__ = ["ClipsearchError", "Encoder", "Index", "ModelSpec"]


def __getattr__(name: str):
    # torch/open_clip load only when the API is used, so `--help` stays fast.
    if name == "Index":
        from .index.index import Index

        return Index
    if name in ("Encoder", "ModelSpec"):
        from .model import encoder

        return getattr(encoder, name)
    raise AttributeError(name)
