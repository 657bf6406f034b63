"""What the TUI does, without the UI: run a query, warm the model, open a hit in the
system viewer, export results, word an error. Each is a plain function over an Index,
callable and tested without a terminal (the latency benchmark times `run_query` too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ClipsearchError
from ..files import write_json
from ..present.sheets import contact_sheet, hit_captions
from ..sources.images import ImageDecodeError, open_uri

if TYPE_CHECKING:
    from ..api import Index
    from ..index.query import Hit


@dataclass(frozen=True)
class Query:
    """One request: a query string (text, image paths, weighted `+`/`-` terms) or the
    stored vector of an indexed image (`like`), with a filter and k."""

    text: str | None = None
    like: str | None = None  # id of an indexed image: "more like this"
    where: str | None = None
    k: int = 10

    @property
    def title(self) -> str:
        return f"more like {self.like}" if self.like else str(self.text)


def clean_query_text(text: str) -> str:
    """Trim, and unwrap a whole query quoted the way terminals paste a dropped file."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and Path(text[1:-1]).expanduser().exists():
        return text[1:-1]
    return text


def run_query(index: Index, query: Query) -> tuple[list[Hit], float]:
    """The hits for `query` and the seconds taken (query encoding + FAISS + row fetch).
    "More like this" searches with the image's stored vector: exact, and no model call."""
    start = time.perf_counter()
    if query.like:
        hits = index.search(vector=index.vector_of(query.like), k=query.k, where=query.where)
    else:
        hits = index.search(query.text, k=query.k, where=query.where)
    return hits, time.perf_counter() - start


def warm_model(index: Index) -> None:
    """Build the encoder, load the FAISS index and run one text through the model, so the
    first query costs what every later one does."""
    index.encoder.encode_texts(["warm-up"])
    index.ann_index  # noqa: B018  (the property loads the FAISS file)


def describe_error(error: BaseException) -> str:
    """One line for the UI: a user error's own message, else the exception type too."""
    if isinstance(error, ClipsearchError):
        return str(error)
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}".rstrip(": ")


def viewer_command() -> str:
    return "open" if sys.platform == "darwin" else "xdg-open"


def _viewable_file(hit: Hit) -> Path:
    """The hit's own file, or for a dataset image (no file of its own) a temporary PNG of it."""
    path = Path(hit.uri)
    if path.is_file():
        return path
    try:
        image = open_uri(hit.uri)
    except (ImageDecodeError, ClipsearchError) as err:
        raise ClipsearchError(f"cannot open {hit.uri}: {err}") from None
    path = Path(tempfile.gettempdir()) / f"clipsearch-{re.sub(r'[^A-Za-z0-9._-]', '_', hit.id)}.png"
    image.save(path)
    return path


def open_in_viewer(hit: Hit) -> Path:
    """Hand the hit's image to the system image viewer without waiting for it; the path shown."""
    path = _viewable_file(hit)
    viewer = shutil.which(viewer_command())
    if viewer is None:
        raise ClipsearchError(f"no system image viewer ({viewer_command()} not found); copy the path with 'c' instead")
    subprocess.Popen(
        [viewer, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return path


def export_results(hits: Sequence[Hit], out: Path, title: str) -> Path:
    """The hits as a contact sheet (.png) or as the JSON list `clipsearch search --json` prints."""
    if not hits:
        raise ClipsearchError("no results to export; run a query first")
    if out.suffix == ".json":
        return write_json(out, [hit.to_dict() for hit in hits])
    images = [open_uri(hit.uri) for hit in hits]
    return contact_sheet(images, hit_captions(hits), out, title=title)
