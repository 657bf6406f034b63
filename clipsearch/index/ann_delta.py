"""The change since the FAISS file was last saved in full, kept in a small checksummed file beside it.

Saving the whole FAISS file for every write costs seconds at 1M rows (2 GB written and hashed) for a
change of one row. So a write records only what changed since that full save (the base): the keys
the base holds that are gone or have new vectors (`removed`), and the keys added since, with their
vectors. Loading reads the base, then applies the delta. The delta is folded into the base (one full
save, the delta file removed) once it holds more than `DELTA_FRACTION` of the index's rows or
`DELTA_MAX_ROWS`, and a base smaller than `FULL_SAVE_BYTES` is always saved in full (as cheap there).

The manifest's ann entry vouches for both files: `bytes`/`checksum` of the base and
`delta: {file, bytes, checksum, added, removed}`. A missing, torn or foreign delta fails that check,
and the index is rebuilt from the table: it is never loaded without its change.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..files import atomic_write, bytes_digest

DELTA_FILE = "images.faiss.delta"
DELTA_FRACTION = 0.10  # of the index's rows: past this the next write saves the whole index instead
DELTA_MAX_ROWS = 32_768  # 64 MB of 512-d vectors: a delta write stays well under a second
FULL_SAVE_BYTES = 64 * 2**20  # a smaller base is saved in full every time


@dataclass(frozen=True)
class Delta:
    """What turns the base index into the current one: remove `removed` and `keys`, then add `keys`."""

    removed: np.ndarray  # int64, sorted: keys of the base that are gone (or hold new vectors now)
    keys: np.ndarray  # int64: keys added since the base, each once
    vectors: np.ndarray  # float32 (len(keys), dim)

    @classmethod
    def empty(cls, dim: int) -> Delta:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))

    @property
    def rows(self) -> int:
        return len(self.removed) + len(self.keys)

    def merged(self, add_keys: np.ndarray, add_vectors: np.ndarray, remove_keys: np.ndarray) -> Delta:
        """This change followed by another (remove `remove_keys`, then add `add_keys`), as one delta.
        A key added again drops its earlier added vector; a removed one leaves the added set."""
        add_keys, remove_keys = np.asarray(add_keys, np.int64), np.asarray(remove_keys, np.int64)
        keep = ~np.isin(self.keys, np.concatenate([remove_keys, add_keys]))
        return Delta(
            np.union1d(self.removed, remove_keys).astype(np.int64),
            np.concatenate([self.keys[keep], add_keys]),
            np.concatenate(
                [self.vectors[keep], np.asarray(add_vectors, np.float32).reshape(len(add_keys), self.vectors.shape[1])]
            ),
        )

    def apply(self, index: faiss.Index) -> None:
        """Turn the base index into the current one, in place."""
        remove = np.union1d(self.removed, self.keys)
        if len(remove):
            index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(remove, np.int64)))
        if len(self.keys):
            index.add_with_ids(np.ascontiguousarray(self.vectors), np.ascontiguousarray(self.keys))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, removed=self.removed, keys=self.keys, vectors=self.vectors)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int) -> Delta | None:
        """The delta in `data`, or None when it is not one of `dim`-d vectors."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                removed, keys, vectors = arrays["removed"], arrays["keys"], arrays["vectors"]
        except (OSError, ValueError, KeyError, EOFError):  # not an .npz, or a torn one
            return None
        shapes_fit = removed.ndim == keys.ndim == 1 and vectors.shape == (len(keys), dim)
        types_fit = removed.dtype == keys.dtype == np.int64 and vectors.dtype == np.float32
        return cls(removed, keys, vectors) if shapes_fit and types_fit else None


def should_fold(delta: Delta, base_bytes: int, n: int) -> bool:
    """Whether to save the whole index instead of writing `delta` (for an index of `n` rows)."""
    return base_bytes < FULL_SAVE_BYTES or delta.rows > min(DELTA_MAX_ROWS, DELTA_FRACTION * n)


def write(delta: Delta, folder: Path) -> dict[str, Any]:
    """Write the delta file atomically; returns its manifest entry (file, size, checksum, row counts)."""
    data = delta.to_bytes()
    atomic_write(folder / DELTA_FILE, lambda handle: handle.write(data))
    return {
        "file": DELTA_FILE,
        "bytes": len(data),
        "checksum": bytes_digest(data),
        "added": len(delta.keys),
        "removed": len(delta.removed),
    }


def read_verified(folder: Path, record: dict[str, Any] | None, dim: int) -> tuple[Delta | None, str | None]:
    """(the delta the entry describes, None) or (None, what is wrong with its file). No entry: empty."""
    if not record:
        return Delta.empty(dim), None
    path = folder / DELTA_FILE
    if not path.is_file():
        return None, f"{DELTA_FILE}: {'not a file' if path.exists() else 'missing'} ({path})"
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"{DELTA_FILE}: cannot be read ({error.strerror})"
    if len(data) != record.get("bytes") or bytes_digest(data) != record.get("checksum"):
        return None, f"{DELTA_FILE}: does not match the manifest's size and checksum"
    delta = Delta.from_bytes(data, dim)
    return (delta, None) if delta is not None else (None, f"{DELTA_FILE}: not a delta of {dim}-d vectors")
