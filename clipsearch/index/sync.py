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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..model.interface import EncoderLike
from ..present.progress import counting_bar
from ..sources.items import Item
from .engines import Engine, LocalEngine
from .plan import STORED_COLUMNS, Plan, plan_sync, skip_row
from .schema import SKIPPED_SCHEMA, captions_schema, images_schema, rows_to_table, vectors_of
from .store import CAPTIONS, IMAGES, SKIPPED, Store, sql_in, sql_quote

WRITE_BATCH = 1024  # rows per LanceDB commit: bounded memory, few fragments
# DataLoader workers are forked; they only decode pixels and never touch LanceDB,
# whose at-fork warning is therefore moot here.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

# Returns the index's encoder, loading the model on the first call.
EncoderLoader = Callable[[], EncoderLike]
_SKIP_COLUMNS = ["id", "size", "mtime", "reason"]


@dataclass
class SyncStats:
    """What one indexing run did; the summary table and `--json` show these."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0  # includes the touched ones
    touched: int = 0  # new mtime or size, same content hash: the vector was kept
    moved: int = 0  # files whose old path is gone, found again by content hash: the vector moved with them
    copied: int = 0  # byte-identical copies of a stored file: its vector reused
    deleted: int = 0  # files gone from disk
    excluded: int = 0  # stored files now left out by --exclude (marked deleted, like files gone)
    skipped: int = 0  # unreadable files, this run's and earlier runs' (`skipped_reasons` lists each)
    encoded: int = 0
    engine: str = "local"  # where images were encoded: local, ray
    actors: int = 0  # the engine's encoder actors (local: none, the encoder runs in this process)
    captions: int = 0
    seconds: float = 0.0  # what the summary reports: the run, or since process start (`from_process_start`)
    sync_seconds: float = 0.0  # the sync alone: planning, encoding, writing
    skipped_reasons: list[tuple[str, str]] = field(default_factory=list)
    written_keys: list[int] = field(default_factory=list)  # keys whose vector was (re)written: for the ANN update
    changed_keys: list[int] = field(default_factory=list)  # rows changed or removed otherwise: for the rows file

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def from_process_start(self) -> SyncStats:
        """Report the wall time since this process started (start-up, imports, model load included),
        as a command's user waited it; the sync alone stays in `sync_seconds`."""
        self.seconds = max(self.seconds, process_seconds())
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("skipped_reasons")
        data.pop("written_keys")
        data.pop("changed_keys")
        data["images_per_s"] = round(self.images_per_s, 2)
        return data


_IMPORTED_AT = time.time()


