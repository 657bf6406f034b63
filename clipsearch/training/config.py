"""What defines a training run, and the run folder that keeps it.

A run folder holds `config.json` (this `TrainConfig` under "train", with the
model, data and progress of the run), `metrics.jsonl`, `curves.png`,
`best.safetensors` (best validation score), `last.safetensors` and
`last.state.pt` (optimizer, scheduler and RNG state for an exact `--resume`).
The .safetensors files are plain open_clip state dicts, so
`--model ARCH --pretrained run/best.safetensors` works everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ClipsearchError
from ..files import read_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last.state.pt"
SCHEDULES = ("onecycle", "cosine")
# Settings a resumed run may change: they do not change what is computed.
RESUMABLE_CHANGES = ("workers", "device", "out")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved in config.json and checked on --resume."""

    data: str
    arch: str
    out: str
    pretrained: str = "none"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 128  # per micro-batch; the optimizer sees batch_size * accum_steps
    accum_steps: int = 1
    lr: float = 1e-3
    wd: float = 0.1
    schedule: str = "onecycle"
    warmup: int | None = None  # optimizer steps; None: a tenth of all steps
    seed: int = 0
    augment: bool = True  # the model's own train transform (open_clip: small random resized crop, no flips)
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    workers: int | None = None
    device: str | None = None

    def check(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps"):
            if getattr(self, name) < 1:
                raise ClipsearchError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ClipsearchError(f"lr (learning rate) must be positive, got {self.lr}")
        if self.wd < 0:
            raise ClipsearchError(f"wd (weight decay) must not be negative, got {self.wd}")
        if self.schedule not in SCHEDULES:
            raise ClipsearchError(f"unknown schedule {self.schedule!r}: choose {' or '.join(SCHEDULES)}")
        if self.warmup is not None and self.warmup < 0:
            raise ClipsearchError(f"warmup must not be negative, got {self.warmup}")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accum_steps

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_run_config(out: Path) -> TrainConfig:
    """The TrainConfig saved in a run folder."""
    path = Path(out) / CONFIG_FILE
    try:
        return TrainConfig.from_dict(read_json(path)["train"])
    except FileNotFoundError:
        raise ClipsearchError(f"no training run in {out} (no {CONFIG_FILE}) to resume; start one instead") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ClipsearchError(f"{path} is not a clipsearch run config ({err})") from None


def checked_run_config(config: TrainConfig, resume: bool) -> TrainConfig:
    """`config` checked, with a folder DATA made absolute (a run then resumes from any working
    directory); refuses to start over a run, or to resume one with settings that change it."""
    folder = Path(config.data).expanduser()
    config = replace(config, data=str(folder.resolve())) if folder.is_dir() else config
    config.check()
    out = Path(config.out)
    if resume:
        _check_resume(config, out)
    elif (out / LAST_WEIGHTS).exists():  # a run that never finished an epoch is simply started again
        raise ClipsearchError(f"{out} already holds a training run: resume it, or train into another run folder")
    return config


def _check_resume(config: TrainConfig, out: Path) -> None:
    saved = read_run_config(out)
    changed = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if changed:
        detail = ", ".join(f"{name} {getattr(config, name)!r} (saved {getattr(saved, name)!r})" for name in changed)
        raise ClipsearchError(
            f"resuming continues {out} with its saved settings, but these differ: {detail}; "
            "leave them out or train into a new run folder"
        )
