"""The training run ("mini-CLIP"): epochs of contrastive steps on captioned images, logs, checkpoints, resume.

On CPU a run is deterministic for its seed: every sample's caption choice and
augmentation are drawn from a seed derived from (seed, epoch, index), so
neither the number of DataLoader workers nor a resume changes them.
The model, loss and optimizer are in `optim.py`, the validation before
training and after every epoch in `validate.py`, the run folder in `config.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from rich.console import Console
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from ..errors import ClipsearchError
from ..files import atomic_write_path, atomic_write_text, read_json, write_json
from ..model.checkpoints import load_state_dict, save_weights, weights_metadata
from ..model.encoder import Encoder, default_device
from ..model.spec import ModelSpec
from ..present.plots import plot_training_curves
from ..present.progress import Update, progress_bars
from ..sources.images import ImageDecodeError, open_uri
from .config import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    CURVES_FILE,
    LAST_STATE,
    LAST_WEIGHTS,
    METRICS_FILE,
    TrainConfig,
    checked_run_config,
)
from .data import Example, TrainingData, load_training_data
from .optim import autocast_for, build_trainable, contrastive_backward, make_optimizer, make_scheduler
from .validate import format_metrics, selection_score, validation_metrics

# DataLoader workers are forked; they only decode pixels and never touch LanceDB.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

MAX_LOGIT_SCALE = math.log(100)  # open_clip clamps ln(scale) here after every step
DEFAULT_WARMUP_FRACTION = 0.1  # of all optimizer steps, when --warmup is not given
LOG_ROWS_PER_EPOCH = 10  # step rows in metrics.jsonl per epoch


@dataclass
class TrainResult:
    out: Path
    epochs_done: int
    best_epoch: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    chance: dict[str, float]
    seconds: float  # wall time of this invocation's training (resumed runs: this part only)
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch rows of metrics.jsonl


def derived_seed(*parts: int) -> int:
    """A seed for one purpose, e.g. (seed, epoch) for an epoch's shuffle or (seed, epoch, index) for one
    sample's caption and augmentation, so they do not depend on batching, workers or resuming."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class PairDataset(Dataset):
    """(pixels, tokens) for training: one caption per image, drawn anew each epoch."""

    def __init__(self, examples: Sequence[Example], transform: Callable, tokenizer: Callable, seed: int, min_size: int):
        self.examples, self.transform, self.tokenizer = examples, transform, tokenizer
        self.seed, self.min_size, self.epoch = seed, min_size, 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        example = self.examples[index]
        seed = derived_seed(self.seed, self.epoch, index)
        caption = example.captions[random.Random(seed).randrange(len(example.captions))]
        try:
            image = open_uri(example.uri, min_size=self.min_size)
        except ImageDecodeError as err:
            raise ClipsearchError(f"cannot train on {example.uri}: {err}") from None
        # The transform draws from torch's global generator: seed it for this sample, then put it back
        # (torch.random.fork_rng does the same, 50x slower, which shows at a few ms per image).
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(seed)
        try:
            pixels = self.transform(image)
        finally:
            generator.set_state(saved)
        return pixels, self.tokenizer([caption])[0]


