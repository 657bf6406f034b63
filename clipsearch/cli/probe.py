"""Probe commands: `probe train`, `probe eval`, `probe apply` (trained on the index's stored
vectors), and `eval compare` (zero-shot, linear, mlp and joint side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..present.progress import progress_bars
from ..present.tables import classification_table, comparison_table, label_counts_table
from ..tasks import outputs
from ..tasks.probes import (
    Hyperparameters,
    Probe,
    apply_probe,
    compare_methods,
    default_probe_path,
    evaluate_probe,
    find_probe,
    train_probe,
)
from .common import BackendOpt, PrecisionOpt, RootOpt, err, open_index, out

LabelsHelp = (
    "Label set: cifar10, cifar100, shapes, a file (one label per line) or cat,dog,bird "
    "(default: the labels of the training split)."
)
TemplatesHelp = "Prompt templates of the joint head / zero-shot: cifar, imagenet, simple, shapes or a file (default: the label set's usual one)."
ProbeArg = typer.Argument(
    ..., help="Probe file (.safetensors) or the name of one in <index>/probes (linear, mlp, joint, linear-16shot)."
)
NameArg = typer.Argument(..., help="Index name.")
LabelsOpt = typer.Option(None, "--labels", help=LabelsHelp)
TemplatesOpt = typer.Option(None, "--templates", help=TemplatesHelp)
JsonOpt = typer.Option(False, "--json", help="Print the results as JSON.")
KindOpt = typer.Option(
    ...,
    "--kind",
    help="linear (logistic regression, C searched on val), mlp, or joint (image+text heads from zero-shot).",
)
TrainSplitOpt = typer.Option("train", "--train-split", help="Split to train on.")
ValSplitOpt = typer.Option(
    "val", "--val-split", help="Split that chooses C (linear) or the epoch to stop at (mlp, joint)."
)
ShotsOpt = typer.Option(None, "--shots", help="Train on K images per class (few-shot), picked by --seed.")
ProbeOutOpt = typer.Option(
    None,
    "--out",
    help="Probe file (default: <index>/probes/<kind>.safetensors, with --shots K <kind>-Kshot.safetensors; "
    "metadata beside it as .json).",
)
SeedOpt = typer.Option(0, "--seed", help="Seed of the few-shot pick and of the mlp/joint training.")
MaxEpochsOpt = typer.Option(200, "--max-epochs", min=0, help="mlp/joint: most epochs.")
PatienceOpt = typer.Option(
    20, "--patience", min=1, help="mlp/joint: stop after this many epochs without a better validation top-1."
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# -- probe train ------------------------------------------------------------------------------
def train_cmd(
    name: str = NameArg,
    kind: str = KindOpt,
    labels: Optional[str] = LabelsOpt,
    templates: Optional[str] = TemplatesOpt,
    train_split: str = TrainSplitOpt,
    val_split: str = ValSplitOpt,
    shots: Optional[int] = ShotsOpt,
    out_file: Optional[Path] = ProbeOutOpt,
    seed: int = SeedOpt,
    max_epochs: int = MaxEpochsOpt,
    patience: int = PatienceOpt,
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the probe's metadata as JSON."),
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
) -> None:
    """Train a probe on the vectors stored in the index (no image is decoded or encoded; joint encodes its
    class prompts, with --backend/--precision)."""
    index = open_index(name, root, backend=backend, precision=precision)
    with progress_bars(not as_json, unit="steps") as progress:
        probe = train_probe(
            index,
            kind,
            labels=labels,
            templates=templates,
            train_split=train_split,
            val_split=val_split,
            shots=shots,
            seed=seed,
            hyper=Hyperparameters(max_epochs=max_epochs, patience=patience),
            progress=progress,
        )
    if out_file is not None and out_file.suffix != ".safetensors":
        out_file = out_file.with_name(out_file.name + ".safetensors")
    path = probe.save(out_file or default_probe_path(index, probe.kind, shots))
    if as_json:
        out.print_json(json.dumps({**probe.meta, "path": str(path)}))
        return
    title = f"probe {escape(probe.description)} on '{escape(index.name)}'"
    out.print(_probe_table(probe, path, title, f"{train_split}{f', {shots} per class' if shots else ''}", val_split))
    if probe.kind == "linear":
        out.print(_c_search_table(probe.meta))
    missing = probe.meta["classes_without_images"]
    if missing:
        err.print(
            f"note: no training images for {len(missing)} classes of the label set, left out: {', '.join(missing[:10])}",
            highlight=False,
            soft_wrap=True,
        )


def _probe_table(probe: Probe, path: Path, title: str, train_part: str, val_split: str) -> Table:
    """What was trained on what, the chosen C or epoch, the validation numbers and where it was saved."""
    meta, validation = probe.meta, probe.meta["validation"]
    rows = [
        ("classes", str(len(probe.class_names))),
        ("train images", f"{meta['n_train']} ({train_part})"),
        ("val images", f"{meta['n_val']} ({val_split})"),
    ]
    if probe.kind == "linear":
        rows.append(("C (chosen on val)", f"{meta['C']:.4g}; refit on train+val"))
    else:
        rows.append(("best epoch", f"{meta['best_epoch']} of {meta['epochs_run']} run"))
    rows += [
        ("val top-1 %", _percent(validation["top1"])),
        (f"val top-{validation['top5_k']} %", _percent(validation["top5"])),
        ("val mean per-class recall %", _percent(validation["mean_per_class_recall"])),
        ("seconds", f"{meta['seconds']:.1f}"),
        ("saved", f"{path} (+ {path.with_suffix('.json').name})"),
    ]
    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def _c_search_table(meta: dict[str, Any]) -> Table:
    """Every C the linear probe tried with its validation top-1; the chosen one in bold."""
    table = Table(title="C search (validation top-1)")
    for column in ("C", "val top-1 %", "converged"):
        table.add_column(column, justify="right")
    for point in meta["c_search"]:
        chosen = point["C"] == meta.get("searched_C", meta["C"])
        cells = (f"{point['C']:.4g}", _percent(point["val_top1"]), "yes" if point["converged"] else "no")
        table.add_row(*(f"[bold]{c}[/bold]" if chosen else c for c in cells))
    return table


# -- probe eval -------------------------------------------------------------------------------
def eval_cmd(
    name: str = NameArg,
    probe_spec: str = ProbeArg,
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for results.json and confusion.png (default: <index>/eval/probe-<probe>-<split>)."
    ),
    root: Optional[Path] = RootOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Top-1, top-5, mean per-class recall, per-class accuracy and a confusion matrix of a probe on a split."""
    index = open_index(name, root)
    probe = Probe.load(find_probe(index, probe_spec))
    result = evaluate_probe(index, probe, split)
    files = outputs.write_probe_eval(result, probe, out_dir or outputs.probe_eval_dir(index, probe, split))
    if as_json:
        out.print_json(json.dumps({**result, "outputs": {kind: str(path) for kind, path in files.items()}}))
        return
    out.print(classification_table(result, f"probe {probe.description} on '{index.name}' · {split}"))
    if result["excluded"]:
        err.print(
            f"{result['excluded']} images of split {split!r} have no label among the probe's classes and were left out",
            highlight=False,
        )
    err.print(f"results: {files['results']}  confusion: {files['confusion']}", highlight=False, soft_wrap=True)


