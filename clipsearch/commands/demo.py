"""`clipsearch demo`: an offline end-to-end run on generated data."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from ..cli import app, out, print_hits


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Working folder (recreated)."),
    n: int = typer.Option(300, "--n", help="Generated images."),
) -> None:
    """Generate shapes, index them with the tiny random model, run a text and an image query."""
    from ..api import Index
    from ..sources.shapes import generate_shapes

    shutil.rmtree(out_dir, ignore_errors=True)
    data = out_dir / "shapes"
    generate_shapes(data, n=n, size=64, seed=0)
    index = Index.create("demo", out_dir / "indexes", model="tiny", pretrained="none")
    stats = index.add_folder(data, workers=0)
    out.print(f"indexed {stats.new} images in {stats.seconds:.1f} s ({stats.images_per_s:.0f} images/s)")
    print_hits(index, index.search("a red circle", k=5), "text query: 'a red circle'")
    query_image = sorted((data / "test").glob("*.png"))[0]
    print_hits(index, index.search(image=query_image, k=5), f"image query: {query_image}")
