"""Model weights on disk: read a checkpoint without running code; write one as safetensors.

torch is imported when weights are read or written, not with this module (see encoder.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipsearchError
from ..files import atomic_write_path

if TYPE_CHECKING:  # annotations only
    import torch


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without executing code (safetensors, or torch with weights_only)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # a lying header (sizes, offsets, JSON), an empty or truncated file
            raise ClipsearchError(f"cannot load checkpoint {path}: {err}".splitlines()[0]) from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle with code, or not a checkpoint at all
            raise ClipsearchError(f"cannot load checkpoint {path}: {err}".splitlines()[0]) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ClipsearchError(f"cannot load checkpoint {path}: no state dict inside")
    return {k.removeprefix("module."): v for k, v in state.items()}


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """The model's state dict as safetensors (open_clip key names), with string metadata."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_path(path, lambda tmp: save_file(state, str(tmp), metadata={k: str(v) for k, v in metadata.items()}))


def weights_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # as in load_state_dict: a broken file is one line, never a traceback
        raise ClipsearchError(f"cannot read checkpoint {path}: {err}".splitlines()[0]) from err
