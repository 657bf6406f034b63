"""The one writer of evaluation result files and plots, for every evaluator and every face.

Evaluators (zeroshot_eval.evaluate_zero_shot, retrieval.evaluate_retrieval,
probes.evaluate_probe, probes.compare_methods) return results and write nothing; the
faces pass those results here. Every folder is `<index folder>/eval/<name>` unless the
caller gives another (`--out`), and `eval_dir` is the only place that path is built:

    zeroshot-<split>[-<corruption>-<severity>]   results.json, confusion.png (the best template set's)
                                                 (+ one folder per template set when several)
    retrieval-<split>                            results.json, recall_at_k.png
    probe-<probe>-<split>                        results.json, confusion.png
    compare-<split>                              results.json

Each writer returns the files it wrote by kind ("results", "confusion", "curve").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_json
from ..index.index import Index
from ..present.plots import plot_confusion, plot_recall_curves
from .corruptions import Corruption
from .metrics import chance_recall
from .probes.probe import Probe

EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
CONFUSION_FILE = "confusion.png"
CURVE_FILE = "recall_at_k.png"
# What a zero-shot run was: the keys every results.json of the run carries.
RUN_SETTINGS = ("index", "model", "labels", "split", "corruption", "excluded")


def eval_dir(index: Index, name: str) -> Path:
    """`<index folder>/eval/<name>`: where an evaluation's files go by default."""
    return index.store.path / EVAL_DIR / name


def zero_shot_dir(index: Index, split: str, corruption: Corruption | None = None) -> Path:
    suffix = f"-{corruption.name}-{corruption.severity}" if corruption else ""
    return eval_dir(index, f"zeroshot-{split}{suffix}")


def retrieval_dir(index: Index, split: str) -> Path:
    return eval_dir(index, f"retrieval-{split}")


def probe_eval_dir(index: Index, probe: Probe, split: str) -> Path:
    return eval_dir(index, f"probe-{probe.name}-{split}")


def comparison_dir(index: Index, split: str) -> Path:
    return eval_dir(index, f"compare-{split}")


def confusion_title(report: dict[str, Any], title: str) -> str:
    """A confusion plot's title: what was evaluated, then its top-1 and the number of images."""
    top1 = "-" if report.get("top1") is None else f"{100 * report['top1']:.2f} %"
    return f"{title}\ntop-1 {top1} · n = {report['n']}"


def write_classification(
    report: dict[str, Any], class_names: Sequence[str], out_dir: Path, title: str
) -> dict[str, Path]:
    """`results.json` (the whole report) and `confusion.png` for a metrics.classification_report."""
    out_dir = Path(out_dir)
    return {
        "results": write_json(out_dir / RESULTS_FILE, report),
        "confusion": plot_confusion(
            np.asarray(report["confusion"]), class_names, out_dir / CONFUSION_FILE, title=confusion_title(report, title)
        ),
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def best_template_set(result: dict[str, Any]) -> str:
    """The template set with the highest top-1 (the first among equals); the only one when one was given."""
    reports = result.get("template_sets") or {result["templates"]: result}
    return max(reports, key=lambda name: (reports[name]["top1"] or 0.0, -list(reports).index(name)))


def write_zero_shot(result: dict[str, Any], class_names: Sequence[str], out_dir: Path) -> dict[str, Path]:
    """results.json (the whole result) and confusion.png in `out_dir`; with several template sets, the
    top-level confusion.png is the best set's (its title says so), and each set also gets a folder named by
    it with its own results.json and confusion.png (files "results:<set>", "confusion:<set>")."""
    out_dir = Path(out_dir)
    setting = f"{result['index']} · {result['labels']} · {result['split']} · {result['corruption'] or 'clean'}"
    sets = result.get("template_sets", {})
    best = best_template_set(result)
    settings = {key: result[key] for key in RUN_SETTINGS}
    files = {"results": write_json(out_dir / RESULTS_FILE, result)}
    if sets:
        best_report, title = sets[best], f"zero-shot {setting} · {best} (best of {len(sets)} template sets)"
    else:
        best_report, title = result, f"zero-shot {setting} · {result['templates']}"
    files["confusion"] = plot_confusion(
        np.asarray(best_report["confusion"]),
        class_names,
        out_dir / CONFUSION_FILE,
        title=confusion_title(best_report, title),
    )
    for name, report in sets.items():
        written = write_classification(
            {**settings, **report}, class_names, out_dir / _slug(name), f"zero-shot {setting} · {name}"
        )
        files.update({f"{kind}:{name}": path for kind, path in written.items()})
    return files


def write_retrieval(report: dict[str, Any], out_dir: Path, title: str | None = None) -> dict[str, Path]:
    """`results.json` (the whole report) and the recall@k curve PNG (k = 1..50, both directions)
    of a retrieval.evaluate_retrieval report; the plot's title defaults to index · split · model."""
    out_dir = Path(out_dir)
    title = f"{report['index']} · {report['split']} · {report['model']}" if title is None else title
    curves = {name.replace("_", " "): curve for name, curve in report["curves"].items()}
    ks = sorted(int(key[2:]) for key in report["text_to_image"] if key.startswith("R@"))
    return {
        "results": write_json(out_dir / RESULTS_FILE, report),
        "curve": plot_recall_curves(curves, out_dir / CURVE_FILE, title, ks, _chance_curves(report)),
    }


def _chance_curves(report: dict[str, Any]) -> dict[str, np.ndarray]:
    """Recall@k of a random ranking for k = 1..K of the curves: text→image over the images (one match each),
    image→text over the captions with the split's mean captions per image."""
    k = range(1, len(report["curves"]["text_to_image"]) + 1)
    per_image = report["n_captions"] / max(report["n_image_queries"], 1)
    return {
        "text to image": chance_recall(report["n_images"], 1, k),
        "image to text": chance_recall(report["n_captions"], np.full(report["n_image_queries"], per_image), k),
    }


def write_probe_eval(result: dict[str, Any], probe: Probe, out_dir: Path) -> dict[str, Path]:
    """`results.json` and `confusion.png` of a probes.evaluate_probe result."""
    title = f"probe {probe.description} · {result['index']} · {result['split']}"
    return write_classification(result, probe.class_names, out_dir, title)


def write_comparison(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """`results.json` of a probes.compare_methods result (confusion matrices: `probe eval`)."""
    return {"results": write_json(Path(out_dir) / RESULTS_FILE, result)}
