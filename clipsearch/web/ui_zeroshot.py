"""The Zero-shot tab: an uploaded image, typed labels or a label set, a template set; the top-k
labels with softmax(100 · cos) confidences as bars and as a table (computed by the service,
with the same code as `clipsearch predict`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ClipsearchError
from .ui_common import report_error, upload_bytes

if TYPE_CHECKING:
    from .service import SearchService

DEFAULT_TEMPLATES = "(the label set's usual one)"
TYPED_LABELS = "(the labels typed above)"


def chosen_labels(typed: str | None, label_set: str | None) -> str:
    """What the service takes as `labels`: the typed comma-separated labels, else the picked set."""
    if (typed or "").strip():
        return typed.strip()
    if label_set and label_set != TYPED_LABELS:
        return label_set
    raise ClipsearchError("type labels (comma-separated) or pick a label set")


def top_k(k: float | None, typed: str | None) -> int:
    """The k asked for, but no more than the labels of a typed list (default five; three typed: three).
    A typed word without a comma is a label-set name: its size is the service's to check."""
    typed = typed or ""
    typed_count = len([label for label in typed.split(",") if label.strip()]) if "," in typed else 0
    k = int(k or 5)
    return min(k, typed_count) if typed_count else k


def probability_rows(labels: list[dict[str, Any]]) -> list[list[Any]]:
    """Rank, label and probability with six decimals (enough to compare with `clipsearch predict`)."""
    return [[rank, entry["label"], f"{entry['probability']:.6f}"] for rank, entry in enumerate(labels, 1)]


def _classify(service: SearchService, upload: str | None, typed: str, label_set: str, templates: str, k):
    import gradio as gr

    if not upload:
        return gr.skip(), gr.skip(), "Drop an image to classify."
    if not (typed or "").strip() and label_set in (None, "", TYPED_LABELS):
        return gr.skip(), gr.skip(), "Type labels (comma-separated) or pick a label set, then press Classify."
    try:
        labels = service.classify(
            upload_bytes(upload),
            chosen_labels(typed, label_set),
            templates=None if templates in (None, "", DEFAULT_TEMPLATES) else templates,
            k=top_k(k, typed),
        )
    except Exception as error:  # any failure is a message in the page, never a dead page
        return gr.skip(), gr.skip(), report_error(error)
    bars = {entry["label"]: entry["probability"] for entry in labels}
    top = labels[0] if labels else None
    line = f"Top label: **{top['label']}** ({top['probability']:.2%})." if top else "No labels."
    return bars, probability_rows(labels), line


def zeroshot_tab(service: SearchService) -> None:
    """Lay out the tab and wire its events (inside an open `gr.Blocks`)."""
    import gradio as gr

    with gr.Row():
        upload = gr.Image(
            label="Image", type="filepath", image_mode=None, sources=["upload"], height=260, elem_id="zs-image"
        )
        with gr.Column():
            typed = gr.Textbox(label="Labels (comma-separated)", placeholder="cat, dog, bird", elem_id="zs-labels")
            label_set = gr.Dropdown(
                [TYPED_LABELS, *service.label_sets()],
                value=TYPED_LABELS,
                label="…or a label set",
                elem_id="zs-labelset",
            )
            templates = gr.Dropdown(
                [DEFAULT_TEMPLATES, *service.template_sets()],
                value=DEFAULT_TEMPLATES,
                label="Template set",
                elem_id="zs-templates",
            )
            k = gr.Number(value=5, label="top k", precision=0, minimum=1, maximum=100, elem_id="zs-k")
            button = gr.Button("Classify", variant="primary", elem_id="zs-btn")
    status = gr.Markdown("Drop an image and give labels.", elem_id="zs-status")
    with gr.Row():
        bars = gr.Label(label="Confidence", num_top_classes=10, elem_id="zs-bars")
        table = gr.Dataframe(headers=["rank", "label", "probability"], interactive=False, elem_id="zs-table")

    def classify(image: str | None, typed_labels: str, picked: str, template_set: str, k_value):
        return _classify(service, image, typed_labels, picked, template_set, k_value)

    def pick(picked: str):  # a picked set replaces the typed labels (which would otherwise win)
        return gr.skip() if picked == TYPED_LABELS else ""

    label_set.input(pick, label_set, typed)
    inputs = [upload, typed, label_set, templates, k]
    button.click(classify, inputs, [bars, table, status])
    typed.submit(classify, inputs, [bars, table, status])
    upload.upload(classify, inputs, [bars, table, status])
