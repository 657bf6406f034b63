"""The importable surface: `Index` creates/opens an index folder, adds images, searches.

    from clipsearch import Index
    index = Index.create("photos", model="ViT-B-32")
    index.add_folder("~/Pictures")
    for hit in index.search("a dog in the snow", k=5):
        print(hit.score, hit.uri)

The CLI and the TUI are thin shells over this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np
import pyarrow as pa
from PIL import Image

from . import ann
from ..model.encoder import Encoder
from ..model.spec import ModelSpec
from ..errors import ClipsearchError
from .sync import SyncStats, sync_items
from .query import Hit, check_k, embed_query, parse_query, top_k_exact
from ..sources.annotations import annotate_folder_items
from ..sources.datasets import dataset_items
from ..sources.folder import scan_folder
from ..sources.items import Item
from .store import CAPTIONS, IMAGES, SKIPPED, Store, sql_in, sql_quote, vectors_of

FAISS_FILE = "images.faiss"
LABEL_BATCH = 8192  # rows scored and written per batch by write_labels
ACTIVE = "deleted = false"


def _and(*clauses: str | None) -> str:
    return " AND ".join(f"({c})" for c in clauses if c)


class _EncoderOnDemand:
    """Stands in for an index's encoder during a sync and loads the model only when something
    must be encoded: re-indexing an unchanged folder then needs no model at all."""

    def __init__(self, index: "Index"):
        self._index = index
        self.spec = index.spec
        self.dim = int(index.manifest["dim"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index.encoder, name)


class Index:
    """One index folder: LanceDB tables + FAISS file + manifest."""

    def __init__(self, store: Store, encoder: Encoder | None = None):
        self.store = store
        self.manifest = store.read_manifest()
        self.spec = ModelSpec.from_dict(self.manifest["model"])
        self._encoder = encoder
        self._ann: faiss.Index | None = None
        self.problems: list[str] = []  # what the last add_* could not read in annotation files

    # -- opening ---------------------------------------------------------------
    @classmethod
    def create(
        cls, name: str, root: Path | None = None, model: str | None = None, pretrained: str | None = None,
        encoder: Encoder | None = None,
    ) -> "Index":
        """A new empty index (an existing one with the same model is opened instead)."""
        path = Store.folder(name, root)
        if Store.exists(path):
            index = cls.open(name, root, encoder=encoder)
            if model or pretrained:  # no model named: the index's own
                index.check_model(ModelSpec.resolve(model or index.spec.arch, pretrained))
            return index
        spec = encoder.spec if encoder else ModelSpec.resolve(model, pretrained)
        encoder = encoder or Encoder(spec)
        manifest = {
            "name": name, "model": spec.to_dict(), "model_id": spec.identity(), "dim": encoder.dim,
            "preprocessing": encoder.preprocessing(), "ann": None, "counts": {}, "sources": [],
        }
        return cls(Store.create(path, manifest), encoder)

    @classmethod
    def open(cls, name: str, root: Path | None = None, encoder: Encoder | None = None) -> "Index":
        path = Store.folder(name, root)
        if not Store.exists(path):
            raise ClipsearchError(f"unknown index '{name}' in {path.parent} (see 'clipsearch list')")
        index = cls(Store.open(path))
        if encoder is not None:
            index.check_model(encoder.spec)
            index._encoder = encoder
        return index

    @property
    def name(self) -> str:
        return self.store.path.name

    def check_model(self, spec: ModelSpec) -> None:
        """Vectors of different models live in different spaces: refuse to mix them."""
        if spec.identity() != self.spec.identity():
            raise ClipsearchError(
                f"index '{self.name}' was built with {self.spec.identity()}, not {spec.identity()}; "
                f"query it with its own model (omit --model/--pretrained) or build a new index"
            )

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder(self.spec)
        return self._encoder

    # -- adding images -----------------------------------------------------------
    def add_items(self, items: Sequence[Item], source: str, *, batch_size: int = 64, workers: int | None = None,
                  progress: bool = True, prune: bool = False, mark_missing: bool = True) -> SyncStats:
        """Add or update `items`, encoding only what changed; with `mark_missing`, rows of
        `source` absent from `items` are marked deleted (a folder scan sees every file)."""
        with self.store.writer_lock():
            encoder = self._encoder or _EncoderOnDemand(self)
            stats = sync_items(self.store, encoder, items, source, batch_size=batch_size, workers=workers,
                               show_progress=progress, mark_missing=mark_missing)
            sources = sorted(set(self.manifest.get("sources", [])) | {source})
            self.manifest = self.store.update_manifest(sources=sources)
            if prune:
                self._prune()
            self.store.compact()
            self.rebuild_ann()
        return stats

    def add_folder(self, folder: str | Path, exclude: Sequence[str] = (), captions: str | Path | None = None,
                   **kwargs: Any) -> SyncStats:
        """Index every image under `folder` (captions/labels from a sidecar file when present)."""
        folder = Path(folder).expanduser()
        items = scan_folder(folder, exclude)
        source = str(folder.resolve())
        others = [s for s in self.manifest.get("sources", []) if s.startswith("/") and s != source]
        if others:
            raise ClipsearchError(f"index '{self.name}' already holds folder {others[0]}; use another --name for {source}")
        self.problems = annotate_folder_items(folder.resolve(), items, Path(captions) if captions else None)
        return self.add_items(items, source, **kwargs)

    def add_dataset(self, name: str, split: str = "test", data_dir: str | Path | None = None,
                    captions: str | Path | None = None, **kwargs: Any) -> SyncStats:
        """Index a named dataset's split (cifar10, cifar100, ...), downloading it when possible."""
        items, self.problems = dataset_items(name, split, Path(data_dir).expanduser() if data_dir else None,
                                             Path(captions).expanduser() if captions else None)
        return self.add_items(items, name, mark_missing=False, **kwargs)

    def prune(self) -> int:
        """Remove rows marked deleted (files gone from disk) for good."""
        with self.store.writer_lock():
            removed = self._prune()
            self.store.compact()
            self.rebuild_ann()
        return removed

    def _prune(self) -> int:
        gone = self.store.scan(IMAGES, ["id"], "deleted = true").column("id").to_pylist()
        if gone:
            self.store.delete(CAPTIONS, sql_in("image_id", gone))
            self.store.delete(IMAGES, "deleted = true")
        return len(gone)

    # -- the FAISS index ---------------------------------------------------------
    @property
    def faiss_path(self) -> Path:
        return self.store.path / FAISS_FILE

    def rebuild_ann(self) -> faiss.Index:
        """Build the FAISS file from the table (the source of truth) and record its version."""
        table = self.store.scan(IMAGES, ["key", "vector"], ACTIVE)
        index, info = ann.build(table.column("key").to_numpy(), vectors_of(table)) if table.num_rows else (
            faiss.IndexIDMap2(faiss.IndexFlatIP(int(self.manifest["dim"]))), ann.AnnInfo("flat", "IDMap2,Flat", 0, 1.0))
        ann.save(index, self.faiss_path)
        self._ann = index
        self.manifest = self.store.update_manifest(
            ann={**info.to_dict(), "file": FAISS_FILE, "table_version": self.store.version()}, counts=self.counts()
        )
        return index

    def annotations_changed(self) -> None:
        """After writing label columns only: the vectors, hence the FAISS file, are still current."""
        ann_info = dict(self.manifest["ann"] or {})
        if ann_info.get("table_version") is not None:
            ann_info["table_version"] = self.store.version()
        self.manifest = self.store.update_manifest(ann=ann_info, counts=self.counts())

    @property
    def ann_index(self) -> faiss.Index:
        """The FAISS index, rebuilt when it is missing or was built from another table version."""
        if self._ann is None:
            info = self.manifest.get("ann") or {}
            if self.faiss_path.is_file() and info.get("table_version") == self.store.version():
                self._ann = ann.load(self.faiss_path)
            else:
                self._ann = self.rebuild_ann()
        return self._ann

    def write_labels(
        self, score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
        label_column: str, score_column: str, constants: dict[str, str], on_batch: Callable[[int], None] | None = None,
        batch_size: int = LABEL_BATCH,
    ) -> dict[str, int]:
        """Label every live image: `score(vectors) -> (class index, score)` per row, written to
        `label_column`/`score_column` (plus constant columns). Streams, so memory stays bounded;
        only label columns change, so the FAISS file stays valid. Returns counts per class,
        most frequent first."""
        ids: list[str] = []
        classes, scores = [], []
        with self.store.writer_lock():
            for batch in self.store.images.search().where(ACTIVE).select(["id", "vector"]).limit(None).to_batches(batch_size):
                table = pa.Table.from_batches([batch])
                best_class, best_score = score(vectors_of(table))
                ids += table.column("id").to_pylist()
                classes.append(np.asarray(best_class, np.int64))
                scores.append(np.asarray(best_score, np.float32))
                if on_batch:
                    on_batch(table.num_rows)
            # Written after the scan, never into the snapshot being read.
            class_of_row = np.concatenate(classes) if classes else np.zeros(0, np.int64)
            score_of_row = np.concatenate(scores) if scores else np.zeros(0, np.float32)
            names = np.asarray(class_names, dtype=object)
            for start in range(0, len(ids), batch_size):
                chunk = slice(start, start + batch_size)
                n = len(ids[chunk])
                self.store.update_columns(IMAGES, pa.table({
                    "id": pa.array(ids[chunk], pa.string()),
                    label_column: pa.array(names[class_of_row[chunk]].tolist(), pa.string()),
                    score_column: pa.array(score_of_row[chunk], pa.float32()),
                    **{column: pa.array([value] * n, pa.string()) for column, value in constants.items()},
                }))
            self.store.compact()
            self.annotations_changed()
        per_class = np.bincount(class_of_row, minlength=len(class_names))
        return {str(class_names[c]): int(per_class[c]) for c in np.argsort(-per_class, kind="stable")}

    # -- reading -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {
            "images": self.store.count(IMAGES, ACTIVE),
            "deleted": self.store.count(IMAGES, "deleted = true"),
            "skipped": self.store.count(SKIPPED),
            "captions": self.store.count(CAPTIONS),
        }

    def rows(self, where: str | None = None, columns: Sequence[str] | None = None, include_deleted: bool = False) -> pa.Table:
        return self.store.scan(IMAGES, columns, where if include_deleted else _and(where, ACTIVE))

    def split_rows(self, split: str, columns: Sequence[str]) -> pa.Table:
        """Live rows of a split (`all`: every split), refused with the existing splits when empty."""
        rows = self.rows(None if split == "all" else f"split = {sql_quote(split)}", columns)
        if rows.num_rows == 0:
            splits = sorted({s for s in self.rows(columns=["split"]).column("split").to_pylist() if s})
            raise ClipsearchError(
                f"index '{self.name}' has no images in split {split!r} (splits: {', '.join(splits) or 'none'}; "
                "--split all takes every image)"
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
            "name": self.name, "path": str(self.store.path), "model": self.spec.to_dict(), "model_id": self.spec.identity(),
            "dim": self.manifest["dim"], "preprocessing": self.manifest.get("preprocessing"), "counts": self.counts(),
            "ann": self.manifest.get("ann"), "sources": self.manifest.get("sources", []),
            "table_version": self.store.version(), "disk_bytes": self.store.disk_bytes(), "faiss_bytes": faiss_bytes,
            "created": self.manifest.get("created"), "updated": self.manifest.get("updated"),
        }

    # -- searching ----------------------------------------------------------------
    def query_vector(self, query: str | Sequence[str] | None = None, image: Any = None) -> np.ndarray:
        images = [] if image is None else (list(image) if isinstance(image, (list, tuple)) else [image])
        terms = parse_query(query, images)  # before the model loads: a bad query fails fast
        return embed_query(self.encoder, terms)

    def search(
        self, query: str | Sequence[str] | None = None, *, image: str | Path | Image.Image | Sequence[Any] | None = None,
        vector: np.ndarray | None = None, k: int = 10, where: str | None = None, threshold: float | None = None,
    ) -> list[Hit]:
        """Nearest images to a text/image query (weighted `+`/`-` terms) or a given unit vector."""
        check_k(k)
        index = self.ann_index
        # The filter runs before the query is embedded: a mistake in it fails fast, without loading the model.
        allowed = self.rows(where, ["key", "vector"] if not ann.is_exact(index) else ["key"]) if where else None
        query_vector = self.query_vector(query, image) if vector is None else np.asarray(vector, np.float32)
        if allowed is not None:
            keys_allowed = allowed.column("key").to_numpy()
            if ann.is_exact(index):
                scores, keys = ann.search(index, query_vector[None, :], k, allowed_keys=keys_allowed)
                scores, keys = scores[0], keys[0]
            else:
                scores, keys = top_k_exact(query_vector, keys_allowed, vectors_of(allowed), k)
        else:
            scores, keys = ann.search(index, query_vector[None, :], k)
            scores, keys = scores[0], keys[0]
        found = [(float(s), int(key)) for s, key in zip(scores, keys) if key >= 0 and (threshold is None or s >= threshold)]
        if not found:
            return []
        columns = [f.name for f in self.store.images.schema if f.name != "vector"]
        rows = {row["key"]: row for row in self.store.scan(IMAGES, columns, sql_in("key", [key for _, key in found])).to_pylist()}
        return [Hit(rank, score, rows[key]) for rank, (score, key) in enumerate(found, 1) if key in rows]

    def search_captions(
        self, query: str | Sequence[str] | None = None, *, image: Any = None, vector: np.ndarray | None = None, k: int = 10,
    ) -> list[Hit]:
        """Nearest stored captions (image → text when the query is an image), scored exactly."""
        check_k(k)
        query_vector = self.query_vector(query, image) if vector is None else np.asarray(vector, np.float32)
        table = self.store.scan(CAPTIONS, ["image_id", "caption_index", "caption", "vector"])
        if table.num_rows == 0:
            raise ClipsearchError(f"index '{self.name}' has no captions (index a captioned folder or dataset)")
        scores, rows = top_k_exact(query_vector, np.arange(table.num_rows), vectors_of(table), k)
        meta = table.drop_columns(["vector"]).take(pa.array(rows)).to_pylist()
        return [Hit(rank, float(score), row) for rank, (score, row) in enumerate(zip(scores, meta), 1)]

    # -- tasks over the index (the same functions the CLI runs) -----------------------
    def classify(self, labels: str, templates: str | None = None) -> dict[str, int]:
        """Zero-shot label every image (zs_label/zs_score columns); returns counts per class."""
        from ..tasks.prompts import default_templates
        from ..tasks.zeroshot import classify_index, prototypes_for

        names, prototypes = prototypes_for(self.encoder, labels, templates or default_templates(labels))
        return classify_index(self, names, prototypes, labels).counts

    def evaluate_zero_shot(self, labels: str | None = None, templates: Sequence[str] | None = None,
                           split: str = "test") -> dict[str, Any]:
        """Top-1/top-5/mean per-class recall/per-class accuracy of zero-shot on a labelled split."""
        from ..tasks.zeroshot_eval import evaluate_zero_shot

        return evaluate_zero_shot(self, labels, templates, split)[0]

    def evaluate_retrieval(self, split: str = "test", ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
        """Text→image and image→text recall@k, mean and median rank on a captioned split."""
        from ..tasks.retrieval import evaluate_retrieval

        return evaluate_retrieval(self, split, ks)[0]
