"""The Gradio front end of `clipsearch serve`: three tabs (Search, Zero-shot, Index) over one
SearchService, and a banner that says while the model is still loading (queries wait in
Gradio's queue meanwhile). `web/app.py` mounts `build_ui(service)` at "/".

gradio is imported inside the functions: importing this module costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ui_index import index_tab
from .ui_search import search_tab
from .ui_zeroshot import zeroshot_tab

if TYPE_CHECKING:
    import gradio as gr

    from .service import SearchService

STATUS_POLL_SECONDS = 1.0
CACHE_SWEEP = (900, 3600)  # every 15 minutes, delete Gradio's cached result files older than an hour


def model_banner(service: SearchService) -> tuple[bool, str]:
    """(settled, a line for the page): whether the model's loading is over, and how it went."""
    if service.ready:
        return True, "**Model ready.**"
    status = service.status
    if status.startswith("loading"):
        return False, f"**Model still loading** ({status}): queries wait until it is ready."
    return True, f"**Error:** the model could not be loaded: {status}"


def _poll_status(service: SearchService) -> tuple[str, Any]:
    import gradio as gr

    settled, line = model_banner(service)
    return line, gr.Timer(active=not settled)


def build_ui(service: SearchService) -> gr.Blocks:
    """The whole page; the caller mounts it (gr.mount_gradio_app) or launches it."""
    import gradio as gr

    # Gradio keeps each result thumbnail it sends as a file: a long-running server drops those older than an hour.
    with gr.Blocks(title="clipsearch", analytics_enabled=False, delete_cache=CACHE_SWEEP) as blocks:
        with gr.Row():
            gr.Markdown("## clipsearch")
            banner = gr.Markdown(model_banner(service)[1], elem_id="model-status")
        with gr.Tabs():
            with gr.Tab("Search", id="search", elem_id="tab-search"):
                search_tab(service)
            with gr.Tab("Zero-shot", id="zeroshot", elem_id="tab-zeroshot"):
                zeroshot_tab(service)
            with gr.Tab("Index", id="index", elem_id="tab-index"):
                index_tab(service, blocks)
        timer = gr.Timer(STATUS_POLL_SECONDS)
        timer.tick(lambda: _poll_status(service), None, [banner, timer], queue=False)
        blocks.load(lambda: _poll_status(service), None, [banner, timer], queue=False)
    blocks.queue(default_concurrency_limit=2)
    return blocks
