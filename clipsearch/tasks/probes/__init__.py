"""Probes trained on the frozen vectors stored in an index: linear, MLP and a joint image+text head.

No image is ever decoded or encoded here: features come from the index's stored vectors
(split by their `split` column, labelled by `label_name`). Only the joint head encodes
text, once, for the class-prompt prototypes it starts from.

- features.py  the labelled vectors of a split, classes, few-shot picks, shared settings
- linear.py    LogisticRegression on standardised features, C searched on validation
- heads.py     the torch heads (mlp; joint, which starts exactly at zero-shot) and their training
- probe.py     `Probe`: weights + JSON sidecar, loading, saving, finding, refusing another model
- train.py     `train_probe` (any kind)
- evaluate.py  `evaluate_probe` (a split's accuracy), `apply_probe` (label every image)
- compare.py   `compare_methods`: zero-shot and the three probes side by side

Importing the package loads neither torch nor scikit-learn: they load when a probe trains or runs.
"""

from .compare import ZERO_SHOT, compare_methods
from .evaluate import apply_probe, evaluate_probe
from .features import Features, Hyperparameters, ProgressFn, few_shot, probe_classes, split_features
from .probe import KINDS, Probe, default_probe_path, find_probe, probes_folder, sidecar_path
from .train import train_probe

__all__ = [
    "KINDS",
    "ZERO_SHOT",
    "Features",
    "Hyperparameters",
    "Probe",
    "ProgressFn",
    "apply_probe",
    "compare_methods",
    "default_probe_path",
    "evaluate_probe",
    "few_shot",
    "find_probe",
    "probe_classes",
    "probes_folder",
    "sidecar_path",
    "split_features",
    "train_probe",
]
