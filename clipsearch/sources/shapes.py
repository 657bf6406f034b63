"""A generated captioned dataset of coloured shapes that needs no download.

Every offline quality check starts here: a tiny CLIP must learn it on two CPU
cores in minutes, so an image is one flat-coloured object on a plain (or
faintly noisy) grey background, sometimes with a second, smaller object, and
the captions name exactly what can be seen: colour, shape, size, position.
A few colour-shape pairs are held out of the train split so that val/test can
measure compositional zero-shot ("blue triangle" never seen, blue and
triangle both seen).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ClipsearchError
from ..files import read_json, write_json

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

# Far apart in hue so that a tiny model can separate them at 64 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "yellow": (240, 210, 40),
    "purple": (145, 60, 195),
    "orange": (245, 140, 30),
}

# Words a caption may use for each shape; the first is the class-name word.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "round shape", "circular shape", "disc", "dot"),
    "square": ("square", "box", "square shape", "block"),
    "triangle": ("triangle", "triangular shape", "three-sided shape"),
    "star": ("star", "star shape", "five-pointed star"),
    "cross": ("cross", "plus sign", "plus shape", "cross shape"),
}

# Object diameter as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.26, "medium": 0.38, "large": 0.52}
# Smaller than every main-object size, so "the main object" is unambiguous.
SECOND_OBJECT_DIAMETER = 0.16
SECOND_OBJECT_PROBABILITY = 0.2

# 3x3 grid, row-major: index i sits at row i // 3, column i % 3.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left", "in the top left corner", "at the upper left"),
    "top": ("at the top", "near the top edge", "in the top middle"),
    "top right": ("in the top right", "in the top right corner", "at the upper right"),
    "left": ("on the left", "on the left side", "near the left edge"),
    "center": ("in the middle", "in the center", "in the centre of the image"),
    "right": ("on the right", "on the right side", "near the right edge"),
    "bottom left": ("in the bottom left", "in the bottom left corner", "at the lower left"),
    "bottom": ("at the bottom", "near the bottom edge", "in the bottom middle"),
    "bottom right": ("in the bottom right", "in the bottom right corner", "at the lower right"),
}
_POSITION_JITTER = 0.06  # fraction of the side; keeps neighbouring cells distinct

# Grey levels: light and dark so every colour is seen on both contrasts.
BACKGROUNDS: dict[str, int] = {"light grey": 220, "grey": 150, "dark grey": 60}
_TEXTURE_PROBABILITY = 0.3
_TEXTURE_AMPLITUDE = 12  # grey levels; faint enough never to hide an object

# Each holdout colour and shape is used once, so every colour and every shape
# is still seen in train, just not in these combinations.
DEFAULT_HOLDOUT: tuple[str, ...] = (
    "red star",
    "green cross",
    "blue triangle",
    "yellow square",
    "purple circle",
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
CAPTIONS_FILE = "captions.jsonl"
META_FILE = "meta.json"
_SUPERSAMPLE = 4  # draw at 4x, then box-downsample: cheap anti-aliasing
_CIRCLE_VERTICES = 48

# Every template names the colour and a word for the shape (tests rely on it).
_CAPTION_TEMPLATES: tuple[str, ...] = (
    "{a_sized} {where}",
    "{plain_synonym} on a {background} background",
    "a picture of {a_plain}",
    "{a_sized_synonym}",
    "there is {a_plain} {where}",
    "a photo of {a_sized} on a {background} background",
    "an image with {a_sized_synonym} {where}",
)
_SECOND_OBJECT_SUFFIXES: tuple[str, ...] = (
    "next to a small {second}",
    "with a small {second} {second_where}",
    "and a small {second}",
)


def class_names() -> list[str]:
    """Every "colour shape" label, colour-major: red circle, red square, ..."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


@dataclass(frozen=True)
class _Object:
    colour: str
    shape: str
    size: str  # the word captions use: small, medium or large
    diameter: float  # fraction of the image side
    position: str
    cx: float  # centre, fraction of the image side
    cy: float


@dataclass(frozen=True)
class _Scene:
    main: _Object
    second: _Object | None
    background: str
    textured: bool


