"""Fetch one file by URL into a folder: md5-verified, never left half-written."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..errors import ClipsearchError

# Either variable forbids network access; HF_HUB_OFFLINE is honoured too because
# users who set it for the model cache expect the whole tool to stay offline.
OFFLINE_ENV_VARS = ("CLIPSEARCH_OFFLINE", "HF_HUB_OFFLINE")
_TRUE_VALUES = {"1", "true", "yes", "on"}
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


def is_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE_VALUES for name in OFFLINE_ENV_VARS)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest_dir: Path, md5: str | None = None, filename: str | None = None) -> Path:
    """Return `dest_dir/filename` (default: the URL's last path segment), downloading it if
    it is missing or fails the md5 check.

    file:// URLs are read even when offline, since they never touch the network.
    """
    name = filename or Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ClipsearchError(f"cannot tell which file name to save {url} as: pass a filename")
    dest_dir = Path(dest_dir)
    dest = dest_dir / name
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    how_to_fix = f"download it yourself and put it at {dest}, or pass --data-dir pointing at the downloaded archive or folder"
    if urllib.parse.urlparse(url).scheme != "file" and is_offline():
        offline_vars = "/".join(OFFLINE_ENV_VARS)
        raise ClipsearchError(f"cannot download {url}: offline mode is on ({offline_vars}); {how_to_fix}")

    dest_dir.mkdir(parents=True, exist_ok=True)
    # The temp file lives in dest_dir so the final rename is atomic (same filesystem).
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual_md5 = _stream(url, out)
        if md5 is not None and actual_md5 != md5:
            raise ClipsearchError(
                f"downloaded {url} is corrupt (md5 {actual_md5}, expected {md5}); try again or {how_to_fix}"
            )
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise ClipsearchError(f"cannot download {url} ({_reason(err)}); {how_to_fix}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url: str, out: BinaryIO) -> str:
    """Copy the URL's body into `out` with a progress bar; return the md5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        # stderr keeps stdout clean for --json / --paths output.
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"downloading {Path(urllib.parse.urlparse(url).path).name}", total=total)
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(reason)


def data_root() -> Path:
    """Where datasets are looked for and downloaded without --data-dir."""
    return Path(os.environ.get("CLIPSEARCH_DATA", "~/.cache/clipsearch/data")).expanduser()
