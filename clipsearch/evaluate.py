"""Evaluation outputs shared by every classifier (zero-shot, probes): one report, one format."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .report import plot_confusion, write_json


def write_classification_outputs(report: dict[str, Any], class_names: Sequence[str], out_dir: Path, title: str) -> dict[str, Path]:
    """`results.json` and `confusion.png` for a metrics.classification_report."""
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "results": write_json(out_dir / "results.json", report),
        "confusion": plot_confusion(np.asarray(report["confusion"]), class_names, out_dir / "confusion.png", title=title),
    }
