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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ClipsearchError
from ..model.spec import CONFIG_DIR, ModelSpec, load_open_clip
from .schema import images_schema
from .store import IMAGES, Store
from .sync import SyncStats

UNIT_TOLERANCE = 0.01
IMPORT_BATCH = 65_536  # rows per LanceDB commit (and read at a time)
ID_COLUMNS = ("id", "image_path", "url", "key")


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


class Embeddings:
    """Vectors to import and their metadata, read a batch at a time: the vectors from .npy files (mapped
    for one batch at a time: mapped pages count as resident) or arrays, in order; the metadata from
    parquet files in row batches, or one table. Memory holds one batch, not the whole set (11 GB at 1M
    512-d rows when it did)."""

    def __init__(
        self, vectors: list[Path] | list[np.ndarray], lengths: list[int], meta: list[Path] | pa.Table, normalize: bool
    ):
        self.vectors, self.lengths, self.meta, self.normalize = vectors, lengths, meta, normalize

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, meta: pa.Table | None = None, normalize: bool = False) -> Embeddings:
        """Vectors (and metadata) already in memory, checked as files are."""
        embeddings = cls([np.asarray(vectors)], [len(vectors)], meta if meta is not None else pa.table({}), normalize)
        embeddings.check()
        return embeddings

    def __len__(self) -> int:
        return sum(self.lengths)

    def check(self) -> None:
        """Refuse non-unit vectors (unless renormalising) and metadata that does not match one row per vector."""
        for _ in self.batches(IMPORT_BATCH, with_meta=False):
            pass  # each batch is checked as it is read
        rows = _meta_rows(self.meta)
        _MetaReader(self.meta, IMPORT_BATCH)  # the files' schemas agree
        if rows is not None and rows != len(self):
            raise ClipsearchError(f"{rows} metadata rows for {len(self)} vectors: they must match one to one")

    def batches(self, size: int, with_meta: bool = True) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(unit float32 vectors, their metadata rows) of up to `size` rows at a time, in order."""
        meta = _MetaReader(self.meta, size) if with_meta else None
        for source, length in zip(self.vectors, self.lengths):
            for start in range(0, length, size):
                array = _npy(source) if isinstance(source, Path) else source
                part = np.array(array[start : start + size], np.float32)  # a copy: the mapping goes with `array`
                del array
                vectors = _unit(part, str(source) if isinstance(source, Path) else "vectors", self.normalize, start)
                yield vectors, (meta.take(len(vectors)) if meta else pa.table({}))

    def ids(self, source: str) -> pa.Array:
        """Every row's id: the metadata's `id`, else `image_path`, else `url`, else `key`, else its position."""
        if isinstance(self.meta, pa.Table):
            column = _text_column(self.meta, ID_COLUMNS)
        else:
            import pyarrow.parquet as pq

            try:
                names = [set(pq.read_schema(path).names) for path in self.meta]
                name = next((n for n in ID_COLUMNS if all(n in file for file in names)), None)
                read = [pq.read_table(path, columns=[name]) for path in self.meta] if name else []
            except (OSError, pa.ArrowException) as err:
                raise ClipsearchError(f"cannot read metadata {self.meta[0]}: {str(err).splitlines()[0]}") from None
            column = _text_column(pa.concat_tables(read, promote_options="permissive"), (name,)) if read else None
        if column is None:
            return pa.array([f"{source}#{i}" for i in range(len(self))], pa.string())
        return column.combine_chunks()


def read_embeddings(npys: list[Path], parquets: list[Path], dim: int, normalize: bool) -> Embeddings:
    """The vectors (memory-mapped) and metadata files, checked in one streamed pass before anything is written."""
    lengths = []
    for path in npys:
        array = _npy(path)
        if array.ndim != 2 or array.dtype.kind != "f":
            raise ClipsearchError(f"{path} holds {array.dtype} of shape {array.shape}, not rows of float vectors")
        if array.shape[1] != dim:
            raise ClipsearchError(f"{path} holds {array.shape[1]}-d vectors; the index and its model have {dim}-d")
        lengths.append(len(array))
    embeddings = Embeddings(list(npys), lengths, list(parquets) or pa.table({}), normalize)
    embeddings.check()
    return embeddings


def _npy(path: Path) -> np.ndarray:
    """A .npy file mapped into memory (read as it is used)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ClipsearchError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def _meta_rows(meta: list[Path] | pa.Table) -> int | None:
    """How many metadata rows there are (parquet footers only), None when there is no metadata."""
    if isinstance(meta, pa.Table):
        return meta.num_rows if meta.num_columns else None
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in meta)
    except (OSError, pa.ArrowException) as err:
        raise ClipsearchError(f"cannot read metadata {meta[0]}: {str(err).splitlines()[0]}") from None


