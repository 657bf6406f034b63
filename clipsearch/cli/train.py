"""`clipsearch train` (contrastive training of a small CLIP) and `clipsearch shapes` (its generated data)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from ..errors import ClipsearchError
from ..sources.shapes import generate_shapes
from ..training.config import BEST_WEIGHTS, CONFIG_FILE, LAST_WEIGHTS, TrainConfig, read_run_config
from .common import err, out

if TYPE_CHECKING:
    from ..training.loop import TrainResult


def shapes_cmd(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into (must be empty or absent)."),
    n: int = typer.Option(3000, "--n", help="Number of images, split 80/10/10 into train/val/test."),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes on disk."),
    holdout: Optional[list[str]] = typer.Option(
        None,
        "--holdout",
        help="'colour shape' pairs kept out of train (repeatable or comma-separated; 'none' for none). "
        "Default: red star, green cross, blue triangle, yellow square, purple circle.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset's metadata as JSON."),
) -> None:
    """Generate the captioned shapes dataset: an image folder plus captions.jsonl and meta.json."""
    pairs = None
    if holdout:
        pairs = [p.strip() for item in holdout for p in item.split(",") if p.strip()]
        pairs = [] if [p.lower() for p in pairs] == ["none"] else pairs
    started = time.perf_counter()
    meta = generate_shapes(out_dir, n=n, size=size, seed=seed, holdout=pairs)
    if as_json:
        out.print_json(json.dumps(meta))
        return
    table = Table(title=f"shapes dataset in {out_dir}", show_header=False)
    for key, value in (
        ("images", f"{meta['n']} ({', '.join(f'{k} {v}' for k, v in meta['counts'].items())})"),
        ("size", f"{meta['size']} px"),
        ("classes", f"{len(meta['class_names'])} colour-shape pairs"),
        ("held out of train", ", ".join(meta["holdout"]) or "none"),
        ("seed", str(meta["seed"])),
        ("seconds", f"{time.perf_counter() - started:.1f}"),
    ):
        table.add_row(key, value)
    out.print(table)


# The options of `train` default to None so that --resume can tell a setting given now
# (which must match the run's) from one left out (taken from the run); TrainConfig holds the defaults.
DataArg = typer.Argument(
    None,
    help="Captions folder (captions.jsonl/.csv/Flickr8k.token.txt), flickr8k|flickr30k|coco, or cifar10|cifar100. "
    "With --resume: taken from the run.",
)
ArchOpt = typer.Option(
    None,
    "--arch",
    help="open_clip architecture or a shipped one (tiny-rn: small CNN CLIP for CPU; mini: ResNet18; tiny: ViT test model).",
)
PretrainedOpt = typer.Option(
    None, "--pretrained", help="Start from a pretrained tag or checkpoint (default: random init)."
)
EpochsOpt = typer.Option(None, "--epochs", help="Passes over the train split [default: 10].")
BatchOpt = typer.Option(None, "--batch-size", help="Images per micro-batch [default: 128].")
AccumOpt = typer.Option(
    None, "--accum-steps", help="Micro-batches per optimizer step; negatives span all of them [default: 1]."
)
LrOpt = typer.Option(None, "--lr", help="Peak learning rate [default: 1e-3].")
WdOpt = typer.Option(None, "--wd", help="AdamW weight decay (not on gains, biases, logit scale) [default: 0.1].")
ScheduleOpt = typer.Option(
    None, "--schedule", help="onecycle or cosine (linear warmup, cosine decay) [default: onecycle]."
)
WarmupOpt = typer.Option(None, "--warmup", help="Warmup optimizer steps [default: 10% of all steps].")
SeedOpt = typer.Option(None, "--seed", help="Seed of init, order, captions and augmentation [default: 0].")
AugmentOpt = typer.Option(
    None,
    "--augment/--no-augment",
    help="The model's train transform (small random crops; no flips, no colour changes) [default: on].",
)
GradClipOpt = typer.Option(None, "--grad-clip", help="Clip the gradient norm; 0 turns it off [default: 1.0].")
OutOpt = typer.Option(None, "--out", help="Run folder [default: runs/<data>-<arch>].")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --out exactly where its last epoch ended.")
DataDirOpt = typer.Option(None, "--data-dir", help="Where a named dataset's files are.")
WorkersOpt = typer.Option(None, "--workers", min=0, help="Image decoding processes [default: 1].")
DeviceOpt = typer.Option(None, "--device", help="cpu or cuda [default: cuda when present].")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON (no progress bar).")


def train_cmd(
    data: Optional[str] = DataArg,
    arch: Optional[str] = ArchOpt,
    pretrained: Optional[str] = PretrainedOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    accum_steps: Optional[int] = AccumOpt,
    lr: Optional[float] = LrOpt,
    wd: Optional[float] = WdOpt,
    schedule: Optional[str] = ScheduleOpt,
    warmup: Optional[int] = WarmupOpt,
    seed: Optional[int] = SeedOpt,
    augment: Optional[bool] = AugmentOpt,
    grad_clip: Optional[float] = GradClipOpt,
    out_dir: Optional[str] = OutOpt,
    resume: bool = ResumeOpt,
    data_dir: Optional[Path] = DataDirOpt,
    workers: Optional[int] = WorkersOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train a CLIP model contrastively on captioned images; validate every epoch; keep best and last checkpoints."""
    from ..training.loop import train  # torch and open_clip: loaded only when training

    given: dict[str, Any] = {
        "pretrained": pretrained,
        "epochs": epochs,
        "batch_size": batch_size,
        "accum_steps": accum_steps,
        "lr": lr,
        "wd": wd,
        "schedule": schedule,
        "warmup": warmup,
        "seed": seed,
        "augment": augment,
        "workers": workers,
        "device": device,
        "data_dir": str(data_dir) if data_dir else None,
        "grad_clip": grad_clip,
    }
    config = _run_config(data, arch, out_dir, resume, given)
    try:
        result = train(config, resume=resume, console=None if as_json else out, progress=not as_json)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (training/loop.py turns it into this)
        err.print(f"interrupted: {_how_to_continue(config, data, arch, given)}", highlight=False, soft_wrap=True)
        raise _Interrupted(130) from None
    except BaseException:  # a crash mid-epoch: the one-line error (or traceback) follows this line
        err.print(f"training stopped: {_how_to_continue(config, data, arch, given)}", highlight=False, soft_wrap=True)
        raise
    if as_json:
        out.print_json(json.dumps(_summary(result)))
        return
    out.print(_validation_table(result))
    out.print(
        f"trained {result.seconds:.0f} s; checkpoints in {result.out}; use it with "
        f"--model {config.arch} --pretrained {result.out / BEST_WEIGHTS}",
        highlight=False,
    )


