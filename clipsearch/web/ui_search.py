"""The Search tab: a text / weighted-terms / image query, k, a filter and a threshold; results as
a gallery of thumbnails and a table; a clicked result shown large with "More like this".

Pixels always come from the service by id (thumbnail / image), never from a path, so dataset
indexes whose images live inside archives (CIFAR) show like folder indexes."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ..errors import ClipsearchError
from .ui_common import enlarged, hit_caption, hit_rows, picture, report_error, upload_bytes

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

    from .service import SearchService

THUMB_SIZE = 160
RESULT_COLUMNS = ["rank", "score", "path", "label"]
HIDDEN_FIELDS = ("captions", "vector", "key", "deleted")  # captions get their own list; the rest is bookkeeping


def parse_threshold(text: str | None) -> float | None:
    """The minimum score typed in the threshold box; empty means none."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ClipsearchError(f"the threshold must be a number such as 0.2 (got {text!r})") from None


def run_search(
    service: SearchService, query: str | None, image_id: str | None, upload: str | None, **options: Any
) -> tuple[list[dict[str, Any]], list[tuple[Image.Image, str]]]:
    """Hits of one request (options: k, where, threshold as typed), with their thumbnails as gallery items."""
    k = int(options["k"] or 10)
    hits = service.search(
        query=(query or "").strip() or None,
        image_id=image_id,
        image=upload_bytes(upload) if not image_id else None,
        k=k,
        where=(options["where"] or "").strip() or None,
        threshold=parse_threshold(options["threshold"]),
    )
    gallery = [(picture(service.thumbnail(hit["id"], THUMB_SIZE)), hit_caption(hit)) for hit in hits]
    return hits, gallery


def _results(service: SearchService, query: str | None, image_id: str | None, upload: str | None, k, where, threshold):
    """The outputs of a search event: gallery, table, the hits' ids, and the status line."""
    import gradio as gr

    if not (query or "").strip() and not upload and not image_id:
        return gr.skip(), gr.skip(), gr.skip(), "Type a query or drop an image."
    try:
        hits, gallery = run_search(service, query, image_id, upload, k=k, where=where, threshold=threshold)
    except Exception as error:  # any failure is a message in the page, never a dead page
        return gr.skip(), gr.skip(), gr.skip(), report_error(error)
    what = f"more like `{image_id}`" if image_id else "your query"
    return gallery, hit_rows(hits), [hit["id"] for hit in hits], f"{len(hits)} results for {what}."


def detail_markdown(row: dict[str, Any]) -> str:
    """A stored row (metadata and captions) as Markdown: a field table, then the captions."""
    captions = row.get("captions") or []
    shown = {key: value for key, value in row.items() if key not in HIDDEN_FIELDS and value is not None}
    if isinstance(shown.get("mtime"), float):
        shown["mtime"] = datetime.datetime.fromtimestamp(shown["mtime"], datetime.timezone.utc).isoformat(
            " ", "seconds"
        )
    lines = [f"### {row.get('id', '')}", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in shown.items()]
    if captions:
        lines += ["", "**Captions**", "", *[f"- {caption}" for caption in captions]]
    return "\n".join(lines)


def _show_detail(service: SearchService, ids: list[str], evt: gr.SelectData):
    """A clicked gallery item: the image large, its metadata and captions; remembers its id."""
    import gradio as gr

    try:
        image_id = ids[evt.index if isinstance(evt.index, int) else evt.index[0]]
        data, _media_type = service.image(image_id)
        row = service.row(image_id)
    except Exception as error:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), report_error(error)
    return (
        enlarged(picture(data)),
        detail_markdown(row),
        image_id,
        gr.update(interactive=True),
        f"Selected `{image_id}`.",
    )


def _query_inputs() -> tuple[Any, ...]:
    import gradio as gr

    with gr.Row():
        with gr.Column(scale=3):
            query = gr.Textbox(
                label="Query",
                placeholder="a dog on the beach   ·   a dog + 2:snow - grass",
                elem_id="query",
                lines=1,
            )
            with gr.Row():
                k = gr.Number(value=12, label="k", precision=0, minimum=1, maximum=1000, elem_id="k")
                where = gr.Textbox(label="where (SQL filter)", placeholder="label_name = 'cat'", elem_id="where")
                # A text box, not gr.Number: an empty number field reads as 0, which is a real threshold.
                threshold = gr.Textbox(
                    label="threshold (min score)", placeholder="none, or e.g. 0.2", elem_id="threshold"
                )
            button = gr.Button("Search", variant="primary", elem_id="search-btn")
        upload = gr.Image(
            label="…or drop an image",
            type="filepath",
            image_mode=None,
            sources=["upload"],
            height=180,
            elem_id="query-image",
            scale=1,
        )
    return query, upload, k, where, threshold, button


def search_tab(service: SearchService) -> None:
    """Lay out the tab and wire its events (inside an open `gr.Blocks`)."""
    import gradio as gr

    query, upload, k, where, threshold, button = _query_inputs()
    status = gr.Markdown("Type a query or drop an image.", elem_id="search-status")
    ids = gr.State([])
    selected = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Results", columns=6, height=340, allow_preview=False, object_fit="contain", elem_id="results"
            )
            table = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, elem_id="results-table", wrap=True)
        with gr.Column(scale=2):
            large = gr.Image(label="Selected", type="pil", interactive=False, height=384, elem_id="detail-image")
            more = gr.Button("More like this", interactive=False, elem_id="more-like")
            meta = gr.Markdown(elem_id="detail-meta")
    outputs = [gallery, table, ids, status]

    def search(text: str, image: str | None, k_value, where_text: str, minimum):
        return _results(service, text, None, image, k_value, where_text, minimum)

    def more_like(image_id: str | None, k_value, where_text: str, minimum):
        return _results(service, None, image_id, None, k_value, where_text, minimum)

    def select(hit_ids, evt):  # type: ignore[no-untyped-def]
        return _show_detail(service, hit_ids, evt)

    # Gradio passes the click's SelectData to a parameter annotated with that class; with postponed
    # annotations (and gradio imported here only) it could not resolve a written one.
    select.__annotations__ = {"evt": gr.SelectData}

    for event in (button.click, query.submit):
        event(search, [query, upload, k, where, threshold], outputs)
    upload.upload(search, [query, upload, k, where, threshold], outputs)
    more.click(more_like, [selected, k, where, threshold], outputs)
    for clickable in (gallery, table):  # a thumbnail or a table row (its SelectData.index is [row, column])
        clickable.select(select, [ids], [large, meta, selected, more, status])