def generate_shapes(
    out_dir: Path,
    n: int = 3000,
    size: int = 64,
    seed: int = 0,
    holdout: Sequence[str] | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict:
    """Write the shapes dataset into `out_dir` and return its metadata.

    Layout: `<split>/<index>.png` for split in train/val/test,
    `captions.jsonl` (file, captions, label, split per line) and `meta.json`
    (written last, so its presence means the dataset is complete).
    Train is balanced over the seen classes; val and test are balanced over
    all classes, held-out ones included, so each needs at least
    `len(class_names())` images to contain every class.
    Calling again with the same arguments on a finished folder returns its
    metadata without rewriting anything; any other non-empty folder is refused.
    """
    out_dir = Path(out_dir)
    held_out = _checked_holdout(DEFAULT_HOLDOUT if holdout is None else holdout)
    counts = _split_counts(n, split_fractions)
    if size < 16:
        raise ClipsearchError(f"shapes image size must be at least 16 px, got {size}")
    request = {
        "seed": seed,
        "n": n,
        "size": size,
        "holdout": held_out,
        "split_fractions": [float(f) for f in split_fractions],
    }
    existing = _finished_dataset(out_dir, request)
    if existing is not None:
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    seen = [name for name in class_names() if name not in held_out]
    split_labels = {
        split: _balanced_labels(seen if split == "train" else class_names(), counts[split], rng) for split in SPLITS
    }
    class_counts = _write_images(out_dir, split_labels, seen, size, max(5, len(str(n - 1))), rng)
    meta = {
        "name": "shapes",
        **request,
        "colours": list(COLOURS),
        "colour_rgb": {name: list(rgb) for name, rgb in COLOURS.items()},
        "shapes": list(SHAPES),
        "class_names": class_names(),
        "counts": counts,
        "class_counts": class_counts,
        "captions_file": CAPTIONS_FILE,
    }
    write_json(out_dir / META_FILE, meta)
    return meta


def _write_images(
    out_dir: Path, split_labels: dict[str, list[str]], seen: list[str], size: int, width: int, rng: np.random.Generator
) -> dict[str, dict[str, int]]:
    """Render every split's images (`<split>/<index, width digits>.png`) and write captions.jsonl;
    returns the images per class of each split. Second objects come from the `seen` classes only,
    so held-out pairs never appear anywhere in train images."""
    class_counts: dict[str, dict[str, int]] = {}
    with open(out_dir / CAPTIONS_FILE, "w", encoding="utf-8") as captions_out:
        for split in SPLITS:
            (out_dir / split).mkdir()
            class_counts[split] = {name: 0 for name in class_names()}
            for index, label in enumerate(split_labels[split]):
                scene = _random_scene(label, seen, rng)
                file = f"{split}/{index:0{width}d}.png"
                _render(scene, size, rng).save(out_dir / file, format="PNG")
                record = {"file": file, "captions": _captions(scene, rng), "label": label, "split": split}
                captions_out.write(json.dumps(record, ensure_ascii=False) + "\n")
                class_counts[split][label] += 1
    return class_counts


def shapes_meta(folder: Path) -> dict[str, Any] | None:
    """The meta.json of a generated shapes dataset in `folder`; None when `folder` holds none."""
    try:
        meta = read_json(Path(folder) / META_FILE)
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 (a ValueError too) or not JSON
        return None
    return meta if isinstance(meta, dict) and meta.get("name") == "shapes" else None


def _checked_holdout(holdout: Sequence[str]) -> list[str]:
    known = set(class_names())
    unique = list(dict.fromkeys(holdout))  # drop repeats, keep the caller's order
    for name in unique:
        if name not in known:
            raise ClipsearchError(
                f"unknown shapes class {name!r} in holdout; use 'colour shape' with colour in "
                f"{', '.join(COLOURS)} and shape in {', '.join(SHAPES)}"
            )
    if len(unique) == len(known):
        raise ClipsearchError("holdout names every shapes class; leave at least one for training")
    return unique


def _split_counts(n: int, fractions: Sequence[float]) -> dict[str, int]:
    if n < 1:
        raise ClipsearchError(f"number of shapes images must be at least 1, got {n}")
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ClipsearchError(
            f"split fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}"
        )
    n_train = round(n * fractions[0])
    n_val = min(round(n * fractions[1]), n - n_train)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def _finished_dataset(out_dir: Path, request: dict) -> dict | None:
    """The metadata of an identical finished dataset in `out_dir`; None if the folder is missing or empty."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise ClipsearchError(f"{out_dir} is a file; give a folder for the shapes dataset")
    if not any(out_dir.iterdir()):
        return None
    meta = shapes_meta(out_dir)
    if meta is not None and all(meta.get(k) == v for k, v in request.items()):
        return meta
    raise ClipsearchError(
        f"{out_dir} is not empty and holds no shapes dataset made with these settings; "
        "choose an empty folder or delete this one"
    )


def _balanced_labels(names: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` labels cycling through `names` (so every class appears once count >= len(names)), shuffled."""
    cycled = [names[i % len(names)] for i in range(count)]
    return [cycled[i] for i in rng.permutation(count)]


def _random_scene(label: str, second_candidates: list[str], rng: np.random.Generator) -> _Scene:
    colour, shape = label.split(" ")
    size_name = list(SIZES)[rng.integers(len(SIZES))]
    cell = int(rng.integers(len(POSITIONS)))
    main = _placed_object(colour, shape, size_name, SIZES[size_name], cell, rng)
    second = None
    # A different colour and a different shape, so the label stays unambiguous.
    others = [pair for pair in map(str.split, second_candidates) if pair[0] != colour and pair[1] != shape]
    if rng.random() < SECOND_OBJECT_PROBABILITY and others:
        second_colour, second_shape = others[rng.integers(len(others))]
        cells = _far_cells(cell)
        second_cell = cells[rng.integers(len(cells))]
        second = _placed_object(second_colour, second_shape, "small", SECOND_OBJECT_DIAMETER, second_cell, rng)
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    return _Scene(main, second, background, bool(rng.random() < _TEXTURE_PROBABILITY))


def _far_cells(cell: int) -> list[int]:
    """Grid cells at least two steps away from `cell` (the corners for the centre), so objects rarely touch."""
    row, col = divmod(cell, 3)
    far = [i for i in range(len(POSITIONS)) if math.dist((row, col), divmod(i, 3)) >= 2]
    return far or [0, 2, 6, 8]


def _placed_object(colour: str, shape: str, size: str, diameter: float, cell: int, rng: np.random.Generator) -> _Object:
    row, col = divmod(cell, 3)
    cell_centre = np.array([(col + 0.5) / 3, (row + 0.5) / 3])
    margin = diameter / 2 + 0.02  # keeps the whole object inside the image
    cx, cy = np.clip(cell_centre + rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, 2), margin, 1 - margin)
    return _Object(colour, shape, size, diameter, POSITIONS[cell], float(cx), float(cy))


