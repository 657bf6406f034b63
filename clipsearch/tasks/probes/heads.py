"""The torch probe heads: an MLP and the joint image+text head, trained with early stopping.

A head is its state, a dict of named tensors (exactly the arrays a probe file stores), and
one function from that state and features to logits (`head_logits`):

- mlp: standardise, one hidden ReLU layer with dropout, class logits
  (keys mean, std, hidden.weight, hidden.bias, out.weight, out.bias);
- joint: logits = s · cos((I + Δi) x, (I + Δt) prototype) with s = 100 · e^gain; Δ = 0 and
  gain = 0 at the start, so it begins exactly at the zero-shot solution
  (keys prototypes, image_delta, text_delta, log_gain).

torch is imported when a head is built, trained or run, not with this module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics import topk_accuracy
from ..zeroshot import LOGIT_SCALE
from .features import Features, Hyperparameters, ProgressFn

if TYPE_CHECKING:
    import torch

HEAD_KINDS = ("mlp", "joint")
_SCORE_BATCH = 8192  # vectors scored per batch when applying a head
State = dict[str, "torch.Tensor"]


def mlp_state(dim: int, hidden: int, n_classes: int, mean: np.ndarray, std: np.ndarray) -> State:
    """A fresh MLP: torch's default Linear initialisation (seeded by the caller)."""
    import torch

    first, last = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, n_classes)
    return {
        "mean": torch.as_tensor(mean, dtype=torch.float32),
        "std": torch.as_tensor(std, dtype=torch.float32),
        "hidden.weight": first.weight.detach().requires_grad_(),
        "hidden.bias": first.bias.detach().requires_grad_(),
        "out.weight": last.weight.detach().requires_grad_(),
        "out.bias": last.bias.detach().requires_grad_(),
    }


def joint_state(prototypes: np.ndarray) -> State:
    """A fresh joint head over unit class prototypes (C, dim): Δ = 0, gain = 0, i.e. zero-shot."""
    import torch

    dim = prototypes.shape[1]
    return {
        "prototypes": torch.as_tensor(prototypes, dtype=torch.float32),
        "image_delta": torch.zeros(dim, dim, requires_grad=True),
        "text_delta": torch.zeros(dim, dim, requires_grad=True),
        "log_gain": torch.zeros((), requires_grad=True),
    }


def head_logits(kind: str, state: State, x: torch.Tensor, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """(n, classes) logits of a head for features x (n, dim); dropout acts only while training."""
    import torch.nn.functional as F

    if kind == "mlp":
        hidden = F.relu(F.linear((x - state["mean"]) / state["std"], state["hidden.weight"], state["hidden.bias"]))
        return F.linear(F.dropout(hidden, dropout, training), state["out.weight"], state["out.bias"])
    prototypes = state["prototypes"]
    images = F.normalize(x + x @ state["image_delta"].T, dim=-1)
    texts = F.normalize(prototypes + prototypes @ state["text_delta"].T, dim=-1)
    return LOGIT_SCALE * state["log_gain"].exp() * images @ texts.T


def head_scores(kind: str, weights: dict[str, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """(n, classes) float64 logits of a stored head (its arrays) for float32 vectors, in batches."""
    import torch

    state = {key: torch.from_numpy(np.array(value)) for key, value in weights.items()}
    with torch.inference_mode():
        return np.concatenate(
            [
                head_logits(kind, state, torch.tensor(chunk)).double().numpy()
                for chunk in np.array_split(vectors, max(1, math.ceil(len(vectors) / _SCORE_BATCH)))
            ]
        )


def _arrays(state: State) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in state.items()}


def _train_epoch(
    kind: str,
    state: State,
    optimizer: Any,
    features: torch.Tensor,
    labels: torch.Tensor,
    hyper: Hyperparameters,
    shuffle: Any,
) -> float:
    """One pass over shuffled batches; returns the mean training loss."""
    import torch
    import torch.nn.functional as F

    dropout = hyper.dropout if kind == "mlp" else 0.0
    total = 0.0
    for batch in torch.randperm(len(features), generator=shuffle).split(hyper.batch_size):
        loss = F.cross_entropy(head_logits(kind, state, features[batch], dropout, training=True), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(features)


def fit_head(
    kind: str,
    state: State,
    parameter_groups: list[dict[str, Any]],
    train: Features,
    val: Features,
    hyper: Hyperparameters,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """AdamW with early stopping on validation top-1 (ties: lower validation loss): (the best
    epoch's arrays, the training record).

    Epoch 0 is the untrained head, so a head that starts at a good solution
    (joint: zero-shot) never ends worse than it began on validation.
    """
    import torch
    import torch.nn.functional as F

    features, labels = torch.tensor(train.vectors), torch.tensor(train.labels)  # copies: stored arrays are read-only
    val_features, val_labels = torch.tensor(val.vectors), torch.tensor(val.labels)
    optimizer = torch.optim.AdamW(parameter_groups, lr=hyper.lr)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[dict[str, float | None]] = []
    best_key, best_state, best_epoch = None, state, 0
    for epoch in range(hyper.max_epochs + 1):
        # epoch 0: the head as it starts, before any step
        train_loss = _train_epoch(kind, state, optimizer, features, labels, hyper, shuffle) if epoch > 0 else None
        with torch.no_grad():
            logits = head_logits(kind, state, val_features)
            val_loss = float(F.cross_entropy(logits, val_labels))
        val_top1 = topk_accuracy(logits.numpy(), val.labels, 1)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_top1": val_top1})
        if best_key is None or (val_top1, -val_loss) > best_key:
            best_key, best_epoch = (val_top1, -val_loss), epoch
            best_state = {key: value.detach().clone() for key, value in state.items()}
        if progress:
            status = f"val top-1 {val_top1:.3f} (best {best_key[0]:.3f} @ {best_epoch})"
            progress(f"{kind}: epochs", epoch, hyper.max_epochs, status)
        if epoch - best_epoch >= hyper.patience:
            break
    return _arrays(best_state), {"best_epoch": best_epoch, "epochs_run": len(history) - 1, "history": history}


def train_mlp(
    train: Features, val: Features, n_classes: int, hyper: Hyperparameters, seed: int, progress: ProgressFn | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    mean, std = train.vectors.mean(axis=0), train.vectors.std(axis=0) + 1e-6
    state = mlp_state(train.vectors.shape[1], hyper.hidden, n_classes, mean, std)
    trainable = [state[key] for key in ("hidden.weight", "hidden.bias", "out.weight", "out.bias")]
    groups = [{"params": trainable, "weight_decay": hyper.weight_decay}]
    return fit_head("mlp", state, groups, train, val, hyper, seed, progress)


def train_joint(
    train: Features,
    val: Features,
    prototypes: np.ndarray,
    hyper: Hyperparameters,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    state = joint_state(prototypes)
    groups = [
        {
            "params": [state["image_delta"], state["text_delta"]],
            "weight_decay": hyper.weight_decay,
        },  # towards zero-shot
        {"params": [state["log_gain"]], "weight_decay": 0.0},
    ]
    weights, info = fit_head("joint", state, groups, train, val, hyper, seed, progress)
    info["logit_scale"] = LOGIT_SCALE * float(np.exp(weights["log_gain"]))
    return weights, info
