"""The Index tab: what `clipsearch info` says (model, counts, ANN type and its measured recall),
the files indexing skipped and why, and the latest saved evaluations with their plots."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from .ui_common import report_error

if TYPE_CHECKING:
    import gradio as gr

    from .service import SearchService

SKIPPED_SHOWN = 200  # rows of the skipped-files table (the count says how many there are)
# The headline numbers of each kind of results.json, in the order shown.
HEADLINE_KEYS = ("top1", "top5", "mean_per_class_recall", "accuracy", "image_to_text", "text_to_image", "n")


def info_markdown(info: dict[str, Any]) -> str:
    """Model, counts and ANN index of an `info --json` object, as Markdown."""
    ann = info.get("ann") or {}
    counts = info.get("counts") or {}
    lines = [
        f"### Index `{info['name']}`",
        "",
        f"**Model** `{info.get('model_id')}` · {info.get('dim')}-d · updated {info.get('updated') or '?'}",
        "",
        "| count | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in counts.items()],
        "",
        ann_line(ann),
        "",
    ]
    return "\n".join(lines)


def ann_line(ann: dict[str, Any]) -> str:
    """The FAISS index: its factory string, size and the recall@10 against exact search measured at build."""
    if not ann:
        return "**ANN** not built yet (it is built on the first search)"
    line = f"**ANN** {ann.get('factory')} ({ann.get('kind')}) · {ann.get('n')} vectors"
    line += f" · recall@10 against exact search: {ann.get('recall@10')}"
    return line + (f" · nprobe {ann['nprobe']}" if ann.get("nprobe") else "")


def skipped_rows(service: SearchService) -> list[list[Any]]:
    """(file, reason) of the files indexing skipped, from the service's index."""
    return [[row.get("id"), row.get("reason")] for row in service.index.skipped()[:SKIPPED_SHOWN]]


def _headline(results: dict[str, Any]) -> str:
    """The few numbers that say how an evaluation went (nested dicts one level down too)."""
    parts = []
    for key in HEADLINE_KEYS:
        value = results.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3f}" for k, v in value.items() if isinstance(v, float))
        elif isinstance(value, float):
            value = f"{value:.4f}"
        if value not in (None, ""):
            parts.append(f"{key.replace('_', ' ')}: {value}")
    return " · ".join(parts) or "(see results.json)"


def evaluations_view(evaluations: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """Markdown of the saved evaluations (newest first) and their plots as gallery items."""
    if not evaluations:
        return "No saved evaluations (run `clipsearch eval zeroshot|retrieval NAME`).", []
    lines, plots = ["### Evaluations", ""], []
    for entry in evaluations:
        when = datetime.datetime.fromtimestamp(entry["updated"]).strftime("%Y-%m-%d %H:%M")
        lines.append(f"- **{entry['name']}** ({when}): {_headline(entry['results'])}")
        plots += [(path, f"{entry['name']} · {kind}") for kind, path in entry["plots"].items()]
    return "\n".join(lines), plots


def _refresh(service: SearchService):
    import gradio as gr

    try:
        info = service.info()
        markdown, plots = evaluations_view(service.evaluations())
        skipped = skipped_rows(service)
    except Exception as error:  # any failure is a message in the page, never a dead page
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), report_error(error)
    counted = f"{info.get('counts', {}).get('skipped', len(skipped))} skipped files" + (
        f" (first {SKIPPED_SHOWN} shown)" if len(skipped) == SKIPPED_SHOWN else ""
    )
    return info_markdown(info), skipped, markdown, gr.update(value=plots, visible=bool(plots)), counted


def index_tab(service: SearchService, blocks: gr.Blocks) -> None:
    """Lay out the tab and fill it when the page loads and on Refresh (inside an open `gr.Blocks`)."""
    import gradio as gr

    refresh = gr.Button("Refresh", size="sm", elem_id="index-refresh")
    summary = gr.Markdown(elem_id="index-info")
    skipped_line = gr.Markdown(elem_id="index-skipped-count")
    skipped = gr.Dataframe(headers=["file", "reason"], interactive=False, elem_id="index-skipped", wrap=True)
    evaluations = gr.Markdown(elem_id="index-evaluations")
    plots = gr.Gallery(label="Evaluation plots", columns=2, height=480, visible=False, elem_id="index-plots")
    outputs = [summary, skipped, evaluations, plots, skipped_line]
    refresh.click(lambda: _refresh(service), None, outputs)
    blocks.load(lambda: _refresh(service), None, outputs)