def _outline(obj: _Object, side: int) -> list[tuple[float, float]]:
    """The object's polygon in pixel coordinates of a `side`-pixel canvas."""
    cx, cy, r = obj.cx * side, obj.cy * side, obj.diameter * side / 2

    def ring(radii: Sequence[float], start_angle: float) -> list[tuple[float, float]]:
        step = 2 * math.pi / len(radii)
        return [
            (cx + radius * math.cos(start_angle + k * step), cy + radius * math.sin(start_angle + k * step))
            for k, radius in enumerate(radii)
        ]

    if obj.shape == "circle":
        return ring([r] * _CIRCLE_VERTICES, 0.0)
    if obj.shape == "square":
        half = 0.88 * r  # a square of side 2r looks much bigger than a circle of diameter 2r
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if obj.shape == "triangle":
        cy += r / 4  # centre the bounding box, not the centroid, on the position
        return ring([r] * 3, -math.pi / 2)
    if obj.shape == "star":
        return ring([r, 0.45 * r] * 5, -math.pi / 2)
    if obj.shape == "cross":
        arm = 0.32 * r
        return [
            (cx - arm, cy - r),
            (cx + arm, cy - r),
            (cx + arm, cy - arm),
            (cx + r, cy - arm),
            (cx + r, cy + arm),
            (cx + arm, cy + arm),
            (cx + arm, cy + r),
            (cx - arm, cy + r),
            (cx - arm, cy + arm),
            (cx - r, cy + arm),
            (cx - r, cy - arm),
            (cx - arm, cy - arm),
        ]
    raise ValueError(f"unknown shape {obj.shape!r}")


def _render(scene: _Scene, size: int, rng: np.random.Generator) -> Image.Image:
    level = BACKGROUNDS[scene.background]
    side = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), (level, level, level))
    coverage = Image.new("L", (side, side), 0)
    draw, draw_coverage = ImageDraw.Draw(canvas), ImageDraw.Draw(coverage)
    for obj in (scene.second, scene.main):  # main last: always fully visible
        if obj is not None:
            outline = _outline(obj, side)
            draw.polygon(outline, fill=COLOURS[obj.colour])
            draw_coverage.polygon(outline, fill=255)
    image = canvas.reduce(_SUPERSAMPLE)
    if not scene.textured:
        return image
    # Noise on the background only, blended in through the object coverage.
    noise = rng.integers(-_TEXTURE_AMPLITUDE, _TEXTURE_AMPLITUDE + 1, (size, size, 1))
    grey = np.clip(level + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    return Image.composite(image, Image.fromarray(grey), coverage.reduce(_SUPERSAMPLE))


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _captions(scene: _Scene, rng: np.random.Generator) -> list[str]:
    """2 to 5 differently worded captions, each naming the main object's colour and shape."""
    main = scene.main

    def pick(options: Sequence[str]) -> str:
        return options[rng.integers(len(options))]

    plain = f"{main.colour} {main.shape}"
    words = {
        "a_plain": _with_article(plain),
        "plain_synonym": f"{main.colour} {pick(SHAPE_WORDS[main.shape])}",
        "a_sized": f"a {main.size} {plain}",
        "a_sized_synonym": f"a {main.size} {main.colour} {pick(SHAPE_WORDS[main.shape])}",
        "where": pick(POSITION_PHRASES[main.position]),
        "background": ("textured " if scene.textured else "") + scene.background,
    }
    count = int(rng.integers(2, 6))
    captions = [_CAPTION_TEMPLATES[i].format(**words) for i in rng.permutation(len(_CAPTION_TEMPLATES))[:count]]
    if scene.second is not None:
        second = {
            "second": f"{scene.second.colour} {pick(SHAPE_WORDS[scene.second.shape])}",
            "second_where": pick(POSITION_PHRASES[scene.second.position]),
        }
        # The first caption always mentions the second object, the others sometimes.
        for i in range(count):
            if i == 0 or rng.random() < 0.5:
                captions[i] += " " + pick(_SECOND_OBJECT_SUFFIXES).format(**second)
    return captions
