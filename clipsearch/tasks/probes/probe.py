"""A trained probe and its files: a safetensors file of weights plus a JSON sidecar (kind,
classes, model of the index, feature dim, hyper-parameters, chosen C, validation metrics,
seed), kept by default in `<index>/probes/`. A probe refuses an index whose vectors come
from another model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ...errors import ClipsearchError
from ...files import atomic_write_path, read_json, write_json
from ...index.index import Index
from .features import threads_for
from .heads import head_scores
from .linear import linear_scores

KINDS = ("linear", "mlp", "joint")
FORMAT = 1
PROBES_DIR = "probes"


@dataclass
class Probe:
    """A trained probe: its weights (numpy arrays) and its sidecar metadata."""

    kind: str
    class_names: list[str]
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path else default_probe_name(self.kind, self.shots)

    @property
    def shots(self) -> int | None:
        """Training images per class of a few-shot probe; None when it saw the whole training split."""
        return self.meta.get("shots")

    @property
    def description(self) -> str:
        """Its name, kind and shot count, as every title shows it: "linear-16shot (linear, 16-shot)"."""
        return f"{self.name} ({self.kind}{f', {self.shots}-shot' if self.shots else ''})"

    def check_index(self, index: Index) -> None:
        """Refuse vectors from another model: the probe's weights mean nothing in another space."""
        model_id = self.meta.get("model_id")
        if model_id != index.spec.identity():
            raise ClipsearchError(
                f"probe '{self.name}' was trained on {model_id} features but index '{index.name}' holds "
                f"{index.spec.identity()} features; train one on this index with 'clipsearch probe train {index.name}'"
            )
        if int(self.meta.get("dim", -1)) != int(index.manifest["dim"]):
            raise ClipsearchError(
                f"probe '{self.name}' expects {self.meta.get('dim')}-d features, "
                f"index '{index.name}' has {index.manifest['dim']}-d"
            )

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(n, classes) logits for unit vectors; the highest is the prediction."""
        vectors = np.asarray(vectors, dtype=np.float32)
        with threads_for(vectors.size):
            if self.kind == "linear":
                return linear_scores(self.weights, vectors)
            return head_scores(self.kind, self.weights, vectors)

    def save(self, path: Path) -> Path:
        """Weights to `path` (.safetensors) and the metadata beside it (.json), both atomically."""
        path = Path(path)
        arrays = {key: np.ascontiguousarray(value) for key, value in self.weights.items()}
        atomic_write_path(path, lambda tmp: save_file(arrays, str(tmp)))
        write_json(sidecar_path(path), {**self.meta, "weights_file": path.name})
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path) -> Probe:
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise ClipsearchError(f"probe not found: {path}")
        try:
            meta = read_json(sidecar_path(path))
            weights = load_file(str(path))
        except (OSError, ValueError) as err:
            raise ClipsearchError(f"cannot read probe {path}: {str(err).splitlines()[0]}") from err
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind not in KINDS or meta.get("format") != FORMAT or not meta.get("class_names"):
            raise ClipsearchError(f"{sidecar_path(path)} is not a clipsearch probe sidecar (format {FORMAT})")
        return cls(kind, list(meta["class_names"]), weights, meta, path)


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def probes_folder(index: Index) -> Path:
    return index.store.path / PROBES_DIR


def default_probe_name(kind: str, shots: int | None = None) -> str:
    """The name of a probe of `kind`: "linear" on the whole training split, "linear-16shot" on 16 per class, so a
    few-shot probe never replaces the full one."""
    return f"{kind}-{shots}shot" if shots else kind


def default_probe_path(index: Index, kind: str, shots: int | None = None) -> Path:
    return probes_folder(index) / f"{default_probe_name(kind, shots)}.safetensors"


def find_probe(index: Index, spec: str | Path) -> Path:
    """A probe file from a path, or a name in the index's probes folder ("linear")."""
    path = Path(spec).expanduser()
    if path.suffix in (".safetensors", ".json") and path.exists():
        return path.with_suffix(".safetensors")
    folder = probes_folder(index)
    named = folder / f"{spec}.safetensors"
    if named.is_file():
        return named
    existing = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    raise ClipsearchError(
        f"no probe '{spec}': give a .safetensors file or the name of one in {folder} "
        f"({', '.join(existing) if existing else 'none yet: train one first'})"
    )
