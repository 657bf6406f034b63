"""What a Lance table's folder tells without lancedb: the table's current version, read from the
names in its `_versions` folder, and a fingerprint of its files.

Every commit of a Lance table writes one manifest file there, named by the Lance format's naming
schemes: V1 `{version}.manifest`, V2 `{u64::MAX - version:020}.manifest` (so the newest sorts
first). Listing one folder takes microseconds; asking lancedb costs its import (1.4 s, most of it
its REST client's models), which a cold `info`, search or unchanged re-index would pay for nothing.
When the names fit neither scheme, the caller asks lancedb.

The fingerprint (every file's path and size) changes when a data file is cut short or deleted, a
version file truncated or an index removed: what is recorded with it (counts, the rows file) is then
not trusted, and the reader opens the table, which reports the damage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_U64_MAX = 2**64 - 1
_V2_FLOOR = 2**63  # V2 names are u64::MAX minus a version: far above any V1 version number
_SUFFIX = ".manifest"


def table_version(table_folder: Path) -> int | None:
    """The newest committed version of the Lance table in `table_folder`, or None when unknown."""
    try:
        names = os.listdir(table_folder / "_versions")
    except OSError:
        return None
    stems = [name[: -len(_SUFFIX)] for name in names if name.endswith(_SUFFIX)]
    numbers = [int(stem) for stem in stems if stem.isdigit()]
    if not numbers:
        return None
    v2 = [n for n in numbers if n >= _V2_FLOOR]
    if v2 and len(v2) != len(numbers):
        return None  # both schemes in one folder: not a layout this reads
    return _U64_MAX - min(v2) if v2 else max(numbers)


def files_fingerprint(table_folder: Path) -> str:
    """A digest of the relative path and size of every file under `table_folder`."""
    entries = []
    for folder, _, names in os.walk(table_folder):
        for name in names:
            path = os.path.join(folder, name)
            try:
                size = os.stat(path).st_size
            except OSError:  # gone between the listing and the stat
                size = -1
            entries.append(f"{os.path.relpath(path, table_folder)}\0{size}")
    return hashlib.blake2b("\n".join(sorted(entries)).encode(), digest_size=16).hexdigest()
