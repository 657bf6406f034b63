"""Bring your own embeddings: precomputed unit vectors (one `.npy` file, or a folder of them) with
optional per-row metadata (`.parquet`), added to an index through the same store writer and the
same in-place FAISS update as indexing. clip-retrieval's output works as is: `img_emb/img_emb_N.npy`
beside `metadata/metadata_N.parquet` (columns `image_path` or `url`, `caption`, ...).

A row's id is the metadata's `id`, else `image_path`, else `url`, else `key`, else its position;
its uri is `uri`, else `image_path`, else `url`, else the id. `caption` (text) or `captions` (list),
`label` (int, or text taken as the label name), `label_name` and `split` are kept when present.
Vectors within 1% of unit norm (float16 rounding) are renormalised; others are refused unless
`normalize` is asked for. Captions are stored as text but not embedded (no model is loaded).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ClipsearchError
from ..model.spec import CONFIG_DIR, ModelSpec, load_open_clip
from .store import IMAGES, Store, images_schema
from .sync import SyncStats

UNIT_TOLERANCE = 0.01
IMPORT_BATCH = 65_536  # rows per LanceDB commit


def _numbered(paths: list[Path]) -> list[Path]:
    """img_emb_2.npy before img_emb_10.npy."""
    return sorted(paths, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def embedding_files(vectors: Path, metadata: Path | None) -> tuple[list[Path], list[Path]]:
    """The .npy files (in order) and the metadata .parquet files that go with them."""
    vectors = vectors.expanduser()
    if vectors.is_dir():
        folder = vectors / "img_emb" if (vectors / "img_emb").is_dir() else vectors
        npys = _numbered(list(folder.glob("*.npy")))
        if metadata is None and (vectors / "metadata").is_dir():
            metadata = vectors / "metadata"
    elif vectors.is_file():
        npys = [vectors]
    else:
        raise ClipsearchError(f"vectors not found: {vectors}")
    if not npys:
        raise ClipsearchError(f"no .npy files in {vectors}")
    if metadata is None:
        return npys, []
    metadata = metadata.expanduser()
    parquets = _numbered(list(metadata.glob("*.parquet"))) if metadata.is_dir() else [metadata]
    if not all(p.is_file() for p in parquets) or not parquets:
        raise ClipsearchError(f"metadata not found: {metadata}")
    return npys, parquets


def read_embeddings(npys: list[Path], parquets: list[Path], dim: int, normalize: bool) -> tuple[np.ndarray, pa.Table]:
    """All vectors as checked float32 unit rows, and their metadata (an empty table when none)."""
    parts = []
    for path in npys:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ClipsearchError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        if array.ndim != 2 or array.dtype.kind != "f":
            raise ClipsearchError(f"{path} holds {array.dtype} of shape {array.shape}, not rows of float vectors")
        if array.shape[1] != dim:
            raise ClipsearchError(f"{path} holds {array.shape[1]}-d vectors; the index and its model have {dim}-d")
        parts.append(_unit(np.asarray(array, np.float32), path, normalize))
    vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if not parquets:
        return vectors, pa.table({})
    import pyarrow.parquet as pq

    try:
        meta = pa.concat_tables([pq.read_table(p) for p in parquets], promote_options="default")
    except (OSError, pa.ArrowException) as err:
        raise ClipsearchError(f"cannot read metadata {parquets[0]}: {str(err).splitlines()[0]}") from None
    if meta.num_rows != len(vectors):
        raise ClipsearchError(f"{meta.num_rows} metadata rows for {len(vectors)} vectors: they must match one to one")
    return vectors, meta


def _unit(vectors: np.ndarray, path: Path, normalize: bool) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ClipsearchError(f"{path} holds zero or non-finite vectors")
    off = np.abs(norms - 1) > UNIT_TOLERANCE
    if off.any() and not normalize:
        row = int(np.flatnonzero(off)[0])
        raise ClipsearchError(
            f"{path}: {int(off.sum())} vectors are not unit length (row {row} has norm {norms[row]:.4g}); "
            "pass --normalize to renormalise them"
        )
    return vectors / norms[:, None]


def _text_column(meta: pa.Table, names: tuple[str, ...]) -> pa.ChunkedArray | None:
    for name in names:
        if name in meta.column_names:
            return pc.cast(meta.column(name), pa.string())
    return None


def rows_table(vectors: np.ndarray, meta: pa.Table, source: str, keys: np.ndarray, dim: int) -> pa.Table:
    """Image rows (the store's schema) for vectors and their metadata."""
    n = len(vectors)
    ids = _text_column(meta, ("id", "image_path", "url", "key"))
    ids = ids if ids is not None else pa.array([f"{source}#{i}" for i in range(n)], pa.string())
    uris = _text_column(meta, ("uri", "image_path", "url"))
    columns: dict[str, object] = {
        "id": ids,
        "key": pa.array(keys, pa.int64()),
        "uri": uris if uris is not None else ids,
    }
    columns["source"] = pa.array([source] * n, pa.string())
    if "captions" in meta.column_names:
        columns["captions"] = pc.cast(meta.column("captions"), pa.list_(pa.string()))
    elif "caption" in meta.column_names:
        captions = pc.cast(meta.column("caption"), pa.string()).to_pylist()
        columns["captions"] = pa.array([[c] if c else [] for c in captions], pa.list_(pa.string()))
    if "label" in meta.column_names and pa.types.is_integer(meta.schema.field("label").type):
        columns["label"] = pc.cast(meta.column("label"), pa.int64())
    names = _text_column(meta, ("label_name",) if "label" in columns else ("label_name", "label"))
    if names is not None:
        columns["label_name"] = names
    if "split" in meta.column_names:
        columns["split"] = pc.cast(meta.column("split"), pa.string())
    schema = images_schema(dim)
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    columns["deleted"] = pa.array(np.zeros(n, bool))
    full = {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}
    return pa.table(full, schema=schema)


def import_vectors(store: Store, vectors: np.ndarray, meta: pa.Table, source: str, dim: int) -> SyncStats:
    """Write the rows (an id already stored keeps its key and gets the new vector); `written_keys` for the ANN."""
    started = time.perf_counter()
    stats = SyncStats()
    stored = store.scan(IMAGES, ["id", "key"])
    rows = rows_table(vectors, meta, source, np.zeros(len(vectors), np.int64), dim)
    if pc.count_distinct(rows.column("id")).as_py() != rows.num_rows:
        raise ClipsearchError("the imported ids are not unique (give the metadata an 'id' column)")
    pos = pc.index_in(rows.column("id"), value_set=stored.column("id")).fill_null(-1).to_numpy(zero_copy_only=False)
    next_key = int(pc.max(stored.column("key")).as_py()) + 1 if stored.num_rows else 0
    new = pos < 0
    keys = np.empty(len(pos), np.int64)
    keys[new] = next_key + np.arange(int(new.sum()))
    keys[~new] = stored.column("key").to_numpy()[pos[~new]] if (~new).any() else []
    rows = rows.set_column(1, "key", pa.array(keys, pa.int64()))
    for start in range(0, rows.num_rows, IMPORT_BATCH):
        batch, batch_new = rows.slice(start, IMPORT_BATCH), new[start : start + IMPORT_BATCH]
        if batch_new.all():
            store.add(IMAGES, batch)  # appending is far cheaper than a merge when no id is stored yet
        else:
            store.upsert(IMAGES, batch)
    stats.new, stats.updated, stats.encoded = int(new.sum()), int((~new).sum()), 0
    stats.written_keys = keys.tolist()
    stats.seconds = stats.sync_seconds = time.perf_counter() - started
    return stats


def file_dim(path: Path) -> int:
    """The width of the vectors in a .npy file (its header only)."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError) as err:
        raise ClipsearchError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if len(shape) != 2:
        raise ClipsearchError(f"{path} holds an array of shape {shape}, not rows of vectors")
    return int(shape[1])


def model_dim(spec: ModelSpec) -> int | None:
    """The embedding width a model's config declares (None when only loading it would tell)."""
    shipped = CONFIG_DIR / f"{spec.arch}.json"
    if shipped.is_file():
        return int(json.loads(shipped.read_text())["embed_dim"])
    if spec.source != "open_clip" or spec.is_hub_open_clip:
        return None
    config = load_open_clip().get_model_config(spec.arch)
    return int(config["embed_dim"]) if config else None
