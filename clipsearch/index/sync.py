"""Bring an index up to date with a list of Items: plan what changed, encode only that,
stream the writes, record what could not be read.

Any source (a folder scan, CIFAR, a caption dataset) goes through `sync_items`. The model is
asked for (`load_encoder()`) only when pixels or captions must be encoded, and torch (the
DataLoader that decodes in worker processes) is imported only then: re-indexing an unchanged
folder loads neither.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..files import file_digest
from ..model.interface import EncoderLike
from ..present.progress import counting_bar
from ..sources.images import ImageDecodeError, open_uri
from ..sources.items import Item
from .store import (
    CAPTIONS,
    IMAGES,
    SKIPPED,
    SKIPPED_SCHEMA,
    Store,
    captions_schema,
    images_schema,
    rows_to_table,
    sql_in,
    sql_quote,
    vectors_of,
)

WRITE_BATCH = 1024  # rows per LanceDB commit: bounded memory, few fragments
# DataLoader workers are forked; they only decode pixels and never touch LanceDB,
# whose at-fork warning is therefore moot here.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

# Returns the index's encoder, loading the model on the first call.
EncoderLoader = Callable[[], EncoderLike]


@dataclass
class SyncStats:
    """What one indexing run did; the summary table and `--json` show these."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0  # moved or copied files whose vector was reused (found by content hash)
    deleted: int = 0
    skipped: int = 0
    encoded: int = 0
    captions: int = 0
    seconds: float = 0.0
    skipped_reasons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("skipped_reasons")
        data["images_per_s"] = round(self.images_per_s, 2)
        return data


@dataclass
class Plan:
    encode: list[Item] = field(default_factory=list)  # new or changed pixels
    updated_ids: set[str] = field(default_factory=set)  # the encodes that replace a row
    reuse: list[tuple[Item, int, int]] = field(default_factory=list)  # (item, vector's key, new key)
    relabel: list[Item] = field(default_factory=list)  # same pixels, new annotations
    delete_ids: list[str] = field(default_factory=list)  # rows of this source gone from disk
    replaced_ids: list[str] = field(default_factory=list)  # rows taken over by a move
    keys: dict[str, int] = field(default_factory=dict)  # item id -> key
    unchanged: int = 0
    still_skipped: list[str] = field(default_factory=list)  # unchanged files that failed before


def _fill_hashes(items: Sequence[Item], skipped: list[dict[str, Any]]) -> list[Item]:
    """Content hashes for files (threads: hashlib releases the GIL); unreadable files become skips."""
    todo = [item for item in items if item.content_hash is None]

    def one(item: Item) -> str | None:
        try:
            return file_digest(item.uri)
        except OSError as err:
            skipped.append(_skip_row(item, f"unreadable: {err.strerror or err}"))
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        for item, digest in zip(todo, pool.map(one, todo)):
            item.content_hash = digest
    return [item for item in items if item.content_hash is not None]


def _skip_row(item: Item, reason: str) -> dict[str, Any]:
    return dict(id=item.id, uri=item.uri, source=item.source, reason=reason, size=item.size, mtime=item.mtime)


_PLAN_COLUMNS = ["id", "key", "size", "mtime", "content_hash", "deleted", "source", "split", "label", "label_name"]


def plan_sync(
    store: Store, items: Sequence[Item], source: str, skipped: list[dict[str, Any]], mark_missing: bool = True
) -> Plan:
    """What to do for each item: keep (maybe relabel), re-encode, reuse a vector by content hash,
    or encode new; and which rows of `source` are gone."""
    plan = Plan()
    rows = {row["id"]: row for row in store.scan(IMAGES, [*_PLAN_COLUMNS, "captions"]).to_pylist()}
    known_skips = {
        (r["id"], r["size"], r["mtime"])
        for r in store.scan(SKIPPED, ["id", "size", "mtime"], f"source = {sql_quote(source)}").to_pylist()
    }
    seen = {item.id for item in items}
    needs_hash: list[Item] = []
    for item in items:
        row = rows.get(item.id)
        if (item.id, item.size, item.mtime) in known_skips:
            plan.still_skipped.append(item.id)
        elif row is not None and not row["deleted"] and row["size"] == item.size and row["mtime"] == item.mtime:
            plan.keys[item.id] = row["key"]
            plan.unchanged += 1
            stored = (row["split"], row["label"], row["label_name"], tuple(row["captions"] or ()))
            if stored != item.metadata():
                plan.relabel.append(item)
        elif row is not None and not row["deleted"]:
            plan.keys[item.id] = row["key"]  # changed pixels keep their key
            plan.encode.append(item)
            plan.updated_ids.add(item.id)
        else:
            needs_hash.append(item)
    if needs_hash:
        _plan_by_content(plan, rows, _fill_hashes(needs_hash, skipped), source, seen, mark_missing)
    replaced = set(plan.replaced_ids)
    plan.delete_ids = [
        row["id"]
        for row in rows.values()
        if mark_missing
        and row["source"] == source
        and not row["deleted"]
        and row["id"] not in seen
        and row["id"] not in replaced
    ]
    return plan


