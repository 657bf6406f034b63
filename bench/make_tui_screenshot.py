"""Regenerate docs/tui.svg: `clipsearch tui` on a generated shapes index, with a query's
results listed and the second hit previewed.

    .venv/bin/python bench/make_tui_screenshot.py
    .venv/bin/python bench/make_tui_screenshot.py --model mini --pretrained runs/x/best.safetensors

Offline and reproducible: the shapes are generated (seed 0) into bench/out/tui-screenshot/
and indexed with the given model (default: the tiny architecture with seeded random
weights, whose rankings mean nothing; a trained checkpoint gives a meaningful picture).
The app runs headless (Textual's pilot) and its screen is exported as SVG.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LANCEDB_LOG", "error")
warnings.filterwarnings("ignore", message=".*random weights.*")

from clipsearch.index.index import Index  # noqa: E402
from clipsearch.sources.shapes import generate_shapes  # noqa: E402
from clipsearch.tui.app import SearchApp  # noqa: E402
from clipsearch.tui.widgets import ImagePreview  # noqa: E402


async def screenshot(index: Index, query: str, size: tuple[int, int], out: Path) -> None:
    app = SearchApp(lambda: index, k=12)
    async with app.run_test(size=size) as pilot:
        while not app.ready:
            await pilot.pause(0.05)
        box = app.query_one("#query")
        for _ in range(2):  # the second time warm, as the status line's latency would be
            box.focus()
            box.value = query
            app.shown_query = None
            await pilot.press("enter")
            while app.shown_query is None:
                await pilot.pause(0.05)
        await pilot.press("down")
        preview = app.query_one("#preview", ImagePreview)
        while preview.image is None or app.selected is not app.hits[1]:
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        out.write_text(app.export_screenshot(title="clipsearch tui shapes"), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tui.svg")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tui-screenshot")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--query", default="a red circle + 2:large - grey background")
    parser.add_argument("--n", type=int, default=120, help="Generated images.")
    parser.add_argument("--columns", type=int, default=130)
    parser.add_argument("--rows", type=int, default=38)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # one-text queries gain nothing from more, and a busy machine loses a lot
    shutil.rmtree(args.work, ignore_errors=True)
    generate_shapes(args.work / "shapes", n=args.n, size=96, seed=0)
    index = Index.create("shapes", args.work / "indexes", model=args.model, pretrained=args.pretrained)
    index.add_folder(args.work / "shapes", workers=0, progress=False)
    asyncio.run(screenshot(index, args.query, (args.columns, args.rows), args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