class _Interrupted(SystemExit):
    """Exit 130 after the command has said how to resume (the app's generic interrupt line is not added)."""

    explained = True


def _resume_argv(config: TrainConfig, data: str | None, arch: str | None, given: dict[str, Any]) -> list[str]:
    """This invocation's arguments as a command line, with --out of the run and --resume."""
    argv = ["clipsearch", "train", *([data] if data else []), *(["--arch", arch] if arch else [])]
    for name, value in given.items():
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{name}")
        else:
            argv += [flag, str(value)]
    return [*argv, "--out", str(config.out), "--resume"]


def _how_to_continue(config: TrainConfig, data: str | None, arch: str | None, given: dict[str, Any]) -> str:
    """The exact command that continues the run: --resume once an epoch is saved, else the same command."""
    argv = _resume_argv(config, data, arch, given)
    if (Path(config.out) / LAST_WEIGHTS).is_file():
        return f"the epochs finished so far are saved in {config.out}; continue with: {shlex.join(argv)}"
    return f"no epoch finished, nothing to resume; start again with: {shlex.join(argv[:-1])}"


def _default_out(data: str, arch: str) -> str:
    return str(Path("runs") / f"{Path(data).name or data}-{arch}")


def _run_config(
    data: str | None, arch: str | None, out_dir: str | None, resume: bool, given: dict[str, Any]
) -> TrainConfig:
    """A new run's config, or with `resume` the run's saved one; either way with the options given now set."""
    if resume:
        if out_dir is None:
            raise ClipsearchError("--resume needs --out with the run folder to continue")
        if not (Path(out_dir) / CONFIG_FILE).is_file():
            raise ClipsearchError(f"no training run in {out_dir} (no {CONFIG_FILE}); drop --resume to start one")
        config = read_run_config(Path(out_dir))
        given = {**given, "data": data, "arch": arch}
    else:
        if data is None or arch is None:
            raise ClipsearchError(
                "give the training DATA and --arch (e.g. clipsearch train shapes_data --arch tiny-rn)"
            )
        config = TrainConfig(data=data, arch=arch, out=out_dir or _default_out(data, arch))
    for name, value in given.items():
        if value is not None:
            setattr(config, name, value)
    config.out = out_dir or config.out
    if not resume and (Path(config.out) / LAST_WEIGHTS).exists():  # the API's refusal, with this command's flags
        raise ClipsearchError(
            f"{config.out} already holds a training run: pass --resume to continue it, or choose another --out"
        )
    return config


def _summary(result: TrainResult) -> dict[str, Any]:
    """What `train --json` prints."""
    return {
        "out": str(result.out),
        "epochs_done": result.epochs_done,
        "best_epoch": result.best_epoch,
        "best": result.best_metrics,
        "last": result.last_metrics,
        "chance": result.chance,
        "train_seconds": round(result.seconds, 1),
        "checkpoints": {"best": str(result.out / BEST_WEIGHTS), "last": str(result.out / LAST_WEIGHTS)},
    }


def _validation_table(result: TrainResult) -> Table:
    """Each validation metric at the best epoch, the last epoch, and by chance."""
    table = Table(title=f"validation of {result.out} (best: epoch {result.best_epoch})")
    for column in ("metric", "best", "last", "chance"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, value in result.best_metrics.items():
        last = result.last_metrics.get(key)
        table.add_row(
            key, f"{value:.3f}", "" if last is None else f"{last:.3f}", f"{result.chance.get(key, float('nan')):.3f}"
        )
    return table