def _plan_by_content(
    plan: Plan,
    rows: dict[str, dict[str, Any]],
    hashed: Sequence[Item],
    source: str,
    seen: set[str],
    mark_missing: bool,
) -> None:
    """New (or returning) files: a moved or copied file reuses the vector of a row with its content hash."""
    by_hash: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        if row["content_hash"]:
            # Prefer a row that is gone (a move) over one still on disk (a copy).
            gone = row["deleted"] or (mark_missing and row["source"] == source and row["id"] not in seen)
            if gone or row["content_hash"] not in by_hash:
                by_hash[row["content_hash"]] = {**row, "gone": gone}
    next_key = max((row["key"] for row in rows.values()), default=-1) + 1
    for item in hashed:
        twin = by_hash.get(item.content_hash)
        if twin is not None and twin["gone"] and twin["id"] != item.id:
            plan.keys[item.id] = twin["key"]
            plan.reuse.append((item, twin["key"], twin["key"]))
            plan.replaced_ids.append(twin["id"])
            twin["gone"] = False  # one move per old row; further twins are copies
            continue
        plan.keys[item.id] = rows[item.id]["key"] if item.id in rows else next_key
        next_key += item.id not in rows
        if twin is not None:
            plan.reuse.append((item, twin["key"], plan.keys[item.id]))
        else:
            plan.encode.append(item)


class _DecodeDataset:
    """Decode + preprocess in DataLoader workers (a map-style dataset: `len` and indexing);
    a bad file yields its reason, never an exception."""

    def __init__(self, items: Sequence[Item], preprocess: Callable, min_size: int):
        self.items, self.preprocess, self.min_size = items, preprocess, min_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, tuple[int, int] | None, str | None]:
        try:
            image = open_uri(self.items[index].uri, min_size=self.min_size)
            return index, self.preprocess(image), image.info.get("original_size", image.size), None
        except ImageDecodeError as err:
            return index, None, None, str(err)
        except Exception as err:  # a decoder bug on one file must not stop the run
            return index, None, None, f"decode failed: {type(err).__name__}: {err}".splitlines()[0]


def decoded_batches(items: Sequence[Item], encoder: EncoderLike, batch_size: int, workers: int) -> Iterable[list]:
    """Batches of (position in items, pixels or None, original size, error or None), decoded by workers."""
    from torch.utils.data import DataLoader  # heavy: only when something is encoded

    return DataLoader(
        _DecodeDataset(items, encoder.preprocess, encoder.image_size),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,  # a batch stays a list of tuples (failed decodes have no tensor)
        prefetch_factor=4 if workers else None,
        pin_memory=encoder.device.type == "cuda",
    )


def default_workers() -> int:
    # The cores this process may use (a container or taskset may allow fewer than the machine has);
    # one is left to the encoder.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return min(4, max(1, cores - 1))


@dataclass
class _Target:
    """Where a sync writes: the store, the vector width, and the encoder on demand."""

    store: Store
    dim: int
    load_encoder: EncoderLoader

    @property
    def schema(self) -> pa.Schema:
        return images_schema(self.dim)


def sync_items(
    store: Store,
    items: Sequence[Item],
    source: str,
    dim: int,
    load_encoder: EncoderLoader,
    batch_size: int = 64,
    workers: int | None = None,
    show_progress: bool = True,
    mark_missing: bool = True,
) -> SyncStats:
    """Make the index hold exactly `items` for `source`: encode what is new or changed.
    `load_encoder()` is called only when something must be encoded."""
    started = time.perf_counter()
    stats = SyncStats()
    skipped: list[dict[str, Any]] = []
    plan = plan_sync(store, items, source, skipped, mark_missing)
    target = _Target(store, dim, load_encoder)

    # Cheap changes first (no pixels decoded); each is one atomic LanceDB commit.
    if plan.delete_ids:
        _mark_deleted(store, plan.delete_ids)
    if plan.reuse:
        stats.captions += _reuse_vectors(target, plan)
    if plan.relabel:
        rows = rows_to_table([_annotations(i) for i in plan.relabel], _annotation_schema(target.schema))
        store.update_columns(IMAGES, rows)
        stats.captions += _write_captions(target, plan.relabel)
    stats.unchanged, stats.moved, stats.deleted = plan.unchanged, len(plan.reuse), len(plan.delete_ids)
    if plan.encode:
        _encode_and_write(target, plan, batch_size, workers, show_progress, stats, skipped)
    stats.skipped_reasons = [(row["id"], row["reason"]) for row in skipped]
    stats.skipped = len(plan.still_skipped) + len(skipped)
    # The skipped table keeps this source's unchanged failures and this run's new ones.
    stale = f"source = {sql_quote(source)}" + (
        f" AND NOT ({sql_in('id', plan.still_skipped)})" if plan.still_skipped else ""
    )
    store.delete(SKIPPED, stale)
    store.add(SKIPPED, rows_to_table(skipped, SKIPPED_SCHEMA))
    stats.seconds = time.perf_counter() - started
    return stats


