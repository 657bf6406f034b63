"""What a sync must do, planned with Arrow and NumPy over the stored `id`, `key`, `size`,
`mtime`, `content_hash` columns: the unchanged majority of a large index is matched in
vectorised operations, never turned into one Python object per row; only the rows that
changed are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..files import file_digest
from ..sources.items import Item

_META_COLUMNS = ["split", "label", "label_name", "captions"]
# What a plan reads of the stored rows.
STORED_COLUMNS = ["id", "key", "size", "mtime", "content_hash", "deleted", "source", *_META_COLUMNS]
_CAPTION_SEP = "\x1f"  # joins a row's captions into one string for a vectorised comparison


@dataclass
class Plan:
    encode: list[Item] = field(default_factory=list)  # new or changed pixels
    updated_ids: set[str] = field(default_factory=set)  # the encodes that replace a row
    reuse: list[tuple[Item, int, int]] = field(default_factory=list)  # (item, vector's key, new key)
    relabel: list[Item] = field(default_factory=list)  # same pixels, new annotations
    touched: list[Item] = field(default_factory=list)  # new size/mtime, same content hash: vector kept
    touched_at: list[int] = field(default_factory=list)  # their positions among the changed files
    broken_ids: list[str] = field(default_factory=list)  # stored files that became unreadable
    delete_ids: list[str] = field(default_factory=list)  # rows of this source gone from disk
    replaced_ids: list[str] = field(default_factory=list)  # rows taken over by a move
    keys: dict[str, int] = field(default_factory=dict)  # item id -> key, for the items written
    changed_keys: list[int] = field(default_factory=list)  # stored rows changed in place or marked deleted
    unchanged: int = 0  # includes the touched ones
    still_skipped: list[str] = field(default_factory=list)  # unchanged files that failed before


def fill_hashes(items: Sequence[Item], skipped: list[dict[str, Any]]) -> list[Item]:
    """Content hashes for files (threads: hashlib releases the GIL); unreadable files become skips."""
    todo = [item for item in items if item.content_hash is None]

    def one(item: Item) -> str | None:
        if item.unreadable:  # the source knows already (a FIFO, a broken symlink, a non-UTF-8 name)
            skipped.append(skip_row(item, item.unreadable))
            return None
        try:
            return file_digest(item.uri)
        except OSError as err:
            skipped.append(skip_row(item, f"unreadable: {err.strerror or err}"))
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        for item, digest in zip(todo, pool.map(one, todo)):
            item.content_hash = digest
    return [item for item in items if item.content_hash is not None]


def skip_row(item: Item, reason: str) -> dict[str, Any]:
    return dict(id=item.id, uri=item.uri, source=item.source, reason=reason, size=item.size, mtime=item.mtime)


def _column(table: pa.Table, name: str, fill: Any, dtype: Any) -> np.ndarray:
    """A stored column as NumPy, with one extra `fill` element at the end: position -1 (not stored) reads it."""
    values = table.column(name).fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return np.append(values, np.asarray([fill], dtype=dtype))


def _same_metadata(stored: pa.Table, items: Sequence[Item]) -> np.ndarray:
    """Per item (stored row at the same position): whether split, label, label_name and captions are equal."""
    mine = {
        "split": pa.array([i.split for i in items], pa.string()),
        "label": pa.array([i.label for i in items], pa.int64()),
        "label_name": pa.array([i.label_name for i in items], pa.string()),
        "captions": pa.array([_CAPTION_SEP.join(i.captions) for i in items], pa.string()),
    }
    theirs = {name: stored.column(name) for name in ("split", "label", "label_name")}
    theirs["captions"] = pc.fill_null(pc.binary_join(stored.column("captions"), _CAPTION_SEP), "")
    same = np.ones(len(items), bool)
    for name, values in mine.items():
        equal = pc.fill_null(pc.equal(values, theirs[name]), False)
        both_null = pc.and_(pc.is_null(values), pc.is_null(theirs[name]))
        same &= pc.or_(equal, both_null).to_numpy(zero_copy_only=False)
    return same


def plan_sync(
    stored: pa.Table,
    skips: pa.Table,
    items: Sequence[Item],
    source: str,
    skipped: list[dict[str, Any]],
    mark_missing: bool = True,
) -> Plan:
    """What to do for each item, given the stored rows (STORED_COLUMNS) and this source's skipped files
    (`id`, `size`, `mtime`): keep (maybe relabel), keep a touched file's vector when its content hash is
    unchanged, re-encode, reuse a vector by content hash, or encode new; and which rows of `source` are gone."""
    plan = Plan()
    known_skips = {(r["id"], r["size"], r["mtime"]) for r in skips.select(["id", "size", "mtime"]).to_pylist()}
    ids = pa.array([item.id for item in items], pa.string())
    # pos[i]: the stored row of items[i], -1 when none (the columns' extra last element).
    pos = pc.index_in(ids, value_set=stored.column("id")).fill_null(-1).to_numpy(zero_copy_only=False)
    size, key = _column(stored, "size", -1, np.int64), _column(stored, "key", -1, np.int64)
    mtime, deleted = _column(stored, "mtime", np.nan, np.float64), _column(stored, "deleted", True, bool)
    content_hash = _column(stored, "content_hash", "", object)
    live = (pos >= 0) & ~deleted[pos]
    skip = np.array([(i.id, i.size, i.mtime) in known_skips for i in items], bool) if known_skips else ~live & live
    item_size = np.fromiter((i.size for i in items), np.int64, len(items))
    item_mtime = np.fromiter((i.mtime for i in items), np.float64, len(items))
    same_file = live & ~skip & (size[pos] == item_size) & (mtime[pos] == item_mtime)
    plan.still_skipped = [items[i].id for i in np.flatnonzero(skip)]
    stored_live = np.flatnonzero(live & ~skip)
    same_meta = np.ones(len(items), bool)
    if len(stored_live):
        metadata = stored.select(_META_COLUMNS).take(pa.array(pos[stored_live]))
        same_meta[stored_live] = _same_metadata(metadata, [items[i] for i in stored_live])
    kept = np.flatnonzero(same_file)
    plan.unchanged = len(kept)
    plan.relabel = [items[i] for i in kept[~same_meta[kept]]]
    plan.changed_keys = key[pos[kept[~same_meta[kept]]]].tolist()
    changed = np.flatnonzero(live & ~skip & ~same_file)
    _plan_touched(plan, [items[i] for i in changed], key[pos[changed]], content_hash[pos[changed]], skipped)
    plan.relabel += [item for item, i in zip(plan.touched, changed[plan.touched_at]) if not same_meta[i]]
    in_items = pc.is_in(stored.column("id"), value_set=ids).to_numpy(zero_copy_only=False)
    from_source = stored.column("source").to_numpy(zero_copy_only=False) == source
    gone = deleted[:-1] | (mark_missing & from_source & ~in_items)  # per stored row: deleted, or deleted now
    fresh = np.flatnonzero(~live & ~skip)
    if len(fresh):
        hashed = fill_hashes([items[i] for i in fresh], skipped)
        stored_key = {items[i].id: int(key[pos[i]]) for i in fresh if pos[i] >= 0}
        next_key = int(key.max()) + 1 if stored.num_rows else 0
        _plan_by_content(plan, stored, gone, hashed, stored_key, next_key)
    if mark_missing:
        missing = stored.filter(pa.array(~deleted[:-1] & from_source & ~in_items)).select(["id", "key"])
        replaced = set(plan.replaced_ids)
        plan.delete_ids = [image_id for image_id in missing.column("id").to_pylist() if image_id not in replaced]
        plan.changed_keys += missing.column("key").to_pylist()
    return plan


def _plan_touched(
    plan: Plan, changed: list[Item], keys: np.ndarray, hashes: np.ndarray, skipped: list[dict[str, Any]]
) -> None:
    """Stored, live files whose size or mtime changed (with their stored keys and content hashes):
    hashed again; the same content keeps its vector, other content is encoded under the same key."""
    readable = {item.id for item in fill_hashes(changed, skipped)}  # (a dataset's items come with their hash)
    for at, (item, key, stored_hash) in enumerate(zip(changed, keys, hashes)):
        plan.keys[item.id] = int(key)
        plan.changed_keys.append(int(key))
        if item.id not in readable:
            plan.broken_ids.append(item.id)  # was readable, is not now: its old vector must go
        elif stored_hash and stored_hash == item.content_hash:
            plan.touched.append(item)
            plan.touched_at.append(at)
            plan.unchanged += 1
        else:
            plan.encode.append(item)
            plan.updated_ids.add(item.id)


def _plan_by_content(
    plan: Plan, stored: pa.Table, gone: np.ndarray, hashed: Sequence[Item], stored_key: dict[str, int], next_key: int
) -> None:
    """New (or returning) files: a moved or copied file reuses the vector of a row with its content
    hash. Only the stored rows sharing a hash with these files are read as Python values."""
    hashes = pa.array(sorted({item.content_hash for item in hashed}), pa.string())
    twins_mask = pc.fill_null(pc.is_in(stored.column("content_hash"), value_set=hashes), False)
    twins = stored.filter(twins_mask).select(["id", "key", "content_hash"]).to_pylist()
    by_hash: dict[str, dict[str, Any]] = {}
    for row, is_gone in zip(twins, gone[twins_mask.to_numpy(zero_copy_only=False)]):
        # Prefer a row that is gone (a move) over one still on disk (a copy).
        if is_gone or row["content_hash"] not in by_hash:
            by_hash[row["content_hash"]] = {**row, "gone": bool(is_gone)}
    for item in hashed:
        twin = by_hash.get(item.content_hash)
        if twin is not None and twin["gone"] and twin["id"] != item.id:
            plan.keys[item.id] = twin["key"]
            plan.reuse.append((item, twin["key"], twin["key"]))
            plan.replaced_ids.append(twin["id"])
            twin["gone"] = False  # one move per old row; further twins are copies
            continue
        if item.id in stored_key:
            plan.keys[item.id] = stored_key[item.id]
        else:
            plan.keys[item.id], next_key = next_key, next_key + 1
        if twin is not None:
            plan.reuse.append((item, twin["key"], plan.keys[item.id]))
        else:
            plan.encode.append(item)
