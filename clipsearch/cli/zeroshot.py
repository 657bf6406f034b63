"""Zero-shot commands: `classify` (label the index), `predict` (label image files),
`eval zeroshot` (accuracy of a split, optionally under a corruption)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ClipsearchError
from ..index.engines import default_workers
from ..index.query import load_query_image
from ..model.backends import load_encoder
from ..model.spec import ModelSpec
from ..present.progress import Update, counting_bar, progress_bars
from ..present.tables import classification_table, comparison_table, label_counts_table
from ..tasks import outputs
from ..tasks.corruptions import parse_corruption
from ..tasks.zeroshot import Prediction, class_prototypes, classify, predict_images, prediction_prompts
from ..tasks.zeroshot_eval import evaluate_zero_shot, parse_template_specs
from .common import BackendOpt, ModelOpt, PrecisionOpt, PretrainedOpt, RootOpt, err, open_index, out

LabelsOpt = typer.Option(
    ..., "--labels", help="Label set: cifar10, cifar100, shapes, a file (one label per line) or cat,dog,bird."
)
TemplatesHelp = (
    "Template set: cifar (18), imagenet (80), simple, shapes, a file (one template with {} per line) "
    "or a .json of per-class prompts (default: the label set's usual one)."
)


# -- classify ----------------------------------------------------------------------------
def classify_cmd(
    name: str = typer.Argument(..., help="Index name."),
    labels: str = LabelsOpt,
    templates: Optional[str] = typer.Option(None, "--templates", help=TemplatesHelp),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Label every image with its nearest class prototype (zs_label, zs_score, zs_labelset),
    so that `search NAME ... --where "zs_label = 'cat'"` works."""
    index = open_index(name, root, model, pretrained, backend, precision)
    with counting_bar("classifying", index.live_count(), visible=not as_json, unit="img") as advance:
        result = classify(index, labels, templates, on_batch=advance)
    if as_json:
        out.print_json(json.dumps({"index": index.name, **result.to_dict()}))
        return
    title = f"zero-shot labels of '{escape(index.name)}' ({len(result.counts)} classes from {escape(labels)})"
    out.print(label_counts_table(result.counts, title))
    err.print(
        f"{result.n} images labelled in {result.seconds:.1f} s; filter with --where \"zs_label = '...'\"",
        highlight=False,
    )


