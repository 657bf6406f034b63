"""Zero-shot label sets and prompt templates.

A label spec names the classes (a built-in set, a file with one label per line,
or an inline "cat,dog,bird"); a template spec says how each class becomes
sentences (a built-in template set, a file with one "{}" template per line, or
a .json file mapping each class to its own sentences).

The built-in sets are data, not code: clipsearch/data/labels/<name>.json and
clipsearch/data/templates/<name>.json, each a JSON list of strings.

- labels cifar10, cifar100: the official class names in label order, CIFAR-100's
  underscores as spaces (as CLIP and CLIP_benchmark use);
- templates cifar: the 18 CIFAR-10/100 templates of the CLIP paper (openai/CLIP, data/prompts.md);
  imagenet: the 80 OpenAI ImageNet templates (open_clip.zero_shot_metadata);
  simple: "a photo of a {}."; shapes: worded like the generated shapes captions,
  which is what a model trained on them knows.

The shapes label set is generated (sources.shapes.class_names), not stored.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import ClipsearchError
from ..sources.shapes import class_names as shapes_class_names

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
PLACEHOLDER = "{}"
LABEL_SETS = ("cifar10", "cifar100", "shapes")
TEMPLATE_SETS = ("cifar", "imagenet", "simple", "shapes")
# The template set each built-in label set is evaluated with by default.
DEFAULT_TEMPLATES = {"cifar10": "cifar", "cifar100": "cifar", "shapes": "shapes"}


@functools.cache
def _data_list(kind: str, name: str) -> tuple[str, ...]:
    """A shipped JSON list of strings, clipsearch/data/<kind>/<name>.json."""
    path = DATA_DIR / kind / f"{name}.json"
    values = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
        raise ValueError(f"{path} must hold a non-empty JSON list of strings")
    return tuple(values)


def label_set(name: str) -> list[str]:
    """The class names of a built-in label set (one of LABEL_SETS)."""
    if name == "shapes":
        return list(shapes_class_names())
    return list(_data_list("labels", name))


def template_set(name: str) -> list[str]:
    """The templates of a built-in template set (one of TEMPLATE_SETS), each with one "{}"."""
    return list(_data_list("templates", name))


def default_templates(label_spec: str) -> str:
    return DEFAULT_TEMPLATES.get(label_spec, "simple")


def resolve_labels(spec: str, files: bool = True) -> list[str]:
    """Class names from a label set name, a file (one label per line) or "cat,dog,bird" (`files=False`: no file)."""
    if spec in LABEL_SETS:
        return label_set(spec)
    path = Path(spec).expanduser()
    if files and path.is_file():
        return _unique_labels(_read_lines(path), str(path))
    if "," in spec:
        return _unique_labels([label.strip() for label in spec.split(",") if label.strip()], "the label list")
    raise ClipsearchError(
        f"unknown labels {spec!r}: use one of {', '.join(LABEL_SETS)}, a file with one label per line, "
        "or a comma list such as cat,dog,bird"
    )


def resolve_templates(spec: str, labels: list[str], files: bool = True) -> list[list[str]]:
    """For each label, its prompt sentences.

    `spec` is a template set name, a file of templates (one per line, each with
    "{}"), or a .json file mapping each class to a list of full sentences (`files=False`: a set name only).
    """
    if spec in TEMPLATE_SETS:
        return _fill(template_set(spec), labels)
    path = Path(spec).expanduser()
    if files and path.is_file():
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
            raise ClipsearchError(
                f"{path} has no prompts for class {label!r}: add it as a key with a list of sentences"
            )
        if not (isinstance(sentences, list) and sentences and all(isinstance(s, str) and s.strip() for s in sentences)):
            raise ClipsearchError(f"{path}: class {label!r} needs a non-empty list of sentences")
        sentences_per_label.append(sentences)
    return sentences_per_label
