"""The TUI's own widgets: the image preview, an input with a history, the keys screen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Middle
from textual.screen import ModalScreen
from textual.widgets import Input, Static
from textual_image.renderable import Image as TerminalRenderable
from textual_image.renderable import UnicodeImage
from textual_image.widget import HalfcellImage
from textual_image.widget import Image as TerminalImage

# textual-image chooses, when it is imported, what the terminal shows: Sixel or Kitty graphics where the
# terminal answers for them, else coloured half blocks; without a terminal (Textual's headless pilot, the
# screenshot script) it would draw grey shades, so half blocks are drawn there too.
PreviewImage = HalfcellImage if TerminalRenderable is UnicodeImage else TerminalImage


class ImagePreview(Middle):
    """The selected hit's pixels, fitted and centred in the pane (textual-image), or a one-line message."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; }
    ImagePreview Center { height: auto; }
    ImagePreview .preview-image { width: auto; height: auto; }
    ImagePreview .preview-message { width: auto; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image: Image.Image | None = None
        self.message = "no hit selected"

    def compose(self) -> ComposeResult:
        with Center():
            yield Static(self.message, classes="preview-message")
        with Center():
            yield PreviewImage(classes="preview-image")

    def on_mount(self) -> None:
        self.show(self.image, self.message)

    def show(self, image: Image.Image | None, message: str = "") -> None:
        self.image, self.message = image, message
        self.query_one(".preview-message", Static).update(Text(message))
        self.query_one(".preview-message", Static).display = bool(message)
        picture = self.query_one(".preview-image", PreviewImage)
        picture.image = image
        picture.display = image is not None


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