# -- predict -----------------------------------------------------------------------------
def predict_cmd(
    images: list[str] = typer.Argument(..., help="Image files."),
    labels: str = LabelsOpt,
    k: int = typer.Option(5, "-k", "--k", help="Number of classes to show per image."),
    templates: Optional[str] = typer.Option(None, "--templates", help=TemplatesHelp),
    index_name: Optional[str] = typer.Option(
        None, "--index", help="Use the model of this index (instead of --model/--pretrained)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one entry per image."),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Top-k classes of images with softmax(100 · cosine) confidences over the whole label set."""
    class_names, prompts = prediction_prompts(labels, templates, k)  # checked before the model loads
    if index_name and (model or pretrained):
        raise ClipsearchError("choose one of --index and --model/--pretrained")
    pixels = [load_query_image(path) for path in images]
    if index_name:
        encoder = open_index(index_name, root, backend=backend, precision=precision).encoder
    else:
        encoder = load_encoder(ModelSpec.resolve(model, pretrained), backend, precision)
    prototypes = class_prototypes(encoder, prompts)
    predictions = predict_images(encoder, pixels, class_names, prototypes, k)
    if as_json:
        out.print_json(json.dumps(_predictions_json(images, predictions)))
        return
    for path, ranked in zip(images, predictions):
        out.print(_predictions_table(path, ranked))


def _predictions_json(images: Sequence[str], predictions: Sequence[Sequence[Prediction]]) -> list[dict]:
    return [
        {
            "image": path,
            "predictions": [
                {"rank": rank, "label": p.label, "probability": p.probability, "cosine": p.cosine}
                for rank, p in enumerate(ranked, 1)
            ],
        }
        for path, ranked in zip(images, predictions)
    ]


def _predictions_table(path: str, ranked: Sequence[Prediction]) -> Table:
    table = Table(title=escape(path))
    for column, justify in (("rank", "right"), ("label", "left"), ("confidence", "right"), ("cosine", "right")):
        table.add_column(column, justify=justify)
    for rank, p in enumerate(ranked, 1):
        table.add_row(str(rank), escape(p.label), f"{100 * p.probability:.2f} %", f"{p.cosine:.4f}")
    return table


# -- eval zeroshot -----------------------------------------------------------------------
def eval_zeroshot_cmd(
    name: str = typer.Argument(..., help="Index name."),
    labels: Optional[str] = typer.Option(
        None,
        "--labels",
        help="Label set (default: the indexed dataset's classes, cifar10, cifar100 or shapes, when they name every "
        "stored label; else the index's stored label names).",
    ),
    templates: Optional[str] = typer.Option(
        None, "--templates", help="Comma-separated template sets to compare. " + TemplatesHelp
    ),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val, test or all."),
    corruption: Optional[str] = typer.Option(
        None,
        "--corruption",
        help="NAME:SEVERITY (1-5): re-encode the images corrupted "
        "(gaussian_noise, shot_noise, gaussian_blur, contrast, brightness, jpeg).",
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for results.json and confusion.png (default: <index>/eval/zeroshot-<split>)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per batch when re-encoding (--corruption)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="Decoding processes when re-encoding (default: one per core, at most 4)."
    ),
    model: Optional[str] = ModelOpt,
    pretrained: Optional[str] = PretrainedOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Zero-shot top-1, top-5, mean per-class recall, per-class accuracy and confusion matrix of a split."""
    shift = parse_corruption(corruption) if corruption else None
    specs = parse_template_specs(templates)
    index = open_index(name, root, model, pretrained, backend, precision)
    with progress_bars(not as_json and shift is not None, unit="img") as update:
        advance, set_total = _bar_sized_later(update, f"encoding images with {corruption}")
        result, class_names = evaluate_zero_shot(
            index,
            labels,
            specs,
            split,
            shift,
            batch_size,
            default_workers() if workers is None else workers,
            on_batch=advance,
            on_start=set_total,
        )
    files = outputs.write_zero_shot(result, class_names, out_dir or outputs.zero_shot_dir(index, split, shift))
    if as_json:
        out.print_json(json.dumps({**result, "files": {kind: str(path) for kind, path in files.items()}}))
        return
    _print_zero_shot(result, class_names, files)


def _bar_sized_later(update: Update, what: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """(advance by n, set the total) for one bar whose total is known only once the work starts."""
    state: dict[str, Any] = {"done": 0, "total": None}

    def advance(n: int) -> None:
        state["done"] += n
        update(what, state["done"], state["total"])

    def set_total(total: int) -> None:
        state["total"] = total
        update(what, state["done"], total)

    return advance, set_total


def _print_zero_shot(result: dict[str, Any], class_names: list[str], files: dict[str, Path]) -> None:
    """The report table (or a comparison of template sets), held-out lines, warnings, written files."""
    setting = f"{result['labels']}, split {result['split']}" + (
        f", corrupted {result['corruption']}" if result["corruption"] else ""
    )
    reports = result.get("template_sets") or {result["templates"]: result}
    if len(reports) == 1:
        title = f"zero-shot '{result['index']}' ({setting}, templates {result['templates']})"
        out.print(classification_table(result, title))
    else:
        out.print(
            f"zero-shot '{escape(result['index'])}' ({setting}): {len(reports)} template sets compared, accuracy %"
        )
        out.print(comparison_table(reports, class_names))
    for template_name, report in reports.items():
        if "seen" in report:
            out.print(f"{template_name}: {_holdout_line(report)}", highlight=False)
    if result["excluded"]:
        err.print(
            f"warning: {result['excluded']} images with a label outside '{result['labels']}' were left out",
            highlight=False,
        )
    err.print("\n".join(f"{kind}: {path}" for kind, path in files.items()), highlight=False, soft_wrap=True)


def _holdout_line(report: dict) -> str:
    def percent(part: dict) -> str:
        return "-" if part["top1"] is None else f"{100 * part['top1']:.2f} %"

    seen, held = report["seen"], report["held_out"]
    return f"seen classes: {percent(seen)} top-1 of {seen['n']}; held-out classes: {percent(held)} top-1 of {held['n']}"
