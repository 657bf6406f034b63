"""Probes trained on the frozen vectors stored in an index: linear, MLP and a joint image+text head.

No image is ever decoded or encoded here: features come from the `images` table
(split by its `split` column, labelled by `label_name`). Only the joint head
encodes text, once, for the class-prompt prototypes it starts from.

- linear: scikit-learn LogisticRegression on standardised features. C is chosen
  on the validation split by CLIP_benchmark's search (a log grid of 8 steps per
  decade, evaluated every 2 decades, then refined around the peak with halving
  spans), then the probe is refit on train+val with that C.
- mlp: one hidden layer (torch, CPU), early stopping on validation top-1.
- joint: projections I + Δ on image features and on the class prototypes,
  logits = s · cos(image, prototype) with s = 100 and Δ = 0 at the start, so it
  begins exactly at the zero-shot solution; weight decay pulls Δ back towards it.

A probe is a safetensors file of weights plus a JSON sidecar (kind, classes,
model of the index, feature dim, hyper-parameters, chosen C, validation metrics,
seed). It refuses an index whose vectors come from another model.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from ...errors import ClipsearchError
from ..zeroshot_eval import inferred_labels, write_classification_outputs
from ..metrics import classification_report, topk_accuracy
from ..prompts import default_templates, resolve_labels, resolve_templates
from ...files import write_json
from ...index.store import now_iso, vectors_of
from ..zeroshot import LOGIT_SCALE, class_prototypes, label_indices, softmax, zero_shot_logits

if TYPE_CHECKING:
    from ...index.index import Index

KINDS = ("linear", "mlp", "joint")
FORMAT = 1
PROBES_DIR = "probes"
ZERO_SHOT = "zero-shot"

# C grid of the linear search: 1e-6 .. 1e6, 8 steps per decade (CLIP_benchmark's
# spacing; the CLIP paper swept the same range). The search starts every 2 decades.
C_GRID = np.logspace(-6, 6, 97)
C_COARSE_STEP = 16
# Below this many feature values (rows x dim), BLAS and torch threads cost more
# than they save: on a busy 2-core machine an L-BFGS fit on 480 x 64 features ran
# 60x slower with 2 threads than with 1, and the MLP 20x slower.
_SMALL_PROBLEM = 1 << 21
_SCORE_BATCH = 8192  # vectors scored (and written) per batch when applying a probe

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
def _threads_for(n_values: int) -> Iterator[None]:
    """One BLAS and one torch thread for small problems (see _SMALL_PROBLEM), the defaults otherwise."""
    if n_values >= _SMALL_PROBLEM:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(torch_threads)


# -- features of a split -----------------------------------------------------------------


@dataclass
class Features:
    """The labelled rows of one split: ids (sorted), unit vectors, class indices."""

    ids: list[str]
    vectors: np.ndarray
    labels: np.ndarray
    excluded: int = 0  # rows of the split without a label in the class set

    def take(self, rows: np.ndarray) -> "Features":
        return Features([self.ids[i] for i in rows], self.vectors[rows], self.labels[rows], self.excluded)

    def __len__(self) -> int:
        return len(self.ids)


def _split_rows(index: "Index", split: str, columns: Sequence[str]) -> pa.Table:
    # A fixed row order, whatever the table's layout, for reproducible training.
    return index.split_rows(split, list(columns)).sort_by("id")


def split_features(index: "Index", split: str, class_names: Sequence[str]) -> Features:
    """Stored vectors of a split whose label is one of `class_names`, in id order."""
    rows = _split_rows(index, split, ["id", "label_name", "vector"])
    labels = label_indices(rows.column("label_name").to_pylist(), class_names)
    keep = labels >= 0
    if not keep.any():
        raise ClipsearchError(f"no image of split {split!r} in index '{index.name}' has a label among {_preview(class_names)}")
    kept = rows.filter(pa.array(keep))
    return Features(kept.column("id").to_pylist(), vectors_of(kept), labels[keep], int((~keep).sum()))


def _preview(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} classes)" if len(names) > n else "")


def _display_name(name: str) -> str:
    return name.replace("_", " ").strip()  # CIFAR-100's raw "lawn_mower" is the class "lawn mower"


def index_class_names(index: "Index", split: str) -> list[str]:
    """The label names present in a split, sorted (underscores read as spaces)."""
    names = {_display_name(n) for n in _split_rows(index, split, ["id", "label_name"]).column("label_name").to_pylist() if n}
    if not names:
        raise ClipsearchError(
            f"split {split!r} of index '{index.name}' has no labels: index a labelled dataset or folder, or choose --train-split"
        )
    return sorted(names, key=str.lower)


def probe_classes(index: "Index", labels: str | None, train_split: str) -> tuple[list[str], list[str]]:
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
        raise ClipsearchError(f"--shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(features.labels):
        rows = np.flatnonzero(features.labels == label)  # already in id order
        chosen.append(rows[np.sort(rng.permutation(len(rows))[:shots])])
    return features.take(np.sort(np.concatenate(chosen)))


def _templates_for(index: "Index", labels: str | None, templates: str | None) -> str:
    """The given template spec, else the label set's usual one (for the index's dataset when no labels were given)."""
    if templates:
        return templates
    if labels is None:
        try:
            labels = inferred_labels(index)
        except ClipsearchError:  # an unknown dataset: plain "a photo of a {}."
            return "simple"
    return default_templates(labels)


# -- the probe file ----------------------------------------------------------------------


@dataclass
class Probe:
    """A trained probe: its weights (numpy arrays) and its sidecar metadata."""

    kind: str
    class_names: list[str]
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path else self.kind

    def check_index(self, index: "Index") -> None:
        """Refuse vectors from another model: the probe's weights mean nothing in another space."""
        model_id = self.meta.get("model_id")
        if model_id != index.spec.identity():
            raise ClipsearchError(
                f"probe '{self.name}' was trained on {model_id} features but index '{index.name}' holds "
                f"{index.spec.identity()} features; train one on this index with 'clipsearch probe train {index.name}'"
            )
        if int(self.meta.get("dim", -1)) != int(index.manifest["dim"]):
            raise ClipsearchError(f"probe '{self.name}' expects {self.meta.get('dim')}-d features, index '{index.name}' has {index.manifest['dim']}-d")

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(n, classes) logits for unit vectors; the highest is the prediction."""
        vectors = np.asarray(vectors, dtype=np.float32)
        with _threads_for(vectors.size):
            if self.kind == "linear":
                return _linear_scores(self.weights, vectors)
            module = _module_from_weights(self.kind, self.weights)
            with torch.inference_mode():
                return np.concatenate([module(torch.tensor(chunk)).double().numpy()
                                       for chunk in np.array_split(vectors, max(1, math.ceil(len(vectors) / _SCORE_BATCH)))])

    def save(self, path: Path) -> Path:
        """Weights to `path` (.safetensors) and the metadata beside it (.json), both atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({key: np.ascontiguousarray(value) for key, value in self.weights.items()}, str(tmp))
        tmp.replace(path)
        write_json(sidecar_path(path), {**self.meta, "weights_file": path.name})
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path) -> "Probe":
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise ClipsearchError(f"probe not found: {path}")
        try:
            meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
            weights = load_file(str(path))
        except (OSError, ValueError) as err:
            raise ClipsearchError(f"cannot read probe {path}: {str(err).splitlines()[0]}") from err
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS or not meta.get("class_names"):
            raise ClipsearchError(f"{sidecar_path(path)} is not a clipsearch probe sidecar (format {FORMAT})")
        return cls(meta["kind"], list(meta["class_names"]), weights, meta, path)


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def probes_folder(index: "Index") -> Path:
    return index.store.path / PROBES_DIR


