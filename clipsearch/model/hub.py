"""Models named on the Hugging Face hub or saved in its folder layout: `hf:org/name`, `hf:/a/folder`
(transformers CLIP-family checkpoints) and open_clip models published on the hub (`hf-hub:org/name`).

A repo is read from the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`), found by plain
file lookups, so naming a cached model costs no import of transformers or torch, and offline a
repo that is not cached fails at once, before anything slow. Online, a missing repo is fetched
with huggingface_hub (only the files a model needs). A repo is pinned by its snapshot revision
(the commit `refs/main` points to), a folder by the digest of its config and weights files.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ClipsearchError
from ..files import file_digest

HF_PREFIX = "hf:"  # a transformers checkpoint: `hf:org/name` or `hf:/path/to/saved_folder`
HF_HUB_PREFIX = "hf-hub:"  # an open_clip model published on the hub, as open_clip names it
LOCAL_FOLDER = "folder"  # the `pretrained` of a spec for a saved folder (its digest pins it)
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "CLIPSEARCH_OFFLINE")
HUB_ENDPOINT = "https://huggingface.co"  # what $HF_ENDPOINT replaces (a mirror)
REACH_SECONDS = 1.0  # a connection to the hub takes less; without a network it fails at once
_TRUE = {"1", "true", "yes", "on"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
# What a model needs from a repo: configs, tokenizer and processor files, weights (safetensors first).
_NEEDED = ("*.json", "*.txt", "*.model")
_WEIGHTS = ("*.safetensors",)
_WEIGHTS_FALLBACK = ("pytorch_model.bin", "open_clip_pytorch_model.bin")
# The file a snapshot of each kind must hold.
MARKER = {HF_PREFIX: "config.json", HF_HUB_PREFIX: "open_clip_config.json"}


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment on every call (tests and users move it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in _OFFLINE_VARS)


def hub_reachable(seconds: float = REACH_SECONDS) -> bool:
    """Whether a TCP connection to the hub opens within `seconds`: without a network, huggingface_hub
    retries each file for a minute before it gives up, this knows in a second. The name is looked up
    in a daemon thread, since a resolver that does not answer ignores socket timeouts."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT)
    reached: list[bool] = []
    done = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((url.hostname or "", url.port or 443), timeout=seconds):
                reached.append(True)
        except Exception:  # whatever the socket layer raises (also a test's network guard): no answer
            pass
        finally:
            done.set()

    threading.Thread(target=connect, name="hub-reachable", daemon=True).start()
    done.wait(seconds)
    return bool(reached)


def downloads_possible() -> bool:
    """Not switched off (HF_HUB_OFFLINE / CLIPSEARCH_OFFLINE) and the hub answers."""
    return not hub_offline() and hub_reachable()


def is_hub_name(arch: str | None) -> bool:
    return bool(arch) and arch.startswith((HF_PREFIX, HF_HUB_PREFIX))


def hub_kind(arch: str) -> str:
    """HF_PREFIX for a transformers checkpoint, HF_HUB_PREFIX for an open_clip hub model."""
    return HF_HUB_PREFIX if arch.startswith(HF_HUB_PREFIX) else HF_PREFIX


def _repo_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str | None = None) -> tuple[str, Path] | None:
    """(commit, snapshot folder) of a cached repo at `revision` (a branch, tag or commit; default main)."""
    repo = _repo_folder(repo_id)
    revision = revision or "main"
    commit = revision
    if not _COMMIT.fullmatch(revision):
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    return (commit, snapshot) if snapshot.is_dir() else None


def cached_file(repo_id: str, names: tuple[str, ...]) -> Path | None:
    """The first of `names` in the snapshot of `repo_id` that main points to in the cache, if any."""
    found = cached_snapshot(repo_id)
    paths = [found[1] / name for name in names] if found else []
    return next((path for path in paths if path.is_file()), None)


