"""The model to train and one optimizer step's parts: loss with gradient accumulation, AdamW, schedule, AMP.

The recipe is open_clip's: `open_clip.ClipLoss` with a learnable temperature
(clamped by the loop), AdamW with no weight decay on gains, biases and the
logit scale, OneCycle (or warmup + cosine) over optimizer steps, gradient
accumulation that keeps the negatives of the whole effective batch, AMP on CUDA.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch

from ..model.encoder import build_model
from ..model.spec import ModelSpec, load_open_clip


def build_trainable(spec: ModelSpec, seed: int, device: torch.device) -> tuple[torch.nn.Module, Callable, Callable]:
    """The model to train: pretrained weights or a checkpoint as given, else a random init from `seed`."""
    if spec.is_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # load_open_clip: open_clip with the shipped architectures (tiny-rn, mini) registered
            model, train_tf, eval_tf = load_open_clip().create_model_and_transforms(spec.arch, pretrained=None)
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


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int, warmup: int
) -> torch.optim.lr_scheduler.LRScheduler:
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


def autocast_for(
    device: torch.device,
) -> tuple[Callable[[], contextlib.AbstractContextManager], torch.amp.GradScaler | None]:
    """bf16 autocast on CUDA where supported, else fp16 with a grad scaler; full precision on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
