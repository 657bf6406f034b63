"""Files every layer writes or checks: atomic writes, content digests, strict JSON.

A write goes to a temp file in the target's folder and is renamed into place
(`os.replace`), so a crash never leaves a half-written file where a good one
was. Temp files are created with the mode a plain `open()` would give (the
umask applies), not mkstemp's 0600.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

_CHUNK_BYTES = 1 << 20


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it back
    would let a file another thread creates meanwhile get mode 0666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Run `write` on a binary temp file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_path(path: Path, write: Callable[[Path], None]) -> Path:
    """Like `atomic_write` for writers that want a file name (torch.save, safetensors, faiss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def file_digest(path: str | Path, algorithm: str = "blake2b") -> str:
    """Hex digest of a file's bytes: blake2b-128 (content hashes), sha256 (checkpoints) or md5 (downloads)."""
    if algorithm == "blake2b":
        digest = hashlib.blake2b(digest_size=16)
    else:
        digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm == "md5" else hashlib.new(algorithm)
    # Non-blocking open, then a regular-file check: a FIFO would block the open, /dev/zero never ends.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    """The blake2b-128 digest `file_digest` gives a file holding `data`."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python, tuples to lists, NaN/inf to None (JSON has no NaN), paths to str."""
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar, without importing numpy
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """`obj` as indented, strict JSON, written atomically; numpy values are converted."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
