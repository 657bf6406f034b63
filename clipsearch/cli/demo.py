"""`clipsearch demo`: the offline end-to-end run on generated data.

Generate the shapes dataset, train the small CNN CLIP `tiny-rn` on its train split for a few
minutes on CPU, index the test split with the best checkpoint through the
normal indexing path, then report what the model learnt: zero-shot accuracy
on seen and held-out colour-shape pairs, text→image and image→text recall@k
(each beside its chance level), a few text queries and an image query, and a
contact sheet of their hits.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFont
from rich.table import Table

from ..api import Index
from ..errors import ClipsearchError
from ..files import read_json, write_json
from ..index.query import Hit
from ..model.spec import architecture_image_size
from ..present.sheets import contact_sheet
from ..sources.images import open_uri
from ..sources.shapes import generate_shapes
from ..tasks.retrieval import evaluate_retrieval
from ..tasks.zeroshot_eval import evaluate_zero_shot
from ..training.config import BEST_WEIGHTS, CONFIG_FILE, TrainConfig
from .common import out, print_hits

# The demo recipe (see docs/TRAINING.md for how it was chosen and what it reaches).
DEMO_ARCH = "tiny-rn"
DEMO_IMAGES = 10_000  # 8,000 train / 1,000 val / 1,000 test
DEMO_EPOCHS = 6
DEMO_BATCH = 128
DEMO_LR = 3e-3
DEMO_SEED = 0
TEXT_QUERIES = (
    "a red circle",
    "a large green square in the top left",
    "a small yellow star on a dark grey background",
    "a blue triangle",  # held out of training: never seen together
    "an orange cross on the right",
)
HITS_PER_QUERY = 8
THUMB = 112  # contact sheet cell, pixels
DEMO_ENTRIES = frozenset({"shapes", "run", "indexes", "contact_sheet.png", "results.json"})  # all the demo writes


def demo_cmd(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Working folder (recreated)."),
    n: int = typer.Option(DEMO_IMAGES, "--n", help="Generated images (80/10/10 train/val/test)."),
    epochs: int = typer.Option(DEMO_EPOCHS, "--epochs", help="Training epochs."),
) -> None:
    """Generate shapes, train the small tiny-rn CLIP on CPU, index the test split, evaluate and search it."""
    started = time.perf_counter()
    _clear(out_dir)
    data, run = out_dir / "shapes", out_dir / "run"
    timings = {"generate": _generate(data, n)}
    timings["train"] = _train(data, run, epochs)
    index, timings["index"] = _index_test_split(out_dir / "indexes", data, run / BEST_WEIGHTS)

    out.rule("4. evaluate on the test split")
    step_started = time.perf_counter()
    values, chance = _evaluate(index)
    timings["evaluate"] = time.perf_counter() - step_started
    out.print(_results_table(values, chance, index.counts()["images"]))

    out.rule("5. search")
    sheet = _search(index, out_dir / "contact_sheet.png")
    timings["total"] = time.perf_counter() - started
    write_json(
        out_dir / "results.json",
        {
            "test": values,
            "chance": chance,
            "seconds": timings,
            "model": index.spec.to_dict(),
            "train": read_json(run / CONFIG_FILE)["train"],
        },
    )
    out.print(
        f"contact sheet: {sheet}; results: {out_dir / 'results.json'}; training curves: {run / 'curves.png'}",
        highlight=False,
    )
    out.print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), highlight=False)


def _clear(out_dir: Path) -> None:
    """Empty the working folder of an earlier demo; never delete a folder the demo did not make."""
    if not out_dir.exists():
        return
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name not in DEMO_ENTRIES)
    if strangers:
        raise ClipsearchError(
            f"{out_dir} is not a demo folder (it holds {', '.join(strangers[:3])}); choose another --out"
        )
    shutil.rmtree(out_dir)


def _generate(data: Path, n: int) -> float:
    """Step 1: the shapes dataset, at the side the model takes; the seconds it took."""
    out.rule("1. generate the shapes dataset")
    size = architecture_image_size(DEMO_ARCH)  # loads open_clip (seconds): not counted as generating
    started = time.perf_counter()
    meta = generate_shapes(data, n=n, size=size, seed=DEMO_SEED)
    seconds = time.perf_counter() - started
    out.print(
        f"{meta['n']} images of {size} px ({meta['counts']}) in {data}; "
        f"held out of train: {', '.join(meta['holdout'])} ({seconds:.0f} s)",
        highlight=False,
    )
    return seconds


def _train(data: Path, run: Path, epochs: int) -> float:
    """Step 2: train the demo model into `run`; the seconds training took."""
    from ..training.loop import train  # torch and open_clip: loaded only when the demo runs

    out.rule(f"2. train {DEMO_ARCH} for {epochs} epochs")
    config = TrainConfig(
        data=str(data), arch=DEMO_ARCH, out=str(run), epochs=epochs, batch_size=DEMO_BATCH, lr=DEMO_LR, seed=DEMO_SEED
    )
    return train(config, console=out).seconds


def _index_test_split(root: Path, data: Path, checkpoint: Path) -> tuple[Index, float]:
    """Step 3: index the test split with the trained checkpoint, the normal indexing path."""
    out.rule("3. index the test split with the trained model")
    started = time.perf_counter()
    index = Index.create("demo", root, model=DEMO_ARCH, pretrained=str(checkpoint))
    stats = index.add_folder(data, exclude=["train", "val"])
    out.print(
        f"indexed {stats.new} test images and {stats.captions} captions in {stats.seconds:.1f} s", highlight=False
    )
    return index, time.perf_counter() - started


def _evaluate(index: Index) -> tuple[dict[str, float], dict[str, float]]:
    """Test-split numbers exactly as `clipsearch eval zeroshot` and `eval retrieval` compute them."""
    from ..training.validate import RECALL_KS, chance_levels  # torch: loaded only when the demo runs

    zero_shot, _ = evaluate_zero_shot(index, "shapes", split="test")
    retrieval = evaluate_retrieval(index, "test", ks=RECALL_KS)
    values = {
        f"{short}_R@{k}": retrieval[direction][f"R@{k}"]
        for short, direction in (("t2i", "text_to_image"), ("i2t", "image_to_text"))
        for k in RECALL_KS
    }
    values.update(
        zs_top1=zero_shot["top1"], zs_seen_top1=zero_shot["seen"]["top1"], zs_heldout_top1=zero_shot["held_out"]["top1"]
    )
    captions_per_image = [len(c or []) for c in index.split_rows("test", ["captions"]).column("captions").to_pylist()]
    chance = chance_levels(retrieval["n_images"], np.array(captions_per_image), len(zero_shot["per_class"]))
    return values, chance


_LABELS = {
    "t2i_R@1": "text→image R@1",
    "t2i_R@5": "text→image R@5",
    "t2i_R@10": "text→image R@10",
    "i2t_R@1": "image→text R@1",
    "i2t_R@5": "image→text R@5",
    "i2t_R@10": "image→text R@10",
    "zs_top1": "zero-shot top-1, all classes",
    "zs_seen_top1": "zero-shot top-1, seen pairs",
    "zs_heldout_top1": "zero-shot top-1, held-out pairs",
}


def _results_table(values: dict[str, float], chance: dict[str, float], n_images: int) -> Table:
    table = Table(title=f"test split: {n_images} images, 30 colour-shape classes")
    for column in ("metric", "value", "chance", "x chance"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, label in _LABELS.items():
        if key in values:
            table.add_row(label, f"{values[key]:.3f}", f"{chance[key]:.3f}", f"{values[key] / chance[key]:.1f}")
    return table


def _first_test_image(index: Index, label: str) -> str:
    rows = index.split_rows("all", ["id", "uri", "label_name"]).to_pylist()
    return min((r for r in rows if r["label_name"] == label), key=lambda r: r["id"])["uri"]


def _search(index: Index, sheet_path: Path) -> Path:
    """Step 5: the text queries and a held-out image query, each printed; a contact sheet of all their hits."""
    images: list[Image.Image] = []
    captions: list[str] = []
    for query in TEXT_QUERIES:
        hits = index.search(query, k=HITS_PER_QUERY)
        print_hits(index, hits, f"text query: {query!r}")
        _add_row(images, captions, _text_tile(query), "text query", hits)
    query_image = _first_test_image(index, "blue triangle")
    hits = index.search(image=query_image, k=HITS_PER_QUERY)
    print_hits(index, hits, f"image query: {query_image} (a held-out blue triangle)")
    _add_row(images, captions, open_uri(query_image), "image query", hits)
    return contact_sheet(
        images,
        captions,
        sheet_path,
        thumb=THUMB,
        columns=HITS_PER_QUERY + 1,
        title="demo queries on the test split: query, then its hits",
    )


def _text_tile(text: str) -> Image.Image:
    """A white square with the query written on it, wrapped, as the first cell of its row."""
    tile = Image.new("RGB", (THUMB, THUMB), (255, 255, 255))
    font = ImageFont.load_default(size=15)
    lines = textwrap.wrap(text, width=13)
    ImageDraw.Draw(tile).multiline_text((6, 6), "\n".join(lines), font=font, fill=(20, 20, 20), spacing=4)
    return tile


def _add_row(
    images: list[Image.Image], captions: list[str], query_tile: Image.Image, query_caption: str, hits: list[Hit]
) -> None:
    images.append(query_tile)
    captions.append(query_caption)
    for hit in hits:
        images.append(open_uri(hit.uri))
        captions.append(f"#{hit.rank} {hit.row.get('label_name') or ''}")