def process_seconds() -> float:
    """Seconds since this process started (Linux: /proc, 10 ms resolution; elsewhere: since this module loaded)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT


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
    engine: Engine | None = None,
    excluded: Callable[[str], bool] | None = None,
    stored: pa.Table | None = None,
) -> SyncStats:
    """Make the index hold exactly `items` for `source`: encode what is new or changed.
    `load_encoder()` is called only when something must be encoded; `excluded(id)`: whether a stored
    row missing from `items` was left out on purpose (counted as excluded, not deleted); `stored`: the
    table's rows without vectors when the caller has them (the rows file), else they are read."""
    started = time.perf_counter()
    stats = SyncStats()
    engine = engine or LocalEngine(workers)  # the local engine unless a command chose another
    stats.engine, stats.actors = engine.name, engine.actors
    skipped: list[dict[str, Any]] = []
    skips = _known_skips(store, source)
    stored = stored.select(STORED_COLUMNS) if stored is not None else store.scan(IMAGES, STORED_COLUMNS)
    plan = plan_sync(stored, skips, items, source, skipped, mark_missing)
    target = _Target(store, dim, load_encoder)
    stats.changed_keys = plan.changed_keys

    # Cheap changes first (no pixels decoded); each is one atomic LanceDB commit.
    if plan.delete_ids or plan.broken_ids:
        _mark_deleted(store, plan.delete_ids + plan.broken_ids)
    if plan.reuse:
        stats.captions += _reuse_vectors(target, plan)
        stats.written_keys += [new_key for _, _, new_key in plan.reuse]
    if plan.relabel or plan.touched:
        changed = {item.id: item for item in [*plan.touched, *plan.relabel]}.values()
        rows = rows_to_table([_annotations(i) for i in changed], _annotation_schema(target.schema))
        store.update_columns(IMAGES, rows)
        stats.captions += _write_captions(target, plan.relabel)
    stats.unchanged, stats.touched = plan.unchanged, len(plan.touched)
    _count_reuse_and_deletes(stats, plan, excluded)
    if plan.encode:
        _encode_and_write(target, plan, batch_size, engine, show_progress, stats, skipped)
    stats.new += sum(old == new for _, old, new in plan.reuse) - stats.moved  # a file back at its old path
    still = set(plan.still_skipped)
    stats.skipped_reasons = [
        *((r["id"], r["reason"]) for r in skips.select(["id", "reason"]).to_pylist() if r["id"] in still),
        *((row["id"], row["reason"]) for row in skipped),
    ]
    stats.skipped = len(stats.skipped_reasons)
    # The skipped table keeps this source's unchanged failures and this run's new ones.
    if skips.num_rows > len(still):  # (a delete commits a new version even when it matches nothing)
        stale = f"source = {sql_quote(source)}" + (f" AND NOT ({sql_in('id', plan.still_skipped)})" if still else "")
        store.delete(SKIPPED, stale)
    store.add(SKIPPED, rows_to_table(skipped, SKIPPED_SCHEMA))
    stats.seconds = stats.sync_seconds = time.perf_counter() - started
    return stats


def _known_skips(store: Store, source: str) -> pa.Table:
    """This source's rows of the skipped table (id, size, mtime, reason); none read when the recorded
    counts (current for these table versions) say the table is empty."""
    counts = store.recorded_counts()
    if counts is not None and counts.get("skipped") == 0:
        return SKIPPED_SCHEMA.empty_table().select(_SKIP_COLUMNS)
    return store.scan(SKIPPED, _SKIP_COLUMNS, f"source = {sql_quote(source)}")


def _count_reuse_and_deletes(stats: SyncStats, plan: Plan, excluded: Callable[[str], bool] | None) -> None:
    """Moves (the old row is taken over), copies (a new key shares a stored vector), files gone, files excluded."""
    stats.moved = len(plan.replaced_ids)
    stats.copied = sum(old != new for _, old, new in plan.reuse)
    stats.excluded = sum(map(excluded, plan.delete_ids)) if excluded else 0
    stats.deleted = len(plan.delete_ids) - stats.excluded


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
    engine: Engine,
    show_progress: bool,
    stats: SyncStats,
    skipped: list[dict[str, Any]],
) -> None:
    encoder = target.load_encoder()
    pending_rows: list[dict[str, Any]] = []
    pending_items: list[Item] = []

    def flush() -> None:
        stats.captions += _write_images(target, pending_rows, pending_items)
        stats.encoded += len(pending_rows)
        stats.written_keys += [row["key"] for row in pending_rows]
        stats.updated += sum(item.id in plan.updated_ids for item in pending_items)
        pending_rows.clear()
        pending_items.clear()

    with counting_bar(engine.label(), len(plan.encode), show_progress, unit="img") as advance:
        for batch in engine.encoded_batches(plan.encode, encoder, batch_size):
            for i, vector, size, error in batch:
                item = plan.encode[i]
                if error is not None:
                    skipped.append(skip_row(item, error))
                    continue
                pending_rows.append(_row(item, plan.keys[item.id], vector, *size))
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


# What can change without the pixels (mtime and size: a touched file with the same content).
_ANNOTATION_COLUMNS = ("id", "split", "label", "label_name", "captions", "mtime", "size")


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
