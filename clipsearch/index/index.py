"""`Index`: one index folder. Creates/opens it, adds images (sync.py), keeps its FAISS file
(ann.py), searches (query.py) and reads rows for the tasks; every SQL string it needs is
written here or in store.py. The tasks are functions over an Index; `clipsearch.api.Index`
adds them as methods (the Python API), and the faces use that class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import ClipsearchError
from ..model.backends import backend_info, load_encoder
from ..model.interface import EncoderLike
from ..model.spec import ModelSpec
from ..sources.datasets import dataset_items
from ..sources.folder import scan_annotated
from ..sources.items import Item
from . import ann
from .derived import DerivedFiles
from .imported import Embeddings, import_vectors
from .integrity import check_architecture
from .query import Hit, caption_hits, check_k, embed_query, image_hits, nearest_keys, parse_query
from .schema import captions_schema, vectors_of
from .store import CAPTIONS, DELETED_ROWS, IMAGES, LIVE_ROWS, SKIPPED, Store, sql_in_chunks, sql_quote
from .sync import Engine, SyncStats, sync_items

LABEL_BATCH = 8192  # rows scored and written per batch by write_labels


class Index:
    """One index folder: LanceDB tables + FAISS file + manifest."""

    def __init__(self, store: Store, encoder: EncoderLike | None = None, encoder_options: dict | None = None):
        self.store = store
        self.encoder_options = encoder_options or {}  # load_encoder's backend/precision (--backend, --precision)
        self.manifest = store.read_manifest()
        self.spec = ModelSpec.from_dict(self.manifest["model"])
        self._encoder = encoder
        self._derived = DerivedFiles(store, int(self.manifest["dim"]))  # the FAISS file, the rows file
        self.problems: list[str] = []  # what the last add_* could not read in annotation files

    # -- opening ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        root: Path | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        encoder: EncoderLike | None = None,
        dim: int | None = None,
        encoder_options: dict[str, Any] | None = None,
    ) -> Index:
        """A new empty index (an existing one with the same model is opened instead); `dim`: load no model."""
        path = Store.folder(name, root)
        if Store.exists(path):
            index = cls.open(name, root, encoder=encoder)
            index.check_model_named(model, pretrained)
            index.encoder_options = encoder_options or {}
            return index
        spec = encoder.spec if encoder else ModelSpec.resolve(model, pretrained)
        encoder = encoder or (load_encoder(spec, **(encoder_options or {})) if dim is None else None)
        manifest = {
            "name": name,
            "model": spec.to_dict(),
            "model_id": spec.identity(),
            "dim": encoder.dim if encoder else dim,
            "preprocessing": encoder.preprocessing() if encoder else None,
            "encoder": backend_info(encoder) if encoder else None,
        }
        return cls(Store.create(path, manifest), encoder, encoder_options)

    @classmethod
    def open(cls, name: str, root: Path | None = None, encoder: EncoderLike | None = None) -> Index:
        path = Store.folder(name, root)
        if not Store.exists(path):
            raise ClipsearchError(f"unknown index '{name}' in {path.parent} (see 'clipsearch list')")
        index = cls(Store.open(path))
        if encoder is not None:
            index.check_model(encoder.spec)
            index._encoder = encoder
        return index

    @classmethod
    def all(cls, root: Path | None = None) -> list[Index]:
        """Every index under the root, by name."""
        return [cls.open(path.name, path.parent) for path in Store.list_indexes(root)]

    @staticmethod
    def remove(name: str, root: Path | None = None) -> None:
        """Delete an index folder for good."""
        Store.remove(Store.folder(name, root))

    @property
    def name(self) -> str:
        return self.store.path.name

    def check_model(self, spec: ModelSpec) -> None:
        """Vectors of different models live in different spaces: refuse to mix them."""
        if spec.identity() != self.spec.identity():
            raise ClipsearchError(
                f"index '{self.name}' was built with {self.spec.identity()}, not {spec.identity()}; "
                "query it with its own model (name no other) or build a new index"
            )

    def check_model_named(self, model: str | None, pretrained: str | None) -> None:
        """--model/--pretrained given for this index: refused unless they name its own model (none
        named: its own). The stored names need no look-up, so re-indexing with them loads no open_clip."""
        if (model or pretrained) and (model or self.spec.arch, pretrained) != (self.spec.arch, self.spec.pretrained):
            self.check_model(ModelSpec.resolve(model or self.spec.arch, pretrained))

    @property
    def encoder(self) -> EncoderLike:
        """The index's own model, on the backend load_encoder picks (encoder_options), loaded on first use."""
        if self._encoder is None:
            check_architecture(self.spec.arch, self.store.path)
            self._encoder = load_encoder(self.spec, recorded=self.manifest.get("encoder"), **self.encoder_options)
        return self._encoder

    # -- adding images -----------------------------------------------------------
    def add_items(
        self,
        items: Sequence[Item],
        source: str,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        progress: bool = True,
        prune: bool = False,
        mark_missing: bool = True,
        excluded: Callable[[str], bool] | None = None,
        engine: Engine | None = None,  # where images are encoded (engines.encoding_engine); None: here
    ) -> SyncStats:
        """Add or update `items`, encoding only what changed; with `mark_missing`, rows of `source` absent
        from `items` are marked deleted (a folder scan sees every file; `excluded(id)`: left out on purpose)."""
        options = dict(batch_size=batch_size, workers=workers, show_progress=progress, mark_missing=mark_missing)
        options.update(excluded=excluded, engine=engine)

        def write() -> SyncStats:  # the encoder is asked for only when something is encoded: none when unchanged
            dim, stored = int(self.manifest["dim"]), self._derived.rows.current()
            return sync_items(self.store, items, source, dim, lambda: self.encoder, stored=stored, **options)

        return self.write_rows(write, source, prune)

    def add_embeddings(self, embeddings: Embeddings, source: str) -> SyncStats:
        """Add precomputed unit vectors (`clipsearch import`): new ids get new keys, stored ids new vectors."""
        dim = int(self.manifest["dim"])
        return self.write_rows(
            lambda: import_vectors(self.store, embeddings, source, dim, stored=self._derived.rows.current()), source
        )

    def write_rows(self, write: Callable[[], SyncStats], source: str, prune: bool = False) -> SyncStats:
        """`write` (a sync, an import) under the writer lock; its source; the derived files if a table changed."""
        with self.store.writer_lock():
            states_before, version_before = self.store.states(), self.store.version()
            stats = write()
            sources = sorted(set(self.manifest.get("sources", [])) | {source})
            made = {"encoder": backend_info(self._encoder)} if self._encoder else {}  # how these vectors were made
            self.manifest = self.store.update_manifest(sources=sources, **made)
            if prune:
                stats.changed_keys += self._prune()
            if self.store.states() != states_before or not self._derived.current():
                self.manifest = self._derived.update(stats.written_keys, stats.changed_keys, version_before)
        return stats

    def add_folder(
        self, folder: str | Path, exclude: Sequence[str] | None = None, captions: str | Path | None = None, **kw: Any
    ) -> SyncStats:
        """Index the images under `folder` (+ a captions sidecar); `exclude` replaces the remembered globs."""
        patterns = self.manifest.get("exclude", []) if exclude is None else [p for p in exclude if p]
        scan = scan_annotated(Path(folder).expanduser(), patterns, Path(captions) if captions else None)
        scan.refuse_other_folder(self.name, self.manifest.get("sources", []))
        self.problems = scan.problems
        self.manifest = self.store.update_manifest(exclude=patterns)  # what the next plain re-index applies
        return self.add_items(scan.items, scan.source, excluded=scan.is_excluded, **kw)

    def add_dataset(
        self,
        name: str,
        split: str = "test",
        data_dir: str | Path | None = None,
        captions: str | Path | None = None,
        **kwargs: Any,
    ) -> SyncStats:
        """Index a named dataset's split (cifar10, cifar100, ...), downloading it when possible."""
        return self._add_read_dataset(name, dataset_items(name, split, _path(data_dir), _path(captions)), **kwargs)

    @classmethod
    def from_dataset(
        cls,
        dataset: str,
        split: str = "test",
        data_dir: str | Path | None = None,
        captions: str | Path | None = None,
        *,
        name: str | None = None,
        root: Path | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        encoder: EncoderLike | None = None,
        encoder_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[Index, SyncStats]:
        """`create(name or dataset)` + `add_dataset(dataset, ...)`; a dataset that cannot be read leaves no index."""
        read = dataset_items(dataset, split, _path(data_dir), _path(captions))
        index = cls.create(name or dataset, root, model, pretrained, encoder, encoder_options=encoder_options)
        return index, index._add_read_dataset(dataset, read, **kwargs)

    def _add_read_dataset(self, dataset: str, read: tuple[list[Item], list[str]], **kwargs: Any) -> SyncStats:
        items, self.problems = read
        return self.add_items(items, dataset, mark_missing=False, **kwargs)

    def prune(self) -> int:
        """Remove rows marked deleted (files gone from disk) for good."""
        with self.store.writer_lock():
            version_before = self.store.version()
            gone = self._prune()
            self.manifest = self._derived.update([], gone, version_before)
        return len(gone)

    def _prune(self) -> list[int]:
        """Delete the rows marked deleted and their captions; returns their keys."""
        gone = self.store.scan(IMAGES, ["id", "key"], DELETED_ROWS)
        for clause in sql_in_chunks("image_id", gone.column("id").to_pylist()):
            self.store.delete(CAPTIONS, clause)
        if gone.num_rows:
            self.store.delete(IMAGES, DELETED_ROWS)
        return gone.column("key").to_pylist()

    # -- the FAISS index ---------------------------------------------------------
    @property
    def faiss_path(self) -> Path:
        return self._derived.ann.path

    def rebuild_derived(self) -> faiss.Index:
        """Build the FAISS file and the rows file from the table (the source of truth); the manifest vouches for them."""
        self.manifest = self._derived.rebuild()
        return self.ann_index

    @property
    def ann_index(self) -> faiss.Index:
        """The FAISS index for the table as it is now (AnnFile.current: reloaded or rebuilt as needed)."""
        index, manifest = self._derived.ann.current()
        self.manifest = manifest or self.manifest
        return index

    def write_labels(
        self,
        score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        class_names: Sequence[str],
        label_column: str,
        score_column: str,
        constants: dict[str, str],
        on_batch: Callable[[int], None] | None = None,
        batch_size: int = LABEL_BATCH,
    ) -> dict[str, int]:
        """Label every live image: `score(vectors) -> (class index, score)` per row, written to `label_column`/
        `score_column` (plus constant columns), streamed in bounded memory; only label columns change, so the
        FAISS file stays valid. Returns counts per class, most frequent first."""
        with self.store.writer_lock():
            class_of_row = self.store.label_rows(
                IMAGES, LIVE_ROWS, score, class_names, label_column, score_column, constants, on_batch, batch_size
            )
            self.store.compact()
            # Only label columns changed: the vectors, hence the FAISS file, are still current.
            ann_info = dict(self.manifest["ann"] or {})
            if ann_info.get("table_version") is not None:
                ann_info["table_version"] = self._derived.ann.restamp(ann_info["table_version"])
            self.store.update_manifest(ann=ann_info, **self.store.counts_record())
            self.manifest = self._derived.rows.rebuild()  # every labelled row changed
        per_class = np.bincount(class_of_row, minlength=len(class_names))
        return {str(class_names[c]): int(per_class[c]) for c in np.argsort(-per_class, kind="stable")}

    # -- reading -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Live images, deleted images, skipped files, captions: as the last write recorded them when the
        tables are still at the versions it counted (no table opened: fast), else counted now."""
        return self.store.recorded_counts() or self.store.counts()

    def rows(
        self, where: str | None = None, columns: Sequence[str] | None = None, include_deleted: bool = False
    ) -> pa.Table:
        live = where if include_deleted else " AND ".join(f"({c})" for c in (where, LIVE_ROWS) if c)
        return self.store.scan(IMAGES, columns, live)

    def live_count(self) -> int:
        """How many images the index holds (rows not marked deleted)."""
        return self.store.count(IMAGES, LIVE_ROWS)

    def vector_of(self, image_id: str) -> np.ndarray:
        """The unit vector stored for one live image (exact, and needs no model)."""
        table = self.rows(f"id = {sql_quote(image_id)}", ["vector"])
        if table.num_rows == 0:
            raise ClipsearchError(f"no image {image_id!r} in index '{self.name}'")
        return vectors_of(table)[0]

    def row_of(self, image_id: str) -> dict[str, Any] | None:
        """The stored row of one live image without its vector, or None when no live image has this id."""
        rows = self.rows(f"id = {sql_quote(image_id)}").drop_columns(["vector"]).to_pylist()
        return rows[0] if rows else None

    def captions_of(self, image_ids: Sequence[str]) -> pa.Table:
        """The stored captions of these images (image_id, caption_index, caption, vector),
        ordered by image id, then caption index."""
        columns = ["image_id", "caption_index", "caption", "vector"]
        tables = [self.store.scan(CAPTIONS, columns, clause) for clause in sql_in_chunks("image_id", image_ids)]
        table = pa.concat_tables(tables) if tables else captions_schema(int(self.manifest["dim"])).empty_table()
        return table.sort_by([("image_id", "ascending"), ("caption_index", "ascending")])

    def split_rows(self, split: str, columns: Sequence[str]) -> pa.Table:
        """Live rows of a split (`all`: every split), refused with the existing splits when empty."""
        rows = self.rows(None if split == "all" else f"split = {sql_quote(split)}", columns)
        if rows.num_rows == 0:
            splits = sorted({s for s in self.rows(columns=["split"]).column("split").to_pylist() if s})
            raise ClipsearchError(
                f"index '{self.name}' has no images in split {split!r} (splits: {', '.join(splits) or 'none'}; "
                "split 'all' takes every image)"
            )
        return rows

    def vectors(self, where: str | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, unit vectors) of the live rows matching a filter, in table order."""
        table = self.rows(where, ["id", "vector"])
        return table.column("id").to_pylist(), vectors_of(table)

    def skipped(self) -> list[dict[str, Any]]:
        return self.store.scan(SKIPPED).to_pylist()

    def info(self) -> dict[str, Any]:
        faiss_bytes = self.faiss_path.stat().st_size if self.faiss_path.is_file() else 0
        return {
            "name": self.name,
            "path": str(self.store.path),
            "model": self.spec.to_dict(),
            "model_id": self.spec.identity(),
            "dim": self.manifest["dim"],
            "preprocessing": self.manifest.get("preprocessing"),
            "encoder": self.manifest.get("encoder"),
            "counts": self.counts(),
            "ann": self.manifest.get("ann"),
            "sources": self.manifest.get("sources", []),
            "exclude": self.manifest.get("exclude", []),
            "table_version": self.store.version(),
            "disk_bytes": self.store.disk_bytes(),
            "faiss_bytes": faiss_bytes,
            "created": self.manifest.get("created"),
            "updated": self.manifest.get("updated"),
        }

    # -- searching ----------------------------------------------------------------
    def query_vector(self, query: str | Sequence[str] | None = None, image: Any = None) -> np.ndarray:
        images = [] if image is None else (list(image) if isinstance(image, (list, tuple)) else [image])
        terms = parse_query(query, images)  # before the model loads: a bad query fails fast
        return embed_query(self.encoder, terms)

    def search(
        self,
        query: str | Sequence[str] | None = None,
        *,
        image: str | Path | Image.Image | Sequence[Any] | None = None,
        vector: np.ndarray | None = None,
        k: int = 10,
        where: str | None = None,
        threshold: float | None = None,
    ) -> list[Hit]:
        """Nearest images to a text/image query (weighted `+`/`-` terms) or a given unit vector."""
        check_k(k)
        index = self.ann_index
        # The filter runs before the query is embedded: a mistake in it fails fast, without loading the model.
        allowed = self.rows(where, ["key", "vector"] if not ann.is_exact(index) else ["key"]) if where else None
        query_vector = self.query_vector(query, image) if vector is None else np.asarray(vector, np.float32)
        found = nearest_keys(index, query_vector, k, allowed, threshold)
        return image_hits(self._derived.rows_of_keys([key for _, key in found]) if found else None, found)

    def search_captions(
        self,
        query: str | Sequence[str] | None = None,
        *,
        image: Any = None,
        vector: np.ndarray | None = None,
        k: int = 10,
    ) -> list[Hit]:
        """Nearest stored captions (image → text when the query is an image), scored exactly."""
        check_k(k)
        query_vector = self.query_vector(query, image) if vector is None else np.asarray(vector, np.float32)
        table = self.store.scan(CAPTIONS, ["image_id", "caption_index", "caption", "vector"])
        if table.num_rows == 0:
            raise ClipsearchError(f"index '{self.name}' has no captions (index a captioned folder or dataset)")
        return caption_hits(table, query_vector, k)


def _path(path: str | Path | None) -> Path | None:
    return Path(path).expanduser() if path else None