# -- probe apply ------------------------------------------------------------------------------
def apply_cmd(
    name: str = NameArg,
    probe_spec: str = ProbeArg,
    root: Optional[Path] = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Label every image with the probe: probe_label, probe_score (probability), probe_name;
    then `search NAME ... --where "probe_label = 'cat'"` works."""
    index = open_index(name, root)
    probe = Probe.load(find_probe(index, probe_spec))
    result = apply_probe(index, probe)
    if as_json:
        out.print_json(json.dumps(result))
        return
    title = f"probe {escape(probe.description)} labels of '{escape(index.name)}'"
    out.print(label_counts_table(result["counts"], title))
    err.print(
        f"{result['n']} images labelled in {result['seconds']:.1f} s; filter with --where \"probe_label = '...'\"",
        highlight=False,
    )


# -- eval compare -----------------------------------------------------------------------------
def compare_cmd(
    name: str = NameArg,
    labels: Optional[str] = LabelsOpt,
    templates: Optional[str] = TemplatesOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    train_split: str = typer.Option("train", "--train-split", help="Split the probes train on."),
    val_split: str = typer.Option("val", "--val-split", help="Validation split of the probes."),
    seed: int = typer.Option(0, "--seed", help="Seed of probes trained now."),
    retrain: bool = typer.Option(False, "--retrain", help="Train all three probes again even when saved ones fit."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder for results.json (default: <index>/eval/compare-<split>)."
    ),
    root: Optional[Path] = RootOpt,
    as_json: bool = JsonOpt,
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
) -> None:
    """Zero-shot, linear, mlp and joint side by side, overall and per class; trains the probes not saved yet."""
    index = open_index(name, root, backend=backend, precision=precision)
    with progress_bars(not as_json, unit="steps") as progress:
        result = compare_methods(
            index,
            labels=labels,
            templates=templates,
            split=split,
            train_split=train_split,
            val_split=val_split,
            seed=seed,
            retrain=retrain,
            progress=progress,
        )
    results = outputs.write_comparison(result, out_dir or outputs.comparison_dir(index, split))["results"]
    if as_json:
        out.print_json(json.dumps({**result, "outputs": {"results": str(results)}}))
        return
    _print_comparison(result, index.name, split, results)


def _print_comparison(result: dict[str, Any], index_name: str, split: str, results: Path) -> None:
    table = comparison_table(result["methods"], result["class_names"])
    table.title = (
        f"'{escape(index_name)}' · {escape(split)} · {result['n']} images · {len(result['class_names'])} classes (%)"
    )
    out.print(table)
    reused = [kind for kind in result["probes"] if kind not in result["trained"]]
    err.print(
        f"probes trained now: {', '.join(result['trained']) or 'none'}; reused: {', '.join(reused) or 'none'} "
        f"(in {Path(next(iter(result['probes'].values()))).parent})",
        highlight=False,
        soft_wrap=True,
    )
    if result["excluded"]:
        err.print(
            f"{result['excluded']} images of split {split!r} have no label among these classes and were left out",
            highlight=False,
        )
    err.print(
        f"results: {results} (confusion matrices: clipsearch probe eval {index_name} PROBE)",
        highlight=False,
        soft_wrap=True,
    )
