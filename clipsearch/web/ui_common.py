"""What the three tabs of the web UI share: turning the service's bytes into pictures, hits into
rows, and any error into one line shown in the page (a toast and the tab's status line)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import ClipsearchError
from .service import MAX_UPLOAD_BYTES


def picture(data: bytes) -> Image.Image:
    """The service's encoded image bytes (thumbnail or full image) as a PIL image for Gradio."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def enlarged(image: Image.Image, side: int = 384) -> Image.Image:
    """A small image (a 32-pixel CIFAR one) scaled up by a whole factor with sharp pixels, for the large view."""
    factor = side // max(image.size)
    return (
        image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST) if factor > 1 else image
    )


def upload_bytes(path: str | None) -> bytes | None:
    """The bytes of a file the browser uploaded (Gradio hands us its temporary path); an oversized one is
    refused before it is read (the service checks the bytes again when it decodes them)."""
    if not path:
        return None
    file = Path(path)
    if file.stat().st_size > MAX_UPLOAD_BYTES:
        raise ClipsearchError(f"the upload is too large: at most {MAX_UPLOAD_BYTES // 2**20} MB")
    return file.read_bytes()


def hit_label(hit: dict[str, Any]) -> str:
    """The label a person wants to see: the ground truth, else the zero-shot or probe label."""
    for column in ("label_name", "zs_label", "probe_label"):
        if hit.get(column):
            return str(hit[column])
    return ""


def hit_caption(hit: dict[str, Any]) -> str:
    label = hit_label(hit)
    return f"#{hit['rank']} · {hit['score']:.3f} · {hit['id']}" + (f" · {label}" if label else "")


def hit_rows(hits: list[dict[str, Any]]) -> list[list[Any]]:
    """The results table: rank, score, path (the id, relative to the indexed folder), label."""
    return [[hit["rank"], f"{hit['score']:.4f}", hit["id"], hit_label(hit)] for hit in hits]


def error_line(error: BaseException) -> str:
    """One line for the page: a user error's own message, else the exception type too."""
    if isinstance(error, ClipsearchError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}".rstrip(": ")


def report_error(error: BaseException) -> str:
    """Show `error` as a toast in the page and return its line for the tab's status Markdown."""
    import gradio as gr

    line = error_line(error)
    gr.Warning(line)
    return f"**Error:** {line}"
