"""Zero-shot label sets and prompt templates.

A label spec names the classes (a built-in set, a file with one label per line,
or an inline "cat,dog,bird"); a template spec says how each class becomes
sentences (a built-in template set, a file with one "{}" template per line, or
a .json file mapping each class to its own sentences).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ClipsearchError

# The 18 CIFAR-10/100 templates of the CLIP paper (openai/CLIP, data/prompts.md).
CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
SIMPLE_TEMPLATES = ("a photo of a {}.",)
# Worded like the generated shapes captions, which is what a model trained on them knows.
SHAPES_TEMPLATES = ("a {}.", "a picture of a {}.", "a {} on a plain background.")

CIFAR10_CLASSNAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Fine label names in official order, underscores as spaces (as CLIP and CLIP_benchmark use).
CIFAR100_CLASSNAMES = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)  # fmt: skip

PLACEHOLDER = "{}"


def _imagenet_templates() -> list[str]:
    # Imported on demand: open_clip pulls in torch, which label/prompt parsing never needs.
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [template(PLACEHOLDER) for template in OPENAI_IMAGENET_TEMPLATES]


def _shapes_class_names() -> list[str]:
    from ..sources.shapes import class_names

    return list(class_names())


TEMPLATE_SETS: dict[str, Callable[[], list[str]]] = {
    "cifar": lambda: list(CIFAR_TEMPLATES),
    "imagenet": _imagenet_templates,
    "simple": lambda: list(SIMPLE_TEMPLATES),
    "shapes": lambda: list(SHAPES_TEMPLATES),
}
# The template set each built-in label set is evaluated with by default.
DEFAULT_TEMPLATES = {"cifar10": "cifar", "cifar100": "cifar", "shapes": "shapes"}


def default_templates(label_spec: str) -> str:
    return DEFAULT_TEMPLATES.get(label_spec, "simple")

LABEL_SETS: dict[str, Callable[[], list[str]]] = {
    "cifar10": lambda: list(CIFAR10_CLASSNAMES),
    "cifar100": lambda: list(CIFAR100_CLASSNAMES),
    "shapes": _shapes_class_names,
}


def resolve_labels(spec: str) -> list[str]:
    """Class names from a label set name, a file (one label per line) or "cat,dog,bird"."""
    if spec in LABEL_SETS:
        return LABEL_SETS[spec]()
    path = Path(spec).expanduser()
    if path.is_file():
        return _unique_labels(_read_lines(path), str(path))
    if "," in spec:
        return _unique_labels([label.strip() for label in spec.split(",") if label.strip()], "the label list")
    raise ClipsearchError(
        f"unknown labels {spec!r}: use one of {', '.join(LABEL_SETS)}, a file with one label per line, "
        "or a comma list such as cat,dog,bird"
    )


def resolve_templates(spec: str, labels: list[str]) -> list[list[str]]:
    """For each label, its prompt sentences.

    `spec` is a template set name, a file of templates (one per line, each with
    "{}"), or a .json file mapping each class to a list of full sentences.
    """
    if spec in TEMPLATE_SETS:
        return _fill(TEMPLATE_SETS[spec](), labels)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _per_class_prompts(path, labels)
        return _fill(_read_templates(path), labels)
    raise ClipsearchError(
        f"unknown templates {spec!r}: use one of {', '.join(TEMPLATE_SETS)}, a file with one template "
        "per line containing {}, or a .json file mapping each class to its prompts"
    )


def _fill(templates: list[str], labels: list[str]) -> list[list[str]]:
    # str.replace, not str.format: a template may hold other braces ("{x}") that format would reject.
    return [[template.replace(PLACEHOLDER, label) for template in templates] for label in labels]


def _read_lines(path: Path) -> list[str]:
    """Non-blank, stripped lines of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ClipsearchError(f"cannot read {path}: {err}") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _unique_labels(labels: list[str], where: str) -> list[str]:
    if not labels:
        raise ClipsearchError(f"{where} holds no labels: give one label per line (or comma-separated inline)")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ClipsearchError(f"{where} repeats labels {', '.join(duplicates)}: each class must appear once")
    return labels


def _read_templates(path: Path) -> list[str]:
    templates = _read_lines(path)
    if not templates:
        raise ClipsearchError(f"{path} holds no templates: write one per line, each containing {{}}")
    for template in templates:
        if PLACEHOLDER not in template:
            raise ClipsearchError(f"{path}: template {template!r} has no {{}} where the class name goes")
    return templates


def _per_class_prompts(path: Path, labels: list[str]) -> list[list[str]]:
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClipsearchError(f"cannot read {path} as JSON: {err}") from err
    if not isinstance(prompts, dict):
        raise ClipsearchError(f"{path} must hold a JSON object mapping each class to a list of sentences")
    sentences_per_label = []
    for label in labels:
        sentences = prompts.get(label)
        if sentences is None:
            raise ClipsearchError(f"{path} has no prompts for class {label!r}: add it as a key with a list of sentences")
        if not (isinstance(sentences, list) and sentences and all(isinstance(s, str) and s.strip() for s in sentences)):
            raise ClipsearchError(f"{path}: class {label!r} needs a non-empty list of sentences")
        sentences_per_label.append(sentences)
    return sentences_per_label
