"""`clipsearch tui`: an interactive terminal UI over one index, built with Textual.

The model is loaded once, in a daemon thread, while the interface is already drawn (a
quit does not wait for it); every query runs in a worker thread, so typing never waits
for torch. A query submitted before the model is ready is queued (the latest one wins)
and answered as soon as it is. Escape leaves a text box for the results list, where the
letter keys are commands (`q` quits). What a key does is in `actions` (headless), the
details drawn in `render`, the preview in `widgets`; this module wires them to threads.

Importing this module does not import torch; it imports textual-image, which asks a terminal (only
a real one) which graphics it shows: import it after checking that there is one, before the app runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from ..errors import ClipsearchError
from ..sources.images import open_uri
from .actions import (
    Query,
    clean_query_text,
    describe_error,
    export_results,
    open_in_viewer,
    run_query,
    viewer_command,
    warm_model,
)
from .render import details_table, hit_details, hit_label
from .widgets import HelpScreen, HistoryInput, ImagePreview

if TYPE_CHECKING:
    from ..api import Index
    from ..index.query import Hit

PREVIEW_MAX_PIXELS = 640  # longest side kept for the preview: about what Sixel/Kitty graphics show in a pane
MAX_K = 1000


class SearchApp(App[None]):
    """Query box + filter box, results list, preview with metadata, actions, status line."""

    TITLE = "clipsearch"
    CSS = """
    #left { width: 1fr; }
    #right { width: 1fr; border-left: vkey $primary; padding: 0 0 0 1; }
    #message { height: auto; padding: 0 1; }
    #message.error { color: $error; text-style: bold; }
    #results { height: 1fr; }
    #preview { height: 1fr; min-height: 6; }
    #details { height: auto; max-height: 12; }
    #actions { height: auto; }
    #actions Button { margin: 0 1 0 0; min-width: 6; }
    #status { height: 1; padding: 0 1; background: $primary-background; }
    """
    BINDINGS = [
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("slash", "focus_query", "Query", key_display="/"),
        Binding("escape", "leave_box", "Leave the text box", show=False),
        Binding("m", "more_like_this", "More like this"),
        Binding("o", "open_hit", "Open"),
        Binding("c", "copy_path", "Copy path"),
        Binding("g", "export('png')", "Sheet PNG"),
        Binding("j", "export('json')", "JSON"),
        Binding("plus,equals_sign", "change_k(1)", "k+", key_display="+"),
        Binding("minus", "change_k(-1)", "k-", key_display="-"),
        Binding("q", "quit", "Quit"),
    ]
    EXTRA_KEYS = [
        ("enter", "run the query (in the query or the filter box)"),
        ("up / down", "history (in a box) · move through the results (in the list)"),
        ("tab / shift+tab", "next / previous field"),
        ("escape", "leave a text box for the results list, where these keys act (q quits)"),
    ]

    def __init__(
        self,
        open_index: Callable[[], Index],
        *,
        k: int = 10,
        export_dir: Path | None = None,
        load_model: Callable[[Index], None] = warm_model,
    ) -> None:
        """`open_index` and `load_model` run in a daemon thread after the UI is drawn."""
        super().__init__()
        if k <= 0:
            raise ClipsearchError(f"-k must be a positive number of results (got {k})")
        self._open_index = open_index
        self._load_model = load_model
        self.k = min(k, MAX_K)
        self.export_dir = export_dir or Path.cwd()
        self.index: Index | None = None
        self.index_size: int | None = None
        self.ready = False  # the model is loaded: queries run at once
        self.startup_error: str | None = None
        self.pending: Query | None = None  # submitted before the model was ready
        self.last_query: Query | None = None
        self.shown_query: Query | None = None  # the query whose hits are listed
        self.hits: list[Hit] = []
        self.selected: Hit | None = None
        self.latency: float | None = None  # seconds the last query took in the worker
        self.round_trip: float | None = None  # seconds from its submission to its hits listed
        self._submitted_at = 0.0
        # Move to the results once they are in (not while searching: it costs the search CPU).
        self._focus_results = False
        self.searching = False
        self._index_lock = threading.Lock()  # the Index (torch, FAISS) serves one thread at a time

    # -- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="left"):
                yield HistoryInput(placeholder='query: text, an image path, or "a dog + 2:snow - grass"', id="query")
                yield HistoryInput(placeholder="filter (SQL), e.g. split = 'test' AND width > 100", id="where")
                yield Static("", id="message")
                yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="actions"):
                    yield Button("More like this", id="more", action="app.more_like_this", compact=True)
                    yield Button("Open", id="open", action="app.open_hit", compact=True)
                    yield Button("Copy path", id="copy", action="app.copy_path", compact=True)
                    yield Button("Sheet PNG", id="png", action="app.export('png')", compact=True)
                    yield Button("JSON", id="json", action="app.export('json')", compact=True)
            with Vertical(id="right"):
                yield ImagePreview(id="preview")
                yield Static("", id="details")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#results", DataTable).add_columns("#", "score", "path / id", "label")
        self.query_one("#query", Input).focus()
        self._update_status()
        # A daemon thread, not a Textual worker: the app waits for its workers when it quits, and
        # loading torch and a model takes seconds that a quit should not.
        threading.Thread(target=self._prepare, name="clipsearch-tui-startup", daemon=True).start()

    # -- startup: open the index, load the model --------------------------------------
    def _prepare(self) -> None:
        try:
            index = self._open_index()
            self._post(self._index_opened, index, index.counts()["images"])
            with self._index_lock:
                self._load_model(index)
        except Exception as error:
            self._post(self._startup_failed, describe_error(error))
            return
        self._post(self._model_ready)

    def _post(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback` on the UI thread; drop it when the app has already gone."""
        if not self.is_running:  # quit while this thread worked (the model loads in a daemon thread)
            return
        try:
            self.call_from_thread(callback, *args)
        except RuntimeError:
            if self.is_running:
                raise

    def _index_opened(self, index: Index, size: int) -> None:
        self.index, self.index_size = index, size
        self._update_status()

    def _model_ready(self) -> None:
        self.ready = True
        pending, self.pending = self.pending, None
        if pending is not None:
            self._run(pending)
        self._update_status()

    def _startup_failed(self, message: str) -> None:
        """Without an index or a model nothing can be answered: leave, saying why."""
        self.startup_error = message
        self._say(message, error=True)
        self.exit(return_code=1)

    # -- queries ----------------------------------------------------------------------
    @on(Input.Submitted, "#query, #where")
    def _submitted(self) -> None:
        query_box, where_box = self.query_one("#query", HistoryInput), self.query_one("#where", HistoryInput)
        text, where = clean_query_text(query_box.value), where_box.value.strip()
        query_box.remember(text)
        where_box.remember(where)
        if not text:
            self._say("type a query: text, an image path, or terms joined by + and -", error=True)
            return
        self._focus_results = True
        self.submit(Query(text=text, where=where or None, k=self.k))

    def submit(self, query: Query) -> None:
        """Run `query` now, or as soon as the model is ready."""
        self.last_query = query
        self._submitted_at = time.perf_counter()
        self._say("")
        if self.ready:
            self._run(query)
        else:
            self.pending = query
        self._update_status()

    def _run(self, query: Query) -> None:
        self.searching = True
        self._search(query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, query: Query) -> None:
        worker = get_current_worker()
        try:
            with self._index_lock:
                hits, seconds = run_query(self.index, query)
        except Exception as error:
            if not worker.is_cancelled:
                self._post(self._search_failed, describe_error(error))
            return
        if not worker.is_cancelled:
            self._post(self._show_results, query, hits, seconds)

    def _search_failed(self, message: str) -> None:
        self.searching = self._focus_results = False
        self._say(message, error=True)
        self._update_status()

    def _show_results(self, query: Query, hits: list[Hit], seconds: float) -> None:
        self.searching = False
        self.shown_query, self.hits, self.latency = query, hits, seconds
        table = self.query_one("#results", DataTable)
        table.clear()
        for hit in hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.id, hit_label(hit.row), key=hit.id)
        if hits:
            table.move_cursor(row=0)
            self._select(hits[0])
        else:
            self.selected = None
            self.query_one("#preview", ImagePreview).show(None, "no results")
            self.query_one("#details", Static).update("")
        self._say(f"{len(hits)} results for {query.title}" + (f"  (filter: {query.where})" if query.where else ""))
        self._update_status()
        self.round_trip = time.perf_counter() - self._submitted_at
        if self._focus_results and isinstance(self.focused, HistoryInput):
            table.focus()
        self._focus_results = False

    # -- the selected hit -------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#results")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.hits):
            self._select(self.hits[event.cursor_row])

    def _select(self, hit: Hit) -> None:
        if self.selected is hit:
            return
        self.selected = hit
        self.query_one("#details", Static).update(details_table(hit_details(hit)))
        self.query_one("#preview", ImagePreview).show(None, "loading…")
        self._load_preview(hit)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def _load_preview(self, hit: Hit) -> None:
        worker = get_current_worker()
        try:
            image, message = open_uri(hit.uri), ""
            image.thumbnail((PREVIEW_MAX_PIXELS, PREVIEW_MAX_PIXELS))
        except Exception as error:
            image, message = None, f"cannot show: {describe_error(error)}"
        if not worker.is_cancelled:
            self._post(self._show_preview, hit, image, message)

    def _show_preview(self, hit: Hit, image: Image.Image | None, message: str) -> None:
        if hit is self.selected:
            self.query_one("#preview", ImagePreview).show(image, message)

    def _need_hit(self) -> Hit | None:
        if self.selected is None:
            self._say("select a result first", error=True)
        return self.selected

    # -- actions ----------------------------------------------------------------------
    def action_more_like_this(self) -> None:
        hit = self._need_hit()
        if hit is not None:
            where = self.query_one("#where", Input).value.strip() or None
            self.submit(Query(like=hit.id, where=where, k=self.k))

    def action_open_hit(self) -> None:
        hit = self._need_hit()
        if hit is not None:
            self._open_worker(hit)

    @work(thread=True, group="open", exit_on_error=False)
    def _open_worker(self, hit: Hit) -> None:
        try:
            path = open_in_viewer(hit)
        except Exception as error:
            self._post(self._say, describe_error(error), True)
            return
        self._post(self._say, f"opened {path} with {viewer_command()}")

    def action_copy_path(self) -> None:
        hit = self._need_hit()
        if hit is not None:
            self.copy_to_clipboard(hit.uri)
            self._say(f"copied {hit.uri}")

    def action_export(self, kind: str) -> None:
        if not self.hits:
            self._say("no results to export; run a query first", error=True)
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = self.index.name if self.index else "results"
        out = self.export_dir / f"{name}-results-{stamp}.{kind}"
        self._export_worker(list(self.hits), out, self.shown_query.title if self.shown_query else "")

    @work(thread=True, group="export", exit_on_error=False)
    def _export_worker(self, hits: list[Hit], out: Path, title: str) -> None:
        try:
            path = export_results(hits, out, title)
        except Exception as error:
            self._post(self._say, describe_error(error), True)
            return
        self._post(self._say, f"wrote {path}")

    def action_change_k(self, step: int) -> None:
        self.k = min(max(self.k + step, 1), MAX_K)
        if self.last_query is not None:
            self.submit(replace(self.last_query, k=self.k))
        self._update_status()

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def action_leave_box(self) -> None:
        """From a text box to the results list, so that a letter typed next is a command, not text
        (in the list, where keys already are commands, escape changes nothing)."""
        if isinstance(self.focused, Input):
            self.query_one("#results", DataTable).focus()

    def action_help(self) -> None:
        keys = list(self.EXTRA_KEYS) + [(b.key_display or b.key, b.description) for b in self.BINDINGS if b.show]
        self.push_screen(HelpScreen(keys))

    # -- messages and status ------------------------------------------------------------
    def _say(self, message: str, error: bool = False) -> None:
        """The line under the inputs: errors in red (also as a notification), else information."""
        line = self.query_one("#message", Static)
        line.update(Text(message))
        line.set_class(error, "error")
        if error:
            self.notify(message, severity="error", timeout=6)

    def status_text(self) -> str:
        if self.index is None:
            parts = ["opening the index…"]
        else:
            parts = [f"model {self.index.spec.identity()}", f"{self.index_size:,} images"]
            if self.index.spec.is_random:
                parts.insert(1, "random weights: results mean nothing")
        parts.append(f"k={self.k}")
        if self.latency is not None:
            parts.append(f"last query {self.latency * 1000:.0f} ms")
        if self.startup_error:
            parts.append("cannot start")
        elif not self.ready:
            parts.append("loading the model… (queries wait)" + (" · 1 query queued" if self.pending else ""))
        else:
            parts.append("searching…" if self.searching else "ready")
        parts.append("? keys")
        return " · ".join(parts)

    def _update_status(self) -> None:
        self.query_one("#status", Static).update(Text(self.status_text()))
