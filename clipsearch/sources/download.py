"""Fetch one file by URL into a folder: md5-verified, never left half-written."""

from __future__ import annotations

import http.client
import os
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import ClipsearchError
from ..files import atomic_write_path, file_digest
from ..present.progress import progress_bars

# Either variable forbids network access; HF_HUB_OFFLINE is honoured too because
# users who set it for the model cache expect the whole tool to stay offline.
OFFLINE_ENV_VARS = ("CLIPSEARCH_OFFLINE", "HF_HUB_OFFLINE")
_TRUE_VALUES = {"1", "true", "yes", "on"}
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


def is_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE_VALUES for name in OFFLINE_ENV_VARS)


def fetch(url: str, dest_dir: Path, md5: str | None = None, filename: str | None = None) -> Path:
    """Return `dest_dir/filename` (default: the URL's last path segment), downloading it if
    it is missing or fails the md5 check.

    file:// URLs are read even when offline, since they never touch the network.
    """
    name = filename or Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ClipsearchError(f"cannot tell which file name to save {url} as: pass a filename")
    dest = Path(dest_dir) / name
    if dest.is_file() and (md5 is None or file_digest(dest, "md5") == md5):
        return dest
    how_to_fix = (
        f"download it yourself and put it at {dest}, or pass --data-dir pointing at the downloaded archive or folder"
    )
    if urllib.parse.urlparse(url).scheme != "file" and is_offline():
        offline_vars = "/".join(OFFLINE_ENV_VARS)
        raise ClipsearchError(f"cannot download {url}: offline mode is on ({offline_vars}); {how_to_fix}")

    def download(tmp: Path) -> None:
        _stream(url, tmp)
        if md5 is not None and (actual_md5 := file_digest(tmp, "md5")) != md5:
            raise ClipsearchError(
                f"downloaded {url} is corrupt (md5 {actual_md5}, expected {md5}); try again or {how_to_fix}"
            )

    try:
        # Into a temp file beside `dest`, renamed into place: never a half-written file under its name.
        return atomic_write_path(dest, download)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise ClipsearchError(f"cannot download {url} ({_reason(err)}); {how_to_fix}") from err


def _stream(url: str, path: Path) -> None:
    """Copy the URL's body into the file `path`, with a progress bar on stderr."""
    what = f"downloading {Path(urllib.parse.urlparse(url).path).name}"
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress_bars(transfer=True) as update:
            done = 0
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                update(what, done, total)


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(reason)


def data_root() -> Path:
    """Where datasets are looked for and downloaded without --data-dir."""
    return Path(os.environ.get("CLIPSEARCH_DATA", "~/.cache/clipsearch/data")).expanduser()
