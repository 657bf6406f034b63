"""Contrastive training of a CLIP model on captioned images ("mini-CLIP").

The recipe is open_clip's: `open_clip.ClipLoss` with a learnable temperature
clamped at 100, AdamW with no weight decay on gains, biases and the logit
scale, OneCycle (or warmup + cosine) over optimizer steps, gradient
accumulation that keeps the negatives of the whole effective batch, AMP on
CUDA. On CPU a run is deterministic for its seed: every sample's caption
choice and augmentation are drawn from a seed derived from (seed, epoch,
index), so neither the number of DataLoader workers nor a resume changes them.

After every epoch the model is validated with the same code that scores an
index (`score_embeddings`): text→image / image→text recall@k and zero-shot
top-1 on seen and held-out classes, with prototypes from
`zeroshot.class_prototypes` and vectors from `Encoder`'s own encode path.

A run folder holds `config.json`, `metrics.jsonl`, `curves.png`,
`best.safetensors` (best validation score), `last.safetensors` and
`last.state.pt` (optimizer, scheduler and RNG state for an exact `--resume`).
The .safetensors files are plain open_clip state dicts, so
`--model ARCH --pretrained run/best.safetensors` works everywhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import open_clip
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from ..model.encoder import Encoder, build_model, default_device
from ..model.spec import ModelSpec
from ..model.checkpoints import load_state_dict, save_weights, weights_metadata
from ..errors import ClipsearchError
from ..files import atomic_write_path, atomic_write_text
from ..present.plots import plot_training_curves
from ..files import write_json
from ..sources.images import ImageDecodeError, open_uri
from .data import Example, TrainingData, load_training_data
from ..tasks.zeroshot import class_prototypes, label_indices

# DataLoader workers are forked; they only decode pixels and never touch LanceDB.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last.state.pt"
MAX_LOGIT_SCALE = math.log(100)  # open_clip clamps ln(scale) here after every step
RECALL_KS = (1, 5, 10)
SCHEDULES = ("onecycle", "cosine")
DEFAULT_WARMUP_FRACTION = 0.1  # of all optimizer steps, when --warmup is not given
LOG_ROWS_PER_EPOCH = 10  # step rows in metrics.jsonl per epoch
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
    warmup: int | None = None  # optimizer steps; None: DEFAULT_WARMUP_FRACTION of all steps
    seed: int = 0
    augment: bool = True  # the model's own train transform (open_clip: small random resized crop, no flips)
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    workers: int | None = None
    device: str | None = None

    def check(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps"):
            if getattr(self, name) < 1:
                raise ClipsearchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ClipsearchError(f"--lr must be positive, got {self.lr}")
        if self.wd < 0:
            raise ClipsearchError(f"--wd must not be negative, got {self.wd}")
        if self.schedule not in SCHEDULES:
            raise ClipsearchError(f"unknown --schedule {self.schedule!r}: choose {' or '.join(SCHEDULES)}")
        if self.warmup is not None and self.warmup < 0:
            raise ClipsearchError(f"--warmup must not be negative, got {self.warmup}")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accum_steps

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


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


class ImageDataset(Dataset):
    """Preprocessed pixels for validation: decoded exactly as the indexer decodes them."""

    def __init__(self, examples: Sequence[Example], preprocess: Callable, min_size: int):
        self.examples, self.preprocess, self.min_size = examples, preprocess, min_size

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return self.preprocess(open_uri(self.examples[index].uri, min_size=self.min_size))
        except ImageDecodeError as err:
            raise ClipsearchError(f"cannot validate on {self.examples[index].uri}: {err}") from None


def _default_workers() -> int:
    # Training computes on every core; decoding small images needs at most one helper.
    return 1 if (os.cpu_count() or 1) > 1 else 0


# --------------------------------------------------------------------------
# Model, optimizer, schedule
# --------------------------------------------------------------------------


def build_trainable(spec: ModelSpec, seed: int, device: torch.device) -> tuple[torch.nn.Module, Callable, Callable]:
    """The model to train: pretrained weights or a checkpoint as given, else a random init from `seed`."""
    if spec.is_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, train_tf, eval_tf = open_clip.create_model_and_transforms(spec.arch, pretrained=None)
        model.to(device)
    else:
        model, train_tf, eval_tf = build_model(spec, device)
    return model.train(), train_tf, eval_tf


def is_decay_exempt(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule: gains, biases, norms and the logit scale get no weight decay."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(model: torch.nn.Module, lr: float, wd: float) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if is_decay_exempt(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not is_decay_exempt(n, p)], "weight_decay": wd},
    ]
    # betas/eps as open_clip trains its CLIPs; the fused kernel is several times faster on CPU,
    # which matters for the large token embedding.
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle (warmup = its rising part) or linear warmup then cosine decay to zero, per optimizer step."""
    if schedule == "onecycle":
        steps = max(total_steps, 2)
        # Each phase must span more than 0 steps, or OneCycleLR divides by zero on very short runs.
        rise = min(max(warmup, 1.5), steps - 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=rise / steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _features(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_image(images, normalize=True), model.encode_text(texts, normalize=True)


def contrastive_backward(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """Backpropagate the CLIP loss of one effective batch given as micro-batches; returns the loss.

    With several micro-batches this is open_clip's accumulation: features of
    every micro-batch are first computed without gradients, then each
    micro-batch is recomputed with gradients and the loss is taken over the
    whole effective batch with the others' cached features, so every sample
    still has all the effective batch's negatives. The gradients add up to
    those of one big batch (for models without batch statistics). Unlike
    open_clip, the logit scale takes part only in the first pass: its gradient
    is then counted once rather than once per micro-batch.
    """

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with autocast():
            loss = loss_fn(*_features(model, images, texts), model.logit_scale.exp())
        backward(loss)
        return float(loss.detach())

    with torch.no_grad(), autocast():
        cached = [_features(model, images, texts) for images, texts in micro_batches]
    for j, (images, texts) in enumerate(micro_batches):
        with autocast():
            image_features, text_features = _features(model, images, texts)
            all_images = torch.cat([c[0] for c in cached[:j]] + [image_features] + [c[0] for c in cached[j + 1 :]])
            all_texts = torch.cat([c[1] for c in cached[:j]] + [text_features] + [c[1] for c in cached[j + 1 :]])
            scale = model.logit_scale.exp()
            loss = loss_fn(all_images, all_texts, scale if j == 0 else scale.detach())
        backward(loss)
    return float(loss.detach())


# --------------------------------------------------------------------------
# Validation: the numbers an index evaluation reports
# --------------------------------------------------------------------------


def chance_levels(n_images: int, captions_per_image: np.ndarray | None, n_classes: int) -> dict[str, float]:
    """What a random ranking (recall@k) or a uniform guess (zero-shot top-1) scores on the same set.

    Text→image: k / n_images. Image→text: the chance that at least one of an
    image's c captions lands in the top k of all N captions, 1 - C(N-c, k)/C(N, k),
    averaged over the images that have captions.
    """
    chance: dict[str, float] = {}
    if captions_per_image is not None:
        c = np.asarray(captions_per_image, dtype=np.float64)
        c = c[c > 0]
        n_captions = int(c.sum())
        for k in RECALL_KS:
            chance[f"t2i_R@{k}"] = min(k, n_images) / n_images
            miss = np.ones_like(c)
            for i in range(min(k, n_captions)):  # the binomial ratio as a product, to stay finite
                miss *= np.clip((n_captions - c - i) / (n_captions - i), 0.0, 1.0)
            chance[f"i2t_R@{k}"] = float(np.mean(1.0 - miss))
    if n_classes:
        chance.update({key: 1.0 / n_classes for key in ("zs_top1", "zs_seen_top1", "zs_heldout_top1")})
    return chance


def score_embeddings(
    image_ids: Sequence[str],
    image_vectors: np.ndarray,
    image_labels: Sequence[str | None],
    caption_image_ids: Sequence[str] | None,
    caption_vectors: np.ndarray | None,
    class_names: Sequence[str],
    prototypes: np.ndarray | None,
    heldout: Sequence[str] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chance levels) of unit image vectors against their captions and class prototypes.

    Retrieval goes through `retrieval.report_from_vectors` and zero-shot through
    `zeroshot.zero_shot_accuracy`, the functions `eval retrieval` and
    `eval zeroshot` use, so the same vectors give the same numbers.
    Metrics: t2i_R@k and i2t_R@k (k = 1, 5, 10) when there are captions;
    zs_top1, and with `heldout` classes zs_seen_top1 / zs_heldout_top1, when
    there are prototypes and labelled images.
    """
    from ..tasks.retrieval import report_from_vectors
    from ..tasks.zeroshot import zero_shot_accuracy

    values: dict[str, float] = {}
    captions_per_image = None
    if caption_vectors is not None and len(caption_vectors):
        report = report_from_vectors(image_ids, image_vectors, caption_image_ids, caption_vectors, RECALL_KS)
        for k in RECALL_KS:
            values[f"t2i_R@{k}"] = report["text_to_image"][f"R@{k}"]
            values[f"i2t_R@{k}"] = report["image_to_text"][f"R@{k}"]
        counts = {image_id: 0 for image_id in image_ids}
        for image_id in caption_image_ids:
            counts[image_id] += 1
        captions_per_image = np.array(list(counts.values()))
    labelled = prototypes is not None and bool((label_indices(list(image_labels), class_names) >= 0).any())
    if labelled:
        accuracy = zero_shot_accuracy(image_vectors, image_labels, class_names, prototypes, holdout=list(heldout) or None)
        values["zs_top1"] = accuracy["top1"]
        for key, part in (("zs_seen_top1", "seen"), ("zs_heldout_top1", "held_out")):
            if accuracy.get(part, {}).get("top1") is not None:
                values[key] = accuracy[part]["top1"]
    chance = chance_levels(len(image_ids), captions_per_image, len(class_names) if labelled else 0)
    return values, {key: value for key, value in chance.items() if key in values}


def selection_score(values: dict[str, float]) -> float | None:
    """What "best" means: mean of t2i and i2t R@5 with real captions, else zero-shot top-1."""
    if "t2i_R@5" in values:
        return (values["t2i_R@5"] + values["i2t_R@5"]) / 2
    return values.get("zs_top1")


def validation_metrics(encoder: Encoder, data: TrainingData, workers: int) -> tuple[dict[str, float], dict[str, float]]:
    """Embed the val split with `encoder` and score it (see `score_embeddings`)."""
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        loader = DataLoader(ImageDataset(data.val, encoder.preprocess, encoder.image_size), batch_size=encoder.batch_size,
                            num_workers=workers)
        image_vectors = np.concatenate([encoder.encode_image_tensors(pixels) for pixels in loader])
        ids = [example.uri for example in data.val]
        caption_ids = caption_vectors = None
        if not data.captions_are_prompts:
            caption_ids = [example.uri for example in data.val for _ in example.captions]
            caption_vectors = encoder.encode_texts([caption for example in data.val for caption in example.captions])
        prototypes = class_prototypes(encoder, data.class_prompts) if data.class_names else None
        return score_embeddings(ids, image_vectors, [e.label for e in data.val], caption_ids, caption_vectors,
                                data.class_names, prototypes, sorted(data.heldout))
    finally:
        encoder.model.train(was_training)


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


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
    before, before_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def read_run_config(out: Path) -> TrainConfig:
    """The TrainConfig saved in a run folder."""
    path = Path(out) / CONFIG_FILE
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))["train"])
    except FileNotFoundError:
        raise ClipsearchError(f"no training run in {out} (no {CONFIG_FILE}); drop --resume to start one") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ClipsearchError(f"{path} is not a clipsearch run config ({err})") from None


def _check_resume(config: TrainConfig, out: Path) -> None:
    saved = read_run_config(out)
    changed = [f.name for f in fields(TrainConfig) if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        detail = ", ".join(f"{name} {getattr(config, name)!r} (saved {getattr(saved, name)!r})" for name in changed)
        raise ClipsearchError(f"--resume continues {out} with its saved settings, but these differ: {detail}; "
                              "drop them or train into a new --out")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[rate]:.0f} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _autocast(device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], torch.amp.GradScaler | None]:
    """bf16 autocast on CUDA where supported, else fp16 with a grad scaler; full precision on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def format_metrics(values: dict[str, float]) -> str:
    """One log line: "t2i_R@1 0.412  i2t_R@1 0.380 ..."."""
    return "  ".join(f"{key} {value:.3f}" for key, value in values.items())


class _Run:
    """The objects and files of one training run, built fresh or restored from its folder."""

    def __init__(self, config: TrainConfig, data: TrainingData, resume: bool, console: Console | None):
        self.config, self.data, self.out = config, data, Path(config.out)
        self.spec = ModelSpec.resolve(config.arch, config.pretrained)
        self.device = torch.device(config.device) if config.device else default_device()
        self.workers = _default_workers() if config.workers is None else config.workers
        self.log = console.print if console is not None else (lambda *a, **k: None)
        self.steps_per_epoch = len(data.train) // config.effective_batch
        if self.steps_per_epoch == 0:
            raise ClipsearchError(
                f"{len(data.train)} training images make no full batch of {config.effective_batch} "
                f"(--batch-size {config.batch_size} x --accum-steps {config.accum_steps}); lower --batch-size"
            )
        total_steps = self.steps_per_epoch * config.epochs
        warmup = round(DEFAULT_WARMUP_FRACTION * total_steps) if config.warmup is None else config.warmup

        _seed_everything(config.seed)
        self.model, train_tf, eval_tf = build_trainable(self.spec, config.seed, self.device)
        # Validation embeds through the Encoder code path an index uses, on the live model.
        self.encoder = Encoder(self.spec, self.device, batch_size=256, built=(self.model, None, eval_tf))
        self.optimizer = make_optimizer(self.model, config.lr, config.wd)
        self.scheduler = make_scheduler(self.optimizer, config.schedule, config.lr, total_steps, warmup)
        self.autocast, self.scaler = _autocast(self.device)
        self.loss_fn = open_clip.ClipLoss()
        self.dataset = PairDataset(data.train, train_tf if config.augment else eval_tf, self.encoder.tokenizer,
                                   config.seed, self.encoder.image_size)
        self.run_config = {
            "train": asdict(config), "model": self.spec.to_dict(), "model_config": open_clip.get_model_config(self.spec.arch),
            "data": data.describe(), "steps_per_epoch": self.steps_per_epoch, "total_steps": total_steps,
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

    def train_epoch(self, bar: Progress | None) -> list[float]:
        """One pass over the train split, in the epoch's own seeded order; returns the step losses."""
        config = self.config
        self.dataset.epoch = self.epoch
        generator = torch.Generator().manual_seed(derived_seed(config.seed, self.epoch))
        batches = BatchSampler(RandomSampler(self.dataset, generator=generator), config.batch_size, drop_last=True)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        task = bar.add_task("train", total=self.steps_per_epoch, epoch=f"{self.epoch + 1}/{config.epochs}",
                            loss=float("nan"), lr=self.scheduler.get_last_lr()[0], rate=0.0) if bar else None
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
            if bar:
                bar.update(task, advance=1, loss=losses[-1], lr=lr, rate=rate)
            if len(losses) % log_every == 0:
                self.append_rows({"step": self.step, "epoch": self.epoch + len(losses) / self.steps_per_epoch,
                                  "loss": losses[-1], "lr": lr, "logit_scale": float(self.model.logit_scale.detach().exp()),
                                  "samples_per_s": rate})
        if not math.isfinite(float(np.mean(losses))):
            raise ClipsearchError(f"training diverged in epoch {self.epoch + 1} (loss {np.mean(losses)}); lower --lr")
        return losses

    # -- validation, logs and checkpoints --------------------------------------
    def validate(self, extra: dict[str, Any]) -> dict[str, float]:
        values, self.chance = validation_metrics(self.encoder, self.data, self.workers)
        self.append_rows({"step": self.step, "epoch": self.epoch, **extra, **{f"val_{k}": v for k, v in values.items()}})
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
        state = {"epoch": self.epoch, "step": self.step, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                 "rng": _rng_state(), "best": json.dumps(self.best)}
        atomic_write_path(self.out / LAST_STATE, lambda tmp: torch.save(state, tmp))
        self.save_config()
        plot_training_curves(self.rows, self.out / CURVES_FILE)

    def save_config(self) -> None:
        write_json(self.out / CONFIG_FILE, {**self.run_config, "epochs_done": self.epoch, "step": self.step,
                                            "best": self.best, "chance": self.chance})

    def _restore(self) -> None:
        """Continue from last.safetensors + last.state.pt: weights, optimizer, schedule, RNG, logs."""

        weights, state_path = self.out / LAST_WEIGHTS, self.out / LAST_STATE
        if not weights.is_file() or not state_path.is_file():
            raise ClipsearchError(f"{self.out} has no finished epoch to resume from ({LAST_WEIGHTS} or {LAST_STATE} "
                                  "missing); drop --resume to start the run again")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if weights_metadata(weights).get("epoch") != str(state["epoch"]):
            raise ClipsearchError(f"{self.out}: {LAST_WEIGHTS} and {LAST_STATE} are from different epochs "
                                  "(interrupted while saving); start a new run")
        self.model.load_state_dict(load_state_dict(weights))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), json.loads(state["best"])
        self.chance = json.loads((self.out / CONFIG_FILE).read_text(encoding="utf-8")).get("chance", {})
        # Rows logged after the saved epoch (an interrupted one) are dropped: they are trained again.
        self.rows = [row for row in _read_jsonl(self.out / METRICS_FILE) if row.get("step", 0) <= self.step]

    def history(self) -> list[dict[str, Any]]:
        """The validation rows of metrics.jsonl, one per epoch (0 = untrained)."""
        return [row for row in self.rows if "loss" not in row]


def _normalised(config: TrainConfig) -> TrainConfig:
    """A folder DATA as an absolute path, so a run resumes from any working directory."""
    folder = Path(config.data).expanduser()
    return replace(config, data=str(folder.resolve())) if folder.is_dir() else config


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

    Validates before training (epoch 0, the untrained model) and after every
    epoch. `stop_after` ends this invocation after that many epochs in total
    (e.g. 1 of 2), leaving a run that `resume` finishes exactly.
    """
    config = _normalised(config)
    config.check()
    out = Path(config.out)
    if resume:
        _check_resume(config, out)
    elif (out / LAST_WEIGHTS).exists():  # a run that never finished an epoch is simply started again
        raise ClipsearchError(f"{out} already holds a training run: pass --resume to continue it, or choose another --out")
    data = data or load_training_data(config.data, Path(config.data_dir) if config.data_dir else None)
    log = console.print if console is not None else (lambda *a, **k: None)
    for problem in data.problems[:10]:
        log(f"warning: {problem}", highlight=False)

    device_type = torch.device(config.device).type if config.device else default_device().type
    with _deterministic(enabled=device_type == "cpu"):
        run = _Run(config, data, resume, console)
        if not resume:
            values = run.validate({})
            run.save_config()
            log(f"untrained: {format_metrics(values)}\nchance:    {format_metrics(run.chance)}", highlight=False)
        end_epoch = config.epochs if stop_after is None else min(config.epochs, stop_after)
        started = time.perf_counter()
        with (_progress(console) if progress else contextlib.nullcontext()) as bar:
            while run.epoch < end_epoch:
                epoch_started = time.perf_counter()
                losses = run.train_epoch(bar)
                run.epoch += 1
                values = run.validate({"train_loss": float(np.mean(losses)),
                                       "epoch_seconds": time.perf_counter() - epoch_started})
                run.save(values)
                log(f"epoch {run.epoch}/{config.epochs}: loss {np.mean(losses):.3f}  {format_metrics(values)}",
                    highlight=False)
    history = run.history()
    last = {key[len("val_"):]: value for key, value in history[-1].items() if key.startswith("val_")}
    return TrainResult(out, run.epoch, run.best["epoch"], run.best["metrics"], last, run.chance,
                       time.perf_counter() - started, history)


