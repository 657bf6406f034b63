"""The TUI's own widgets: the image preview, an input with a history, the keys screen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Static

from .render import half_block_strips


class ImagePreview(Widget):
    """The selected hit's pixels, centred in the widget, or a one-line message."""

    DEFAULT_CSS = "ImagePreview { height: 1fr; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image: Image.Image | None = None
        self.message = "no hit selected"
        self._strips: list[Strip] = []
        self._drawn_for: tuple[int, int] | None = None  # the size the strips were drawn for

    def show(self, image: Image.Image | None, message: str = "") -> None:
        self.image, self.message, self._drawn_for = image, message, None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self.image is None:
            return Strip([Segment(self.message[:width])]) if y == 0 else Strip.blank(width)
        if self._drawn_for != (width, height):
            self._strips, self._drawn_for = half_block_strips(self.image, width, height), (width, height)
        top = (height - len(self._strips)) // 2
        if not 0 <= y - top < len(self._strips):
            return Strip.blank(width)
        strip = self._strips[y - top]
        left = (width - strip.cell_length) // 2
        return Strip.join([Strip.blank(left), strip, Strip.blank(width - left - strip.cell_length)])


class HistoryInput(Input):
    """An input with a history: up/down walk through earlier entries, then back to the draft."""

    BINDINGS = [
        Binding("up", "history(-1)", "Earlier entry", show=False),
        Binding("down", "history(1)", "Later entry", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._position = 0
        self._draft = ""

    def remember(self, value: str) -> None:
        if value and (not self.history or self.history[-1] != value):
            self.history.append(value)
        self._position = len(self.history)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._position == len(self.history):
            self._draft = self.value
        self._position = min(max(self._position + step, 0), len(self.history))
        self.value = self.history[self._position] if self._position < len(self.history) else self._draft
        self.cursor_position = len(self.value)


class HelpScreen(ModalScreen[None]):
    """The key bindings; escape, ? or q (or a click) closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 90%; padding: 1 2; border: round $accent; background: $surface; }
    """

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        text = Text("clipsearch tui: keys\n\n", style="bold")
        for key, description in self.keys:
            text.append(f"{key:>16}  ", style="bold")
            text.append(f"{description}\n")
        text.append("\nmouse: click a field, a result, a button or a key in the footer", style="dim")
        yield Static(text, id="help")

    def on_click(self) -> None:
        self.dismiss()
