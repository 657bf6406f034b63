"""The Arrow schemas of an index's three tables, and the conversions between rows and Arrow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

# Columns that later tasks (classify, probe apply) fill in; declared up front so
# every index has one schema.
ANNOTATION_FIELDS = [
    pa.field("zs_label", pa.string()),
    pa.field("zs_score", pa.float32()),
    pa.field("zs_labelset", pa.string()),
    pa.field("probe_label", pa.string()),
    pa.field("probe_score", pa.float32()),
    pa.field("probe_name", pa.string()),
]


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("key", pa.int64(), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("source", pa.string()),
            pa.field("split", pa.string()),
            pa.field("label", pa.int64()),
            pa.field("label_name", pa.string()),
            pa.field("captions", pa.list_(pa.string())),
            pa.field("mtime", pa.float64()),
            pa.field("size", pa.int64()),
            pa.field("content_hash", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("vector", vector_type(dim)),
            pa.field("deleted", pa.bool_()),
            *ANNOTATION_FIELDS,
        ]
    )


def captions_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("caption_index", pa.int32()),
            pa.field("caption", pa.string()),
            pa.field("vector", vector_type(dim)),
        ]
    )


SKIPPED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.float64()),
    ]
)


def rows_to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build an Arrow table from row dicts; missing columns become nulls."""
    columns = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_fixed_size_list(field.type):
            flat = np.asarray(values, dtype=np.float32).reshape(-1)
            columns[field.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), field.type.list_size)
        else:
            columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=schema)


def vectors_of(table: pa.Table, column: str = "vector") -> np.ndarray:
    """A fixed-size-list column as an (n, dim) float32 array, without Python objects."""
    chunked = table.column(column)
    if table.num_rows == 0:
        return np.zeros((0, chunked.type.list_size), np.float32)
    flat = pa.concat_arrays([chunk.flatten() for chunk in chunked.chunks])
    return (
        flat.to_numpy(zero_copy_only=False)
        .reshape(table.num_rows, chunked.type.list_size)
        .astype(np.float32, copy=False)
    )
