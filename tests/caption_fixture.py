"""Small caption datasets in the real layouts (Flickr8k, Karpathy JSON), an in-process CLI runner,
and an independent brute-force recall@k straight from the LanceDB tables, for tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import lancedb
import numpy as np
from PIL import Image

WORDS = [
    "dog",
    "cat",
    "child",
    "man",
    "woman",
    "bike",
    "car",
    "boat",
    "ball",
    "tree",
    "river",
    "beach",
    "snow",
    "grass",
    "street",
    "wall",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "running",
    "jumping",
    "sitting",
    "old",
    "young",
    "wooden",
    "bright",
    "dark",
    "two",
]


def write_image(path: Path, seed: int, size: int = 32) -> None:
    """A random RGB picture (blocks + noise), distinct for each seed; format from the suffix."""
    rng = np.random.default_rng(seed)
    blocks = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.NEAREST)
    noise = rng.integers(-25, 26, (size, size, 3))
    pixels = np.clip(np.asarray(blocks, np.int16) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def random_captions(counts: Iterable[int], seed: int) -> list[list[str]]:
    """Unique random captions, `count` for each image."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    result = []
    for count in counts:
        captions = []
        while len(captions) < count:
            text = "a " + " ".join(rng.choice(WORDS, size=6))
            if text not in seen:
                seen.add(text)
                captions.append(text)
        result.append(captions)
    return result


def flickr_name(i: int) -> str:
    return f"{1000000 + i * 7919}_{i:010x}.jpg"


def write_flickr8k(
    root: Path,
    splits: dict[str, int],
    captions_per_image: int = 5,
    seed: int = 0,
    extra_token_lines: Iterable[str] = (),
) -> dict[str, tuple[str, list[str]]]:
    """`Flicker8k_Dataset/` + `Flickr8k_text/` (token file and split lists) as in the official zips.

    Returns file name -> (split, captions). `extra_token_lines` are appended to the token file as is.
    """
    names = [(split, flickr_name(i)) for i, split in enumerate(s for s, n in splits.items() for _ in range(n))]
    captions = random_captions([captions_per_image] * len(names), seed)
    text_dir = root / "Flickr8k_text"
    text_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, ((_, name), texts) in enumerate(zip(names, captions)):
        write_image(root / "Flicker8k_Dataset" / name, seed * 100_000 + i)
        lines += [f"{name}#{n}\t{text}" for n, text in enumerate(texts)]
    (text_dir / "Flickr8k.token.txt").write_text("\n".join([*lines, *extra_token_lines]) + "\n", encoding="utf-8")
    list_files = {
        "train": "Flickr_8k.trainImages.txt",
        "val": "Flickr_8k.devImages.txt",
        "test": "Flickr_8k.testImages.txt",
    }
    for split, list_file in list_files.items():
        (text_dir / list_file).write_text("".join(f"{name}\n" for s, name in names if s == split), encoding="utf-8")
    return {name: (split, texts) for (split, name), texts in zip(names, captions)}


def karpathy_image(filename: str, split: str, captions: list[str], filepath: str | None = None) -> dict:
    image = {"filename": filename, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in captions]}
    if filepath is not None:
        image["filepath"] = filepath
    return image


def write_karpathy(path: Path, images: list[dict], dataset: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": dataset, "images": images}), encoding="utf-8")
    return path


def table_rows(index_dir: Path, table: str) -> list[dict]:
    """Every row of one LanceDB table of an index, read with lancedb directly."""
    return lancedb.connect(str(index_dir / "db")).open_table(table).to_arrow().to_pylist()


def brute_force_recall(index_dir: Path, split: str, ks: Iterable[int], positives: str = "all") -> dict:
    """Recall@k, mean and median rank both ways from the full score matrices, read straight from the tables.

    A query hits at k when any of its true matches is among the k best (ties: lower gallery
    position first, a stable sort). `positives="first"` is the naive rule that only counts
    each image's first caption, for image -> text.
    """
    images = [r for r in table_rows(index_dir, "images") if split in ("all", r["split"]) and not r["deleted"]]
    images.sort(key=lambda r: r["id"])
    position = {r["id"]: i for i, r in enumerate(images)}
    captions = [r for r in table_rows(index_dir, "captions") if r["image_id"] in position]
    captions.sort(key=lambda r: (position[r["image_id"]], r["caption_index"]))
    image_vectors = np.array([r["vector"] for r in images], np.float32)
    caption_vectors = np.array([r["vector"] for r in captions], np.float32)
    owner = np.array([position[r["image_id"]] for r in captions])

    t2i_order = np.argsort(-(caption_vectors @ image_vectors.T), axis=1, kind="stable")
    t2i_ranks = 1 + np.argmax(t2i_order == owner[:, None], axis=1)
    i2t_order = np.argsort(-(image_vectors @ caption_vectors.T), axis=1, kind="stable")
    is_true = owner[i2t_order] == np.arange(len(images))[:, None]
    if positives == "first":
        first = np.array([r["caption_index"] == 0 for r in captions])
        is_true &= first[i2t_order]
    queried = is_true.any(axis=1)
    i2t_ranks = 1 + np.argmax(is_true[queried], axis=1)

    def summary(ranks: np.ndarray) -> dict:
        return {
            **{f"R@{k}": float(np.mean(ranks <= k)) for k in ks},
            "mean_rank": float(np.mean(ranks)),
            "median_rank": float(np.median(ranks)),
        }

    return {
        "text_to_image": summary(t2i_ranks),
        "image_to_text": summary(i2t_ranks),
        "n_images": len(images),
        "n_captions": len(captions),
        "n_image_queries": int(queried.sum()),
    }