def snapshot_folder(arch: str, commit: str | None) -> Path:
    """The cached snapshot a resolved hub spec names (None: the one main points to); it must still be there."""
    repo_id = arch.removeprefix(hub_kind(arch))
    found = cached_snapshot(repo_id, commit)
    if found is None or not (found[1] / MARKER[hub_kind(arch)]).is_file():
        raise ClipsearchError(
            f"{arch} at revision {(commit or 'main')[:12]} is no longer in the Hugging Face cache ({hub_cache()}); "
            f"fix: download it again or point HF_HOME at the cache it was indexed from"
        )
    return found[1]


def _download(repo_id: str, revision: str | None, marker: str) -> tuple[str, Path]:
    from huggingface_hub import snapshot_download  # only when a repo must be fetched

    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[*_NEEDED, *_WEIGHTS]))
        if not any(path.glob("*.safetensors")):  # an older repo: its weights are a torch pickle
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[*_NEEDED, *_WEIGHTS_FALLBACK]))
    except Exception as err:  # no such repo, no network, gated: all fixed by the user the same way
        raise ClipsearchError(f"cannot download {repo_id} from the Hugging Face hub: {err}".splitlines()[0]) from err
    if not (path / marker).is_file():
        raise ClipsearchError(f"{repo_id} has no {marker}: not a model this kind of spec can load")
    return path.name, path


def resolve_repo(arch: str, revision: str | None) -> tuple[str, str]:
    """(arch, commit) of `hf:org/name` or `hf-hub:org/name`, from the cache (or fetched when online)."""
    kind = hub_kind(arch)
    repo_id = arch.removeprefix(kind)
    if not _REPO_ID.fullmatch(repo_id):
        raise ClipsearchError(f"'{arch}' names no Hugging Face repo: use {kind}org/name or hf:/path/to/folder")
    found = cached_snapshot(repo_id, revision)
    if found is None or not (found[1] / MARKER[kind]).is_file():
        if hub_offline():
            raise ClipsearchError(
                f"{repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache ({hub_cache()}) "
                f"and downloads are off (HF_HUB_OFFLINE/CLIPSEARCH_OFFLINE); fix: run once online or set HF_HOME"
            )
        found = _download(repo_id, revision, MARKER[kind])
    return kind + repo_id, found[0]


def is_folder_name(arch: str) -> bool:
    """`hf:PATH` names a saved folder when PATH looks like a path or is an existing folder."""
    name = arch.removeprefix(HF_PREFIX)
    return arch.startswith(HF_PREFIX) and (name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir())


def folder_files(folder: Path) -> list[Path]:
    """The files of a saved model that decide its vectors: configs, tokenizer and weights."""
    patterns = (*_NEEDED, *_WEIGHTS, *_WEIGHTS_FALLBACK)
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})


def folder_digest(folder: Path) -> str:
    """sha256 over each relevant file's name and content digest (config + processor + weights)."""
    digest = hashlib.sha256()
    for path in folder_files(folder):
        digest.update(f"{path.name}\0{file_digest(path, 'sha256')}\n".encode())
    return digest.hexdigest()


def resolve_folder(arch: str, pretrained: str | None) -> tuple[str, str, str]:
    """(arch with the absolute folder, LOCAL_FOLDER, digest) of `hf:/path/to/saved_folder`."""
    if pretrained not in (None, LOCAL_FOLDER):
        raise ClipsearchError(f"--pretrained does not apply to a saved folder ({arch}): its files are its weights")
    folder = Path(arch.removeprefix(HF_PREFIX)).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ClipsearchError(
            f"{folder} is not a saved transformers model (no config.json; save_pretrained writes one)"
        )
    return HF_PREFIX + str(folder), LOCAL_FOLDER, folder_digest(folder)


def model_folder(arch: str, pretrained: str, digest: str | None) -> Path:
    """Where a resolved hub/folder spec's files are now; a folder must still hold the same files."""
    if pretrained != LOCAL_FOLDER:
        return snapshot_folder(arch, pretrained)
    folder = Path(arch.removeprefix(HF_PREFIX))
    if not (folder / "config.json").is_file():
        raise ClipsearchError(f"model folder not found: {folder}")
    if folder_digest(folder) != digest:
        raise ClipsearchError(f"model folder {folder} changed since the index was built (content hash differs)")
    return folder
