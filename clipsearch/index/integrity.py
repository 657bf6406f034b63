"""What keeps an index honest: the manifest's schema, and telling a damaged LanceDB table from a
mistake in a query, so that either is one line naming the index and the fix."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ClipsearchError
from ..files import read_json
from ..model.hub import is_hub_name
from ..model.spec import known_architectures

FORMAT_VERSION = 1

# The manifest's schema: key -> (accepted types, required). Checked on every read, so a truncated,
# hand-edited or foreign file is one line naming it, never a KeyError deep in a command.
_MANIFEST_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((int,), True),
    "model": ((dict,), True),
    "dim": ((int,), True),
    "name": ((str,), False),
    "model_id": ((str,), False),
    "preprocessing": ((dict, type(None)), False),
    "ann": ((dict, type(None)), False),
    "counts": ((dict, type(None)), False),
    "counts_at": ((dict, type(None)), False),
    "sources": ((list,), False),
    "created": ((str,), False),
    "updated": ((str,), False),
}
_MODEL_KEYS = {"arch": (str,), "pretrained": (str,), "checkpoint_sha256": (str, type(None))}


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest, or None when it fits the schema."""
    if not isinstance(manifest, dict):
        return f"not a JSON object (a {type(manifest).__name__})"
    for key, (types, required) in _MANIFEST_KEYS.items():
        if key not in manifest:
            if required:
                return f"no {key!r}"
        elif not isinstance(manifest[key], types) or isinstance(manifest[key], bool):
            return f"{key!r} is a {type(manifest[key]).__name__}"
    if manifest["format"] != FORMAT_VERSION:
        return f"format {manifest['format']} (this clipsearch reads format {FORMAT_VERSION})"
    if manifest["dim"] <= 0:
        return f"dim {manifest['dim']}"
    for key, types in _MODEL_KEYS.items():
        value = manifest["model"].get(key)
        if (key != "checkpoint_sha256" and not value) or not isinstance(value, types):
            return f"model {key!r} is {value!r}"
    if not all(isinstance(source, str) for source in manifest.get("sources", [])):
        return "'sources' holds a non-string"
    return None


def is_damage(error: BaseException) -> bool:
    """An error of LanceDB that means a file of the table is missing or broken (not a mistake in a query)."""
    text = str(error)
    return isinstance(error, (RuntimeError, OSError)) and any(
        sign in text for sign in ("LanceError(IO)", "Not found", "Corrupt", "LanceError(Index)")
    )


def guarded(method: Callable) -> Callable:
    """Store methods turn a damaged table into one line that names the index and the fix."""

    @functools.wraps(method)
    def guarded_method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError) as error:
            if not is_damage(error):
                raise
            if "images.lance/_indices/" not in str(error):
                raise ClipsearchError(damage_message(self.path.name, error)) from error
        # Only the key index is broken: it is derived from the table, so rebuild it and try again.
        self.rebuild_key_index()
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError) as error:
            if not is_damage(error):
                raise
            raise ClipsearchError(damage_message(self.path.name, error)) from error

    return guarded_method


def damage_message(name: str, error: BaseException) -> str:
    """One line for a damaged table of index `name`: lance's first line, without its source locations."""
    return f"index '{name}' is damaged ({error_summary(error)}); run 'clipsearch check {name} --repair' to repair it"


def error_summary(error: BaseException) -> str:
    """An error's first line, without the source locations lance appends, at most 300 characters."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return re.sub(r",? /(rustc|root)/\S+", "", first)[:300]


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest, checked against its schema: a broken one is one line naming the file and the fix."""
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as error:
        problem: str | None = f"not valid JSON ({str(error).splitlines()[0]})"
    except OSError as error:
        problem = f"unreadable ({error.strerror or error})"
    else:
        problem = manifest_problem(manifest)
    if problem:
        raise ClipsearchError(
            f"index manifest {path} is broken: {problem}; restore it from a backup, or "
            f"'clipsearch remove {path.parent.name}' and index again"
        )
    return manifest


def check_architecture(arch: str, folder: Path) -> None:
    """Before a model is built for an index: its manifest must name an architecture that exists."""
    if is_hub_name(arch):  # hf:/hf-hub: models are checked when they load (cache, folder digest)
        return
    if arch not in known_architectures():
        raise ClipsearchError(
            f"index manifest {folder / 'manifest.json'} names an unknown model architecture {arch!r}; "
            f"restore the manifest, or 'clipsearch remove {folder.name}' and index again"
        )
