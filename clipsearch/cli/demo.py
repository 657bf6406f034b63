"""`clipsearch demo`: the offline end-to-end run on generated data.

Generate the shapes dataset, train the small CNN CLIP `tiny-rn` on its train split for a few
minutes on CPU, index the test split with the best checkpoint through the
normal indexing path, then report what the model learnt: zero-shot accuracy
on seen and held-out colour-shape pairs, text→image and image→text recall@k
(each beside its chance level), a few text queries and an image query, and a
contact sheet of their hits.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from .common import out, print_hits
from ..errors import ClipsearchError

if TYPE_CHECKING:
    from PIL import Image

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
    from ..index.index import Index
    from ..present.sheets import contact_sheet
    from ..files import write_json
    from ..sources.images import open_uri
    from ..sources.shapes import generate_shapes
    from ..training.loop import TrainConfig, train

    started = time.perf_counter()
    timings: dict[str, float] = {}
    _clear(out_dir)
    data = out_dir / "shapes"
    size = _model_image_size(DEMO_ARCH)

    out.rule("1. generate the shapes dataset")
    meta = generate_shapes(data, n=n, size=size, seed=DEMO_SEED)
    timings["generate"] = time.perf_counter() - started
    out.print(f"{meta['n']} images of {size} px ({meta['counts']}) in {data}; "
              f"held out of train: {', '.join(meta['holdout'])} ({timings['generate']:.0f} s)", highlight=False)

    out.rule(f"2. train {DEMO_ARCH} for {epochs} epochs")
    run = out_dir / "run"
    config = TrainConfig(data=str(data), arch=DEMO_ARCH, out=str(run), epochs=epochs, batch_size=DEMO_BATCH,
                         lr=DEMO_LR, seed=DEMO_SEED)
    result = train(config, console=out)
    timings["train"] = result.seconds

    out.rule("3. index the test split with the trained model")
    checkpoint = run / "best.safetensors"
    step_started = time.perf_counter()
    index = Index.create("demo", out_dir / "indexes", model=DEMO_ARCH, pretrained=str(checkpoint))
    stats = index.add_folder(data, exclude=["train", "val"])
    timings["index"] = time.perf_counter() - step_started
    out.print(f"indexed {stats.new} test images and {stats.captions} captions in {stats.seconds:.1f} s", highlight=False)

    out.rule("4. evaluate on the test split")
    step_started = time.perf_counter()
    values, chance = _evaluate(index)
    timings["evaluate"] = time.perf_counter() - step_started
    out.print(_results_table(values, chance, index.counts()["images"]))

    out.rule("5. search")
    sheet_images, sheet_captions = [], []
    for query in TEXT_QUERIES:
        hits = index.search(query, k=HITS_PER_QUERY)
        print_hits(index, hits, f"text query: {query!r}")
        _add_row(sheet_images, sheet_captions, _text_tile(query), "text query", hits)
    query_image = _first_test_image(index, "blue triangle")
    hits = index.search(image=query_image, k=HITS_PER_QUERY)
    print_hits(index, hits, f"image query: {query_image} (a held-out blue triangle)")
    _add_row(sheet_images, sheet_captions, open_uri(query_image), "image query", hits)
    sheet = contact_sheet(sheet_images, sheet_captions, out_dir / "contact_sheet.png", thumb=THUMB,
                          columns=HITS_PER_QUERY + 1, title="demo queries on the test split: query, then its hits")
    timings["total"] = time.perf_counter() - started
    write_json(out_dir / "results.json", {"test": values, "chance": chance, "seconds": timings,
                                          "model": index.spec.to_dict(),
                                          "train": json.loads((run / "config.json").read_text())["train"]})
    out.print(f"contact sheet: {sheet}; results: {out_dir / 'results.json'}; training curves: {run / 'curves.png'}",
              highlight=False)
    out.print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), highlight=False)


def _clear(out_dir: Path) -> None:
    """Empty the working folder of an earlier demo; never delete a folder the demo did not make."""
    if not out_dir.exists():
        return
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name not in DEMO_ENTRIES)
    if strangers:
        raise ClipsearchError(f"{out_dir} is not a demo folder (it holds {', '.join(strangers[:3])}); choose another --out")
    shutil.rmtree(out_dir)


def _model_image_size(arch: str) -> int:
    import open_clip

    from ..model import encoder  # noqa: F401  (registers the shipped configs with open_clip)

    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _evaluate(index) -> tuple[dict[str, float], dict[str, float]]:
    """Test-split numbers exactly as `clipsearch eval zeroshot` and `eval retrieval` compute them."""
    from ..tasks.zeroshot_eval import evaluate_zero_shot
    from ..tasks.retrieval import evaluate_retrieval
    import numpy as np

    from ..training.loop import RECALL_KS, chance_levels

    zero_shot, _ = evaluate_zero_shot(index, "shapes", split="test")
    retrieval, _ = evaluate_retrieval(index, "test", ks=RECALL_KS)
    values = {f"{short}_R@{k}": retrieval[direction][f"R@{k}"] for short, direction in
              (("t2i", "text_to_image"), ("i2t", "image_to_text")) for k in RECALL_KS}
    values.update(zs_top1=zero_shot["top1"], zs_seen_top1=zero_shot["seen"]["top1"],
                  zs_heldout_top1=zero_shot["held_out"]["top1"])
    captions_per_image = [len(c or []) for c in index.rows("split = 'test'", ["captions"]).column("captions").to_pylist()]
    chance = chance_levels(retrieval["n_images"], np.array(captions_per_image), len(zero_shot["per_class"]))
    return values, chance


_LABELS = {
    "t2i_R@1": "text→image R@1", "t2i_R@5": "text→image R@5", "t2i_R@10": "text→image R@10",
    "i2t_R@1": "image→text R@1", "i2t_R@5": "image→text R@5", "i2t_R@10": "image→text R@10",
    "zs_top1": "zero-shot top-1, all classes", "zs_seen_top1": "zero-shot top-1, seen pairs",
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


def _first_test_image(index, label: str) -> str:
    rows = index.rows(f"label_name = '{label}'", ["id", "uri"]).to_pylist()
    return sorted(rows, key=lambda r: r["id"])[0]["uri"]


def _text_tile(text: str) -> Image.Image:
    """A white square with the query written on it, wrapped, as the first cell of its row."""
    from PIL import Image, ImageDraw, ImageFont

    tile = Image.new("RGB", (THUMB, THUMB), (255, 255, 255))
    font = ImageFont.load_default(size=15)
    lines = textwrap.wrap(text, width=13)
    ImageDraw.Draw(tile).multiline_text((6, 6), "\n".join(lines), font=font, fill=(20, 20, 20), spacing=4)
    return tile


def _add_row(images: list, captions: list, query_tile: Image.Image, query_caption: str, hits: list) -> None:
    from ..sources.images import open_uri

    images.append(query_tile)
    captions.append(query_caption)
    for hit in hits:
        images.append(open_uri(hit.uri))
        captions.append(f"#{hit.rank} {hit.row.get('label_name') or ''}")