def _reuse_vectors(target: _Target, plan: Plan) -> int:
    """Moved and copied files take the stored vector of their content twin; returns captions written."""
    store = target.store
    reused = store.scan(
        IMAGES, ["key", "vector", "width", "height"], sql_in("key", sorted({k for _, k, _ in plan.reuse}))
    )
    by_key = {
        key: (vec, w, h)
        for key, vec, w, h in zip(
            reused.column("key").to_pylist(),
            vectors_of(reused),
            reused.column("width").to_pylist(),
            reused.column("height").to_pylist(),
        )
    }
    if plan.replaced_ids:
        store.delete(IMAGES, sql_in("id", plan.replaced_ids))
        store.delete(CAPTIONS, sql_in("image_id", plan.replaced_ids))
    rows = [_row(item, new_key, *by_key[old_key]) for item, old_key, new_key in plan.reuse]
    return _write_images(target, rows, [item for item, _, _ in plan.reuse])


def _encode_and_write(
    target: _Target,
    plan: Plan,
    batch_size: int,
    workers: int | None,
    show_progress: bool,
    stats: SyncStats,
    skipped: list[dict[str, Any]],
) -> None:
    import torch  # heavy: only when pixels are encoded

    encoder = target.load_encoder()
    pending_rows: list[dict[str, Any]] = []
    pending_items: list[Item] = []

    def flush() -> None:
        stats.captions += _write_images(target, pending_rows, pending_items)
        stats.encoded += len(pending_rows)
        stats.updated += sum(item.id in plan.updated_ids for item in pending_items)
        pending_rows.clear()
        pending_items.clear()

    workers = default_workers() if workers is None else workers
    with counting_bar("encoding", len(plan.encode), show_progress, unit="img") as advance:
        for batch in decoded_batches(plan.encode, encoder, batch_size, workers):
            good = [(i, t, size) for i, t, size, err in batch if err is None]
            skipped.extend(_skip_row(plan.encode[i], err) for i, _, _, err in batch if err is not None)
            if good:
                vectors = encoder.encode_image_tensors(torch.stack([t for _, t, _ in good]))
                for (i, _, (width, height)), vector in zip(good, vectors):
                    item = plan.encode[i]
                    pending_rows.append(_row(item, plan.keys[item.id], vector, width, height))
                    pending_items.append(item)
            if len(pending_rows) >= WRITE_BATCH:
                flush()
            advance(len(batch))
        flush()
    stats.new = stats.encoded - stats.updated
    # A file that changed into something unreadable must not keep its old vector.
    broken = [row["id"] for row in skipped if row["id"] in plan.updated_ids]
    if broken:
        _mark_deleted(target.store, broken)


def _mark_deleted(store: Store, ids: list[str]) -> None:
    """Rows of files gone (or now unreadable): kept until --prune, but their captions go now,
    so that caption search never returns them either."""
    store.update(IMAGES, sql_in("id", ids), {"deleted": True})
    store.delete(CAPTIONS, sql_in("image_id", ids))


def _row(item: Item, key: int, vector: np.ndarray, width: int | None, height: int | None) -> dict[str, Any]:
    # Every Item field is a column of the same name.
    return {**vars(item), "key": key, "width": width, "height": height, "vector": vector, "deleted": False}


_ANNOTATION_COLUMNS = ("id", "split", "label", "label_name", "captions")  # what can change without the pixels


def _annotation_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([schema.field(name) for name in _ANNOTATION_COLUMNS])


def _annotations(item: Item) -> dict[str, Any]:
    return {name: getattr(item, name) for name in _ANNOTATION_COLUMNS}


def _write_images(target: _Target, rows: list[dict[str, Any]], items: Sequence[Item]) -> int:
    """Upsert image rows (merge on id) and their captions; returns the captions written."""
    if not rows:
        return 0
    target.store.upsert(IMAGES, rows_to_table(rows, target.schema))
    return _write_captions(target, [item for item in items if item.captions])


def _write_captions(target: _Target, items: Sequence[Item]) -> int:
    """Embed every caption of these images into the captions table (replacing old ones)."""
    if not items:
        return 0
    target.store.delete(CAPTIONS, sql_in("image_id", [item.id for item in items]))
    texts = [(item.id, index, text) for item in items for index, text in enumerate(item.captions)]
    if not texts:
        return 0
    vectors = target.load_encoder().encode_texts([text for _, _, text in texts])
    rows = [{"image_id": i, "caption_index": n, "caption": t, "vector": v} for (i, n, t), v in zip(texts, vectors)]
    target.store.add(CAPTIONS, rows_to_table(rows, captions_schema(target.dim)))
    return len(rows)