def _default_workers() -> int:
    # Training computes on every core; decoding small images needs at most one helper.
    return 1 if (os.cpu_count() or 1) > 1 else 0


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the run only (it is process-wide)."""
    before, before_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler) stops the run as Ctrl-C does, so the caller can print how to resume."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread can set it
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Run:
    """The objects and files of one training run, built fresh or restored from its folder."""

    def __init__(self, config: TrainConfig, data: TrainingData, resume: bool):
        self.config, self.data, self.out = config, data, Path(config.out)
        self.spec = ModelSpec.resolve(config.arch, config.pretrained)
        self.device = torch.device(config.device) if config.device else default_device()
        self.workers = _default_workers() if config.workers is None else config.workers
        self.steps_per_epoch = len(data.train) // config.effective_batch
        if self.steps_per_epoch == 0:
            raise ClipsearchError(
                f"{len(data.train)} training images make no full batch of {config.effective_batch} "
                f"(batch size {config.batch_size} x {config.accum_steps} accumulation steps); lower the batch size"
            )
        total_steps = self.steps_per_epoch * config.epochs
        warmup = round(DEFAULT_WARMUP_FRACTION * total_steps) if config.warmup is None else config.warmup

        _seed_everything(config.seed)
        self.model, train_tf, eval_tf = build_trainable(self.spec, config.seed, self.device)
        # Validation embeds through the Encoder code path an index uses, on the live model.
        self.encoder = Encoder(self.spec, self.device, batch_size=256, built=(self.model, eval_tf))
        self.optimizer = make_optimizer(self.model, config.lr, config.wd)
        self.scheduler = make_scheduler(self.optimizer, config.schedule, config.lr, total_steps, warmup)
        self.autocast, self.scaler = autocast_for(self.device)
        self.loss_fn = open_clip.ClipLoss()
        self.dataset = PairDataset(
            data.train,
            train_tf if config.augment else eval_tf,
            self.encoder.tokenizer,
            config.seed,
            self.encoder.image_size,
        )
        self.run_config = {
            "train": asdict(config),
            "model": self.spec.to_dict(),
            "model_config": open_clip.get_model_config(self.spec.arch),
            "data": data.describe(),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": total_steps,
            "warmup_steps": warmup,
        }
        self.epoch, self.step, self.chance = 0, 0, {}
        self.best: dict[str, Any] = {"epoch": None, "score": None, "metrics": {}}
        self.rows: list[dict[str, Any]] = []  # metrics.jsonl
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()

    # -- one optimizer step and one epoch ------------------------------------
    def optimizer_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = contrastive_backward(self.model, self.loss_fn, micro_batches, self.autocast, self.scaler)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        self.step += 1
        return loss

    def train_epoch(self, update: Update) -> list[float]:
        """One pass over the train split, in the epoch's own seeded order; returns the step losses."""
        config = self.config
        self.dataset.epoch = self.epoch
        generator = torch.Generator().manual_seed(derived_seed(config.seed, self.epoch))
        batches = BatchSampler(RandomSampler(self.dataset, generator=generator), config.batch_size, drop_last=True)
        loader = DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.workers, pin_memory=self.device.type == "cuda"
        )
        bar, samples = f"epoch {self.epoch + 1}/{config.epochs}", self.steps_per_epoch * config.effective_batch
        update(bar, 0, samples)
        log_every = max(1, self.steps_per_epoch // LOG_ROWS_PER_EPOCH)
        started, losses, pending = time.perf_counter(), [], []
        for images, texts in loader:
            pending.append((images.to(self.device, non_blocking=True), texts.to(self.device, non_blocking=True)))
            if len(pending) < config.accum_steps:
                continue
            lr = self.scheduler.get_last_lr()[0]
            losses.append(self.optimizer_step(pending))
            pending = []
            rate = len(losses) * config.effective_batch / max(time.perf_counter() - started, 1e-9)
            update(bar, len(losses) * config.effective_batch, samples, f"loss {losses[-1]:.3f}  lr {lr:.2e}")
            if len(losses) % log_every == 0:
                self.append_rows(
                    {
                        "step": self.step,
                        "epoch": self.epoch + len(losses) / self.steps_per_epoch,
                        "loss": losses[-1],
                        "lr": lr,
                        "logit_scale": float(self.model.logit_scale.detach().exp()),
                        "samples_per_s": rate,
                    }
                )
        if not math.isfinite(float(np.mean(losses))):
            raise ClipsearchError(f"training diverged in epoch {self.epoch + 1} (loss {np.mean(losses)}); lower lr")
        return losses

    # -- validation, logs and checkpoints --------------------------------------
    def validate(self, extra: dict[str, Any]) -> dict[str, float]:
        values, self.chance = validation_metrics(self.encoder, self.data, self.workers)
        self.append_rows(
            {"step": self.step, "epoch": self.epoch, **extra, **{f"val_{k}": v for k, v in values.items()}}
        )
        return values

    def append_rows(self, *rows: dict[str, Any]) -> None:
        self.rows.extend(rows)
        text = "".join(json.dumps(row) + "\n" for row in self.rows)
        atomic_write_text(self.out / METRICS_FILE, text)

    def save(self, values: dict[str, float]) -> None:
        """After an epoch: last (+ best) weights, the resume state, config.json and the curves."""
        meta = {"arch": self.spec.arch, "epoch": self.epoch, "step": self.step}
        save_weights(self.model, self.out / LAST_WEIGHTS, meta)
        score = selection_score(values)
        if self.best["score"] is None or (score is not None and score > self.best["score"]):
            self.best = {"epoch": self.epoch, "score": score, "metrics": values}
            save_weights(self.model, self.out / BEST_WEIGHTS, meta)
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": _rng_state(),
            "best": json.dumps(self.best),
        }
        atomic_write_path(self.out / LAST_STATE, lambda tmp: torch.save(state, tmp))
        self.save_config()
        plot_training_curves(self.rows, self.out / CURVES_FILE, self.chance)

    def save_config(self) -> None:
        write_json(
            self.out / CONFIG_FILE,
            {**self.run_config, "epochs_done": self.epoch, "step": self.step, "best": self.best, "chance": self.chance},
        )

    def _restore(self) -> None:
        """Continue from last.safetensors + last.state.pt: weights, optimizer, schedule, RNG, logs."""
        weights, state_path = self.out / LAST_WEIGHTS, self.out / LAST_STATE
        if not weights.is_file() or not state_path.is_file():
            raise ClipsearchError(
                f"{self.out} has no finished epoch to resume from ({LAST_WEIGHTS} or {LAST_STATE} "
                "missing); start the run again instead of resuming"
            )
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if weights_metadata(weights).get("epoch") != str(state["epoch"]):
            raise ClipsearchError(
                f"{self.out}: {LAST_WEIGHTS} and {LAST_STATE} are from different epochs "
                "(interrupted while saving); start a new run"
            )
        self.model.load_state_dict(load_state_dict(weights))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), json.loads(state["best"])
        self.chance = read_json(self.out / CONFIG_FILE).get("chance", {})
        # Rows logged after the saved epoch (an interrupted one) are dropped: they are trained again.
        self.rows = [row for row in _read_jsonl(self.out / METRICS_FILE) if row.get("step", 0) <= self.step]

    def history(self) -> list[dict[str, Any]]:
        """The validation rows of metrics.jsonl, one per epoch (0 = untrained)."""
        return [row for row in self.rows if "loss" not in row]


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    console: Console | None = None,
    progress: bool = True,
    data: TrainingData | None = None,
) -> TrainResult:
    """Train (or with `resume`, continue) the run in `config.out`; returns its validation results.

    Validates before training (epoch 0, the untrained model) and after every epoch. `stop_after` ends
    this invocation after that many epochs in total (e.g. 1 of 2), leaving a run that `resume` finishes exactly.
    """
    config = checked_run_config(config, resume)
    data = data or load_training_data(config.data, Path(config.data_dir) if config.data_dir else None)
    # soft_wrap: a log file or a pipe gets each epoch as one line (a terminal wraps it itself)
    log = (lambda *a, **k: console.print(*a, soft_wrap=True, **k)) if console else (lambda *a, **k: None)
    for problem in data.problems[:10]:
        log(f"warning: {problem}", highlight=False)

    device_type = torch.device(config.device).type if config.device else default_device().type
    with _deterministic(enabled=device_type == "cpu"), _sigterm_interrupts():
        run = _Run(config, data, resume)
        if not resume:
            values = run.validate({})
            run.save_config()
            log(f"untrained: {format_metrics(values)}\nchance:    {format_metrics(run.chance)}", highlight=False)
        end_epoch = config.epochs if stop_after is None else min(config.epochs, stop_after)
        started = time.perf_counter()
        with progress_bars(progress, unit="samples") as update:
            while run.epoch < end_epoch:
                epoch_started = time.perf_counter()
                losses = run.train_epoch(update)
                run.epoch += 1
                values = run.validate(
                    {"train_loss": float(np.mean(losses)), "epoch_seconds": time.perf_counter() - epoch_started}
                )
                run.save(values)
                log(
                    f"epoch {run.epoch}/{config.epochs}: loss {np.mean(losses):.3f}  {format_metrics(values)}",
                    highlight=False,
                )
    history = run.history()
    last = {key[len("val_") :]: value for key, value in history[-1].items() if key.startswith("val_")}
    return TrainResult(
        run.out,
        run.epoch,
        run.best["epoch"],
        run.best["metrics"],
        last,
        run.chance,
        time.perf_counter() - started,
        history,
    )
