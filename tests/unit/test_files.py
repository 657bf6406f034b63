"""files.py: JSON results round-trip numpy types and are written atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsearch import files


def test_write_json_round_trips_numpy_types(tmp_path):
    obj = {
        "int": np.int64(3),
        "float": np.float32(0.25),
        "array": np.arange(3, dtype=np.int32),
        "matrix": np.eye(2),
        "tuple": (np.bool_(True), 1),
        "nan": float("nan"),
        "nested": {1: [np.float64(1.5)]},
    }
    path = files.write_json(tmp_path / "sub" / "result.json", obj)

    text = path.read_text()
    assert json.loads(text) == {
        "int": 3,
        "float": 0.25,
        "array": [0, 1, 2],
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "tuple": [True, 1],
        "nan": None,
        "nested": {"1": [1.5]},
    }
    assert text.startswith('{\n  "int": 3')  # indent 2
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_write_json_failure_keeps_previous_file(tmp_path):
    path = files.write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