class _MetaReader:
    """Metadata rows handed out in the vectors' batch sizes, read from parquet a row batch at a time and
    given one schema (a column missing from a file reads as nulls)."""

    def __init__(self, meta: list[Path] | pa.Table, size: int):
        self.pending: list[pa.Table] = []
        if isinstance(meta, pa.Table):
            self.source: Iterator[pa.Table] = iter([meta])  # sliced as it is taken: no copy
            return
        import pyarrow.parquet as pq

        try:
            schema = pa.unify_schemas([pq.read_schema(path) for path in meta], promote_options="permissive")
        except (OSError, pa.ArrowException) as err:
            raise ClipsearchError(f"cannot read metadata {meta[0]}: {str(err).splitlines()[0]}") from None
        self.source = (
            pa.concat_tables([schema.empty_table(), pa.Table.from_batches([batch])], promote_options="permissive")
            for path in meta
            for batch in pq.ParquetFile(path).iter_batches(batch_size=size)
        )

    def take(self, n: int) -> pa.Table:
        have = sum(t.num_rows for t in self.pending)
        while have < n:
            table = next(self.source, None)
            if table is None:
                break
            self.pending.append(table)
            have += table.num_rows
        rows = pa.concat_tables(self.pending) if self.pending else pa.table({})
        self.pending = [rows.slice(n)] if rows.num_rows > n else []
        return rows.slice(0, n) if rows.num_columns else pa.table({})


def _unit(vectors: np.ndarray, name: str, normalize: bool, first_row: int = 0) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ClipsearchError(f"{name} holds zero or non-finite vectors")
    off = np.abs(norms - 1) > UNIT_TOLERANCE
    if off.any() and not normalize:
        row = int(np.flatnonzero(off)[0])
        raise ClipsearchError(
            f"{name}: vectors are not unit length (row {first_row + row} has norm {norms[row]:.4g}); "
            "pass --normalize to renormalise them"
        )
    return vectors / norms[:, None]


def _text_column(meta: pa.Table, names: tuple[str, ...]) -> pa.ChunkedArray | None:
    for name in names:
        if name in meta.column_names:
            return pc.cast(meta.column(name), pa.string())
    return None


def rows_table(vectors: np.ndarray, meta: pa.Table, ids: pa.Array, keys: np.ndarray, source: str, dim: int) -> pa.Table:
    """Image rows (the store's schema) for vectors, their ids and keys, and their metadata."""
    n = len(vectors)
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


def import_vectors(
    store: Store, embeddings: Embeddings, source: str, dim: int, stored: pa.Table | None = None
) -> SyncStats:
    """Write the rows a batch at a time (an id already stored keeps its key and gets the new vector);
    `written_keys` for the ANN. `stored`: the table's rows (`id`, `key`) when the caller has them (the rows
    file), else they are read."""
    started = time.perf_counter()
    stats = SyncStats()
    ids = embeddings.ids(source)
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ClipsearchError("the imported ids are not unique (give the metadata an 'id' column)")
    stored = stored.select(["id", "key"]) if stored is not None else store.scan(IMAGES, ["id", "key"])
    pos = pc.index_in(ids, value_set=stored.column("id")).fill_null(-1).to_numpy(zero_copy_only=False)
    next_key = int(pc.max(stored.column("key")).as_py()) + 1 if stored.num_rows else 0
    new = pos < 0
    keys = np.empty(len(pos), np.int64)
    keys[new] = next_key + np.arange(int(new.sum()))
    keys[~new] = stored.column("key").to_numpy()[pos[~new]] if (~new).any() else []
    del stored, pos
    start = 0
    for vectors, meta in embeddings.batches(IMPORT_BATCH):
        end = start + len(vectors)
        batch = rows_table(vectors, meta, ids.slice(start, end - start), keys[start:end], source, dim)
        if new[start:end].all():
            store.add(IMAGES, batch)  # appending is far cheaper than a merge when no id is stored yet
        else:
            store.upsert(IMAGES, batch)
        start = end
    stats.new, stats.updated, stats.encoded = int(new.sum()), int((~new).sum()), 0
    stats.written_keys = keys.tolist()
    stats.seconds = stats.sync_seconds = time.perf_counter() - started
    return stats


def file_dim(path: Path) -> int:
    """The width of the vectors in a .npy file (its header only)."""
    shape = _npy(path).shape
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
