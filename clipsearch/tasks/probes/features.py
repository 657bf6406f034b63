"""What a probe learns from: the labelled stored vectors of a split, its classes, few-shot picks,
and the training settings every probe kind shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import ClipsearchError
from ...index.index import Index
from ...index.schema import vectors_of
from ..metrics import classification_report
from ..prompts import default_templates, resolve_labels
from ..zeroshot import label_indices
from ..zeroshot_eval import inferred_labels, stored_class_names

# Below this many feature values (rows x dim), BLAS and torch threads cost more
# than they save: on a busy 2-core machine an L-BFGS fit on 480 x 64 features ran
# 60x slower with 2 threads than with 1, and the MLP 20x slower.
_SMALL_PROBLEM = 1 << 21

# Reports where training is: (what, steps done, total steps or None, a short status).
ProgressFn = Callable[[str, int, "int | None", str], None]


@dataclass
class Hyperparameters:
    """Training settings; the sidecar records the ones the probe's kind uses."""

    max_iter: int = 1000  # linear: L-BFGS iterations per fit
    hidden: int = 512  # mlp: hidden units
    dropout: float = 0.2  # mlp
    lr: float = 1e-3  # mlp, joint: AdamW learning rate
    weight_decay: float = 1e-2  # mlp, joint (joint: on Δ, i.e. towards the zero-shot head)
    batch_size: int = 128  # mlp, joint
    max_epochs: int = 200  # mlp, joint
    patience: int = 20  # mlp, joint: epochs without a better validation top-1 before stopping

    def for_kind(self, kind: str) -> dict[str, Any]:
        values = asdict(self)
        keys = {
            "linear": ("max_iter",),
            "mlp": ("hidden", "dropout", "lr", "weight_decay", "batch_size", "max_epochs", "patience"),
            "joint": ("lr", "weight_decay", "batch_size", "max_epochs", "patience"),
        }[kind]
        return {key: values[key] for key in keys}


@contextmanager
def threads_for(n_values: int) -> Iterator[None]:
    """One BLAS and one torch thread for small problems (see _SMALL_PROBLEM), the defaults otherwise."""
    if n_values >= _SMALL_PROBLEM:
        yield
        return
    import torch  # heavy: imported when a probe runs, not with the module
    from threadpoolctl import threadpool_limits

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(torch_threads)


def validation_summary(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The overall numbers of a classification report, as a probe's sidecar records them."""
    report = classification_report(scores, labels, class_names)
    return {key: report[key] for key in ("top1", "top5", "top5_k", "mean_per_class_recall", "n")}


# -- features of a split -----------------------------------------------------------------


@dataclass
class Features:
    """The labelled rows of one split: ids (sorted), unit vectors, class indices."""

    ids: list[str]
    vectors: np.ndarray
    labels: np.ndarray
    excluded: int = 0  # rows of the split without a label in the class set

    def take(self, rows: np.ndarray) -> Features:
        return Features([self.ids[i] for i in rows], self.vectors[rows], self.labels[rows], self.excluded)

    def __len__(self) -> int:
        return len(self.ids)


def _split_rows(index: Index, split: str, columns: Sequence[str]) -> pa.Table:
    # A fixed row order, whatever the table's layout, for reproducible training.
    return index.split_rows(split, list(columns)).sort_by("id")


def split_features(index: Index, split: str, class_names: Sequence[str]) -> Features:
    """Stored vectors of a split whose label is one of `class_names`, in id order."""
    rows = _split_rows(index, split, ["id", "label_name", "vector"])
    labels = label_indices(rows.column("label_name").to_pylist(), class_names)
    keep = labels >= 0
    if not keep.any():
        raise ClipsearchError(
            f"no image of split {split!r} in index '{index.name}' has a label among {_preview(class_names)}"
        )
    kept = rows.filter(pa.array(keep))
    return Features(kept.column("id").to_pylist(), vectors_of(kept), labels[keep], int((~keep).sum()))


def _preview(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} classes)" if len(names) > n else "")


def index_class_names(index: Index, split: str) -> list[str]:
    """The label names present in a split, sorted (underscores read as spaces)."""
    names = stored_class_names(index, split)
    if not names:
        raise ClipsearchError(
            f"split {split!r} of index '{index.name}' has no labels: "
            "index a labelled dataset or folder, or choose another training split"
        )
    return names


def probe_classes(index: Index, labels: str | None, train_split: str) -> tuple[list[str], list[str]]:
    """(classes a probe learns, classes of the label set without any training image).

    The label set's classes (or, without one, the split's own labels) that have
    training images; a probe cannot learn a class it never sees.
    """
    present = index_class_names(index, train_split)
    if labels is None:
        return present, []
    wanted = resolve_labels(labels)
    seen = label_indices(present, wanted)
    has_images = np.zeros(len(wanted), bool)
    has_images[seen[seen >= 0]] = True
    return [n for n, ok in zip(wanted, has_images) if ok], [n for n, ok in zip(wanted, has_images) if not ok]


def few_shot(features: Features, shots: int, seed: int) -> Features:
    """Exactly `shots` rows per class (all of a class's rows when it has fewer), in id order.

    The pick depends only on the seed and the rows' ids (rows come sorted by
    id), so the same seed picks the same images however the table is laid out.
    """
    if shots < 1:
        raise ClipsearchError(f"shots must be at least 1 image per class, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(features.labels):
        rows = np.flatnonzero(features.labels == label)  # already in id order
        chosen.append(rows[np.sort(rng.permutation(len(rows))[:shots])])
    return features.take(np.sort(np.concatenate(chosen)))


def templates_for(index: Index, labels: str | None, templates: str | None) -> str:
    """The given template spec, else the label set's usual one (for the index's dataset when no labels were given)."""
    if templates:
        return templates
    if labels is None:
        try:
            labels = inferred_labels(index)
        except ClipsearchError:  # an unknown dataset: plain "a photo of a {}."
            return "simple"
    return default_templates(labels)