def default_probe_path(index: "Index", kind: str) -> Path:
    return probes_folder(index) / f"{kind}.safetensors"


def find_probe(index: "Index", spec: str | Path) -> Path:
    """A probe file from a path, or a name in the index's probes folder ("linear")."""
    path = Path(spec).expanduser()
    if path.suffix in (".safetensors", ".json") and path.exists():
        return path.with_suffix(".safetensors")
    named = probes_folder(index) / f"{spec}.safetensors"
    if named.is_file():
        return named
    existing = sorted(p.stem for p in probes_folder(index).glob("*.safetensors")) if probes_folder(index).is_dir() else []
    raise ClipsearchError(
        f"no probe '{spec}': give a .safetensors file or the name of one in {probes_folder(index)} "
        f"({', '.join(existing) if existing else 'none yet: clipsearch probe train ' + index.name + ' --kind linear'})"
    )


# -- linear: logistic regression with a searched C ----------------------------------------


def _standardised_logistic(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int):
    """A StandardScaler + LogisticRegression pipeline fit in float64; also says whether L-BFGS converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per point of the search instead
        model.fit(features.astype(np.float64), labels)
    return model, bool(np.all(model[-1].n_iter_ < max_iter))


def _linear_weights(model, n_classes: int) -> dict[str, np.ndarray]:
    """The pipeline as plain arrays, one coefficient row per class (binary fits have one row)."""
    scaler, logistic = model[0], model[-1]
    if list(logistic.classes_) != list(range(n_classes)):
        raise ClipsearchError("every class needs training images for a linear probe")
    coef, intercept = logistic.coef_, logistic.intercept_
    if n_classes == 2:  # class 1 wins exactly when w·x + b > 0, as in scikit-learn
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": coef, "intercept": intercept}


def _linear_scores(weights: dict[str, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    # Same operations, in the same order and precision, as the scikit-learn pipeline's decision_function.
    standardised = (vectors.astype(np.float64) - weights["mean"]) / weights["scale"]
    return standardised @ weights["coef"].T + weights["intercept"]


def search_c(train: Features, val: Features, n_classes: int, max_iter: int, seed: int,
             progress: ProgressFn | None = None) -> tuple[float, list[dict[str, Any]], Any]:
    """CLIP_benchmark's search for C on the validation split: (best C, every point evaluated, sorted by C,
    the model fit on train with the best C).

    Coarse: every C_COARSE_STEP-th grid point. Then spans of 8, 4, 2, 1 grid
    steps: the peak moves to a neighbour when it scores higher. Ties go to the
    smaller C (stronger regularisation), so the result is the point with the
    highest validation top-1 among all evaluated, the smallest C among equals.
    """
    evaluated: dict[int, dict[str, Any]] = {}
    models: dict[int, Any] = {}
    coarse = list(range(0, len(C_GRID), C_COARSE_STEP))
    budget = len(coarse) + 2 * int(math.log2(C_COARSE_STEP))  # at most this many fits

    def accuracy(i: int) -> float:
        if i not in evaluated:
            models[i], converged = _standardised_logistic(train.vectors, train.labels, float(C_GRID[i]), max_iter, seed)
            scores = _linear_scores(_linear_weights(models[i], n_classes), val.vectors)
            evaluated[i] = {"C": float(C_GRID[i]), "val_top1": topk_accuracy(scores, val.labels, 1), "converged": converged}
            if progress:
                progress("linear: C search", len(evaluated), budget, f"C={C_GRID[i]:.3g} val top-1 {evaluated[i]['val_top1']:.3f}")
        return evaluated[i]["val_top1"]

    def best(candidates: list[int]) -> int:
        return max(candidates, key=lambda i: (accuracy(i), -i))

    peak = best(coarse)
    span = C_COARSE_STEP // 2
    while span >= 1:
        peak = best([max(peak - span, 0), peak, min(peak + span, len(C_GRID) - 1)])
        span //= 2
    return float(C_GRID[peak]), [evaluated[i] for i in sorted(evaluated)], models[peak]


def _train_linear(train: Features, val: Features, class_names: Sequence[str], hyper: Hyperparameters, seed: int,
                  progress: ProgressFn | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    n_classes = len(class_names)
    c, curve, selected = search_c(train, val, n_classes, hyper.max_iter, seed, progress)
    # Validation metrics of the model that did not see the validation split; the saved one is refit on both.
    validation = _validation_summary(_linear_scores(_linear_weights(selected, n_classes), val.vectors), val.labels, class_names)
    if progress:
        progress("linear: refit on train+val", 0, 1, f"C={c:.3g}")
    both = np.concatenate([train.vectors, val.vectors]), np.concatenate([train.labels, val.labels])
    final, converged = _standardised_logistic(*both, c, hyper.max_iter, seed)
    if progress:
        progress("linear: refit on train+val", 1, 1, f"C={c:.3g}")
    info = {
        "C": c, "c_search": curve, "c_grid": {"min": float(C_GRID[0]), "max": float(C_GRID[-1]), "points": len(C_GRID),
                                              "coarse_step": C_COARSE_STEP},
        "standardised": True, "refit_on": "train+val", "refit_converged": converged, "validation": validation,
    }
    return _linear_weights(final, n_classes), info


# -- mlp and joint: torch heads with early stopping ---------------------------------------


class _MLP(torch.nn.Module):
    """Standardise, one hidden ReLU layer with dropout, class logits."""

    def __init__(self, dim: int, hidden: int, n_classes: int, dropout: float, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.hidden = torch.nn.Linear(dim, hidden)
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.relu(self.hidden((x - self.mean) / self.std))))


class _JointHead(torch.nn.Module):
    """logits = scale · cos((I + Δi) x, (I + Δt) prototype); Δ = 0 and scale = 100 is exactly zero-shot."""

    def __init__(self, prototypes: np.ndarray):
        super().__init__()
        dim = prototypes.shape[1]
        self.register_buffer("prototypes", torch.as_tensor(prototypes, dtype=torch.float32))
        self.image_delta = torch.nn.Parameter(torch.zeros(dim, dim))
        self.text_delta = torch.nn.Parameter(torch.zeros(dim, dim))
        self.log_gain = torch.nn.Parameter(torch.zeros(()))  # scale = 100 · e^gain: exactly 100 at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = F.normalize(x + x @ self.image_delta.T, dim=-1)
        texts = F.normalize(self.prototypes + self.prototypes @ self.text_delta.T, dim=-1)
        return LOGIT_SCALE * self.log_gain.exp() * images @ texts.T


def _module_from_weights(kind: str, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    if kind == "mlp":
        hidden, dim = weights["hidden.weight"].shape
        module: torch.nn.Module = _MLP(dim, hidden, len(weights["out.bias"]), 0.0, weights["mean"], weights["std"])
    else:
        module = _JointHead(weights["prototypes"])
    module.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in weights.items()})
    return module.eval()


def _fit_torch(module: torch.nn.Module, train: Features, val: Features, hyper: Hyperparameters, seed: int,
               parameter_groups: list[dict[str, Any]], what: str, progress: ProgressFn | None) -> dict[str, Any]:
    """AdamW with early stopping on validation top-1 (ties: lower validation loss); keeps the best epoch.

    Epoch 0 is the untrained module, so a head that starts at a good solution
    (joint: zero-shot) never ends worse than it began on validation.
    """
    features, labels = torch.tensor(train.vectors), torch.tensor(train.labels)  # copies: stored arrays are read-only
    val_features, val_labels = torch.tensor(val.vectors), torch.tensor(val.labels)
    optimizer = torch.optim.AdamW(parameter_groups, lr=hyper.lr)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[dict[str, float | None]] = []
    best_key, best_state, best_epoch = None, None, 0

    for epoch in range(hyper.max_epochs + 1):
        train_loss = None  # epoch 0: the module as it starts, before any step
        if epoch > 0:
            module.train()
            total = 0.0
            for batch in torch.randperm(len(features), generator=shuffle).split(hyper.batch_size):
                loss = F.cross_entropy(module(features[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            train_loss = total / len(features)
        module.eval()
        with torch.no_grad():
            logits = module(val_features)
            val_loss = float(F.cross_entropy(logits, val_labels))
        val_top1 = topk_accuracy(logits.numpy(), val.labels, 1)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_top1": val_top1})
        if best_key is None or (val_top1, -val_loss) > best_key:
            best_key, best_state, best_epoch = (val_top1, -val_loss), copy.deepcopy(module.state_dict()), epoch
        if progress:
            progress(f"{what}: epochs", epoch, hyper.max_epochs, f"val top-1 {val_top1:.3f} (best {best_key[0]:.3f} @ {best_epoch})")
        if epoch - best_epoch >= hyper.patience:
            break
    module.load_state_dict(best_state)
    module.eval()
    return {"best_epoch": best_epoch, "epochs_run": len(history) - 1, "history": history}


def _train_mlp(train: Features, val: Features, n_classes: int, hyper: Hyperparameters, seed: int,
               progress: ProgressFn | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    mean, std = train.vectors.mean(axis=0), train.vectors.std(axis=0) + 1e-6
    module = _MLP(train.vectors.shape[1], hyper.hidden, n_classes, hyper.dropout, mean, std)
    info = _fit_torch(module, train, val, hyper, seed, [{"params": module.parameters(), "weight_decay": hyper.weight_decay}], "mlp", progress)
    return _state_arrays(module), info


def _train_joint(train: Features, val: Features, prototypes: np.ndarray, hyper: Hyperparameters, seed: int,
                 progress: ProgressFn | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    module = _JointHead(prototypes)
    groups = [
        {"params": [module.image_delta, module.text_delta], "weight_decay": hyper.weight_decay},  # towards zero-shot
        {"params": [module.log_gain], "weight_decay": 0.0},
    ]
    info = _fit_torch(module, train, val, hyper, seed, groups, "joint", progress)
    info["logit_scale"] = LOGIT_SCALE * float(module.log_gain.detach().exp())
    return _state_arrays(module), info


def _state_arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in module.state_dict().items()}


def _validation_summary(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    report = classification_report(scores, labels, class_names)
    return {key: report[key] for key in ("top1", "top5", "top5_k", "mean_per_class_recall", "n")}


# -- training ---------------------------------------------------------------------------


def train_probe(
    index: "Index", kind: str, *, labels: str | None = None, templates: str | None = None, train_split: str = "train",
    val_split: str = "val", shots: int | None = None, seed: int = 0, hyper: Hyperparameters | None = None,
    progress: ProgressFn | None = None,
) -> Probe:
    """Train a probe on the index's stored vectors (not saved: call `.save(path)`)."""
    if kind not in KINDS:
        raise ClipsearchError(f"unknown probe kind {kind!r}: use one of {', '.join(KINDS)}")
    started = time.perf_counter()
    hyper = hyper or Hyperparameters()
    class_names, without_images = probe_classes(index, labels, train_split)
    if len(class_names) < 2:
        raise ClipsearchError(f"a probe needs at least two classes with training images in split {train_split!r}, found {len(class_names)}")
    train = split_features(index, train_split, class_names)
    if shots is not None:
        train = few_shot(train, shots, seed)
    val = split_features(index, val_split, class_names)
    template_spec = _templates_for(index, labels, templates) if kind == "joint" else None

    # Seeded, without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]), _threads_for(train.vectors.size + val.vectors.size):
        torch.manual_seed(seed)
        if kind == "linear":
            weights, info = _train_linear(train, val, class_names, hyper, seed, progress)
        elif kind == "mlp":
            weights, info = _train_mlp(train, val, len(class_names), hyper, seed, progress)
        else:
            prototypes = class_prototypes(index.encoder, resolve_templates(template_spec, class_names))
            weights, info = _train_joint(train, val, prototypes, hyper, seed, progress)
    if kind != "linear":  # the best epoch's model, as saved
        info["validation"] = _validation_summary(Probe(kind, class_names, weights).scores(val.vectors), val.labels, class_names)

    train_counts = np.bincount(train.labels, minlength=len(class_names))
    meta = {
        "format": FORMAT, "kind": kind, "class_names": class_names, "labels": labels, "templates": template_spec,
        "classes_without_images": without_images, "index": index.name, "model": index.spec.to_dict(),
        "model_id": index.spec.identity(), "dim": int(index.manifest["dim"]), "train_split": train_split,
        "val_split": val_split, "shots": shots, "shot_ids": train.ids if shots is not None else None, "seed": seed,
        "n_train": len(train), "n_val": len(val),
        "train_counts": {name: int(n) for name, n in zip(class_names, train_counts)},
        "hyperparameters": hyper.for_kind(kind), **info, "created": now_iso(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Probe(kind, class_names, weights, meta)


# -- evaluation, applying ------------------------------------------------------------------


def evaluate_probe(index: "Index", probe: Probe, split: str = "test") -> dict[str, Any]:
    """Top-1, top-5, mean per-class recall, per-class accuracy and confusion on a split's stored vectors."""
    probe.check_index(index)
    started = time.perf_counter()
    features = split_features(index, split, probe.class_names)
    report = classification_report(probe.scores(features.vectors), features.labels, probe.class_names)
    return {
        "index": index.name, "model": index.spec.identity(), "probe": probe.name, "kind": probe.kind, "split": split,
        "excluded": features.excluded, **report, "seconds": round(time.perf_counter() - started, 3),
    }


def default_eval_dir(index: "Index", probe: Probe, split: str) -> Path:
    return index.store.path / "eval" / f"probe-{probe.name}-{split}"


def write_probe_outputs(result: dict[str, Any], probe: Probe, out_dir: Path) -> dict[str, Path]:
    title = f"probe {probe.name} ({probe.kind}) · {result['index']} · {result['split']}"
    return write_classification_outputs(result, probe.class_names, out_dir, title)


def apply_probe(index: "Index", probe: Probe, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Label every live image: probe_label (class), probe_score (its softmax probability), probe_name.

    Only label columns change, so the FAISS file stays valid.
    """
    probe.check_index(index)
    started = time.perf_counter()

    def most_probable(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probability = softmax(probe.scores(vectors))
        return probability.argmax(axis=1), probability.max(axis=1)

    counts = index.write_labels(most_probable, probe.class_names, "probe_label", "probe_score", {"probe_name": probe.name}, on_batch)
    return {
        "index": index.name, "probe": probe.name, "kind": probe.kind, "n": sum(counts.values()),
        "counts": counts, "seconds": round(time.perf_counter() - started, 3),
    }


# -- zero-shot and the three probes side by side --------------------------------------------


def _reusable(path: Path, index: "Index", class_names: list[str], train_split: str, val_split: str, templates: str) -> Probe | None:
    """The saved probe at `path` when it was trained on this index's model, classes and splits (all images),
    and for a joint head, from the same prompt templates."""
    if not path.is_file():
        return None
    try:
        probe = Probe.load(path)
    except ClipsearchError:
        return None
    meta = probe.meta
    same = (meta.get("model_id") == index.spec.identity() and probe.class_names == class_names and meta.get("shots") is None
            and meta.get("train_split") == train_split and meta.get("val_split") == val_split
            and (probe.kind != "joint" or meta.get("templates") == templates))
    return probe if same else None


def compare_methods(
    index: "Index", *, labels: str | None = None, templates: str | None = None, split: str = "test",
    train_split: str = "train", val_split: str = "val", seed: int = 0, retrain: bool = False,
    hyper: Hyperparameters | None = None, progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Zero-shot, linear, mlp and joint on the same rows of a split and the same classes.

    The classes are those the probes can learn (the label set's classes with
    training images), so zero-shot is scored over exactly these classes too.
    Probes saved in the index's probes folder for the same model, classes and
    splits are reused; the others are trained (all training images, `seed`) and saved there.
    """
    started = time.perf_counter()
    class_names, without_images = probe_classes(index, labels, train_split)
    template_spec = _templates_for(index, labels, templates)
    features = split_features(index, split, class_names)
    prototypes = class_prototypes(index.encoder, resolve_templates(template_spec, class_names))
    methods = {ZERO_SHOT: classification_report(zero_shot_logits(features.vectors, prototypes), features.labels, class_names)}
    probes, trained = {}, []
    for kind in ("linear", "mlp", "joint"):
        path = default_probe_path(index, kind)
        probe = None if retrain else _reusable(path, index, class_names, train_split, val_split, template_spec)
        if probe is None:
            probe = train_probe(index, kind, labels=labels, templates=template_spec, train_split=train_split,
                                val_split=val_split, seed=seed, hyper=hyper, progress=progress)
            probe.save(path)
            trained.append(kind)
        methods[kind] = classification_report(probe.scores(features.vectors), features.labels, class_names)
        probes[kind] = str(path)
    return {
        "index": index.name, "model": index.spec.identity(), "split": split, "labels": labels, "templates": template_spec,
        "class_names": class_names, "classes_without_images": without_images, "excluded": features.excluded,
        "n": len(features), "methods": methods, "probes": probes, "trained": trained,
        "seconds": round(time.perf_counter() - started, 3),
    }
