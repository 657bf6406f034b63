"""One warm index + model behind `clipsearch serve`, shared by the JSON API (api.py) and the Gradio page (ui.py).

The index is opened read-only: serving takes no writer lock and never changes the manifest or the FAISS
file (a FAISS file that is not current is rebuilt in memory instead). Each query looks up the table
version once (`Index.ann_index`), so rows written by `clipsearch index` meanwhile are found. The model
loads in a background thread as soon as the service is made; queries that need it wait for it (bounded),
the others (info, "more like this" by id, thumbnails) never do.

Nothing here opens a path a request names: images are served by row id, query texts are always text
(`parse_query(files=False)`), label and template specs are names or inline lists (`files=False`).
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..api import Index
from ..errors import ClipsearchError
from ..files import read_json
from ..index.query import MAX_K, check_k, embed_query, parse_query
from ..sources.images import ImageDecodeError, decode_image, open_uri, read_image_bytes
from ..tasks import outputs
from ..tasks.probes.features import index_class_names
from ..tasks.prompts import LABEL_SETS, TEMPLATE_SETS
from ..tasks.zeroshot import class_prototypes, predict_images, prediction_prompts

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # an uploaded query image (a phone photo is < 10 MB)
MAX_QUERY_CHARS = 2000  # the text of a query, all terms together
MAX_WHERE_CHARS = 2000
MAX_RESULTS = min(1000, MAX_K)  # hits per request: a page of thumbnails, not a data export
MAX_LABELS = 1000  # classes of one zero-shot request (cifar100 has 100)
MODEL_WAIT_SECONDS = 120.0  # how long a query waits for the model before it is told to come back
THUMB_SIZES = (16, 1024)
_CACHED_PROTOTYPES = 16  # label set + template set combinations kept embedded
_CACHED_THUMBS = 1024
# Served as stored; any other format (TIFF, HEIC, BMP, dataset pixels) is converted to PNG.
_BROWSER_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
INDEX_LABELS = "index"  # the label-set name of the index's own stored labels


class NotFound(ClipsearchError):
    """No live row has the id a request names (HTTP 404)."""


class TooLarge(ClipsearchError):
    """An upload over MAX_UPLOAD_BYTES (HTTP 413)."""


class NotReady(ClipsearchError):
    """The model is still loading after MODEL_WAIT_SECONDS, or could not be loaded (HTTP 503)."""


class SearchService:
    """A read-only index and its warm model; every method is safe to call from several threads."""

    def __init__(self, name: str, root: Path | None = None, backend: str = "auto", precision: str | None = None):
        """Open index `name` under `root` read-only and start loading its model in the background."""
        self.index = Index.open(name, root)
        self.index.store.read_only = True  # no lock file, no manifest write; a stale FAISS file is built in memory
        self.index.encoder_options = {"backend": backend, "precision": precision}
        self._model_lock = threading.Lock()  # one encoder call at a time (exported runtimes are not re-entrant)
        self._index_lock = threading.Lock()  # the FAISS refresh on a new table version
        self._loaded = threading.Event()
        self.opened = threading.Event()  # the table and FAISS index are loaded (set before the model loads)
        self._load_error: str | None = None
        self._load_started = time.monotonic()
        self._prototypes: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._thumbs: OrderedDict[tuple[str, int, Any], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        threading.Thread(target=self._warm, name="clipsearch-model", daemon=True).start()

    # -- the model -------------------------------------------------------------------------
    def _warm(self) -> None:
        """Build the encoder and the FAISS index and run one text, so the first query costs what later ones do."""
        try:
            try:
                self._current_index()  # first: the table and FAISS file answer info and "more like this" meanwhile
            finally:
                self.opened.set()
            with self._model_lock:
                self.index.encoder.encode_texts(["warm-up"])
        except Exception as error:  # shown as the status line; queries that need the model get it too
            self._load_error = _one_line(error)
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warm."""
        return self._loaded.is_set() and self._load_error is None

    @property
    def status(self) -> str:
        """The model's state in one line: "loading model …", "ready", or why it could not be loaded."""
        if not self._loaded.is_set():
            return f"loading model {self.index.spec.identity()} … ({time.monotonic() - self._load_started:.0f} s)"
        return self._load_error or "ready"

    def _encoder(self) -> Any:
        """The warm encoder, after waiting (bounded) for the background load."""
        if not self._loaded.wait(MODEL_WAIT_SECONDS):
            raise NotReady(f"the model is still loading ({self.status}); try again in a moment")
        if self._load_error:
            raise NotReady(f"the model could not be loaded: {self._load_error}")
        return self.index.encoder

    def _current_index(self) -> None:
        """Pick up a newer table version (one look-up; the FAISS file is reloaded, or built in memory)."""
        with self._index_lock:
            self.index.ann_index  # noqa: B018  (the property refreshes)

    # -- the index -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The object `clipsearch info NAME --json` prints, for the table as it is now."""
        self._current_index()
        return self.index.info()

    def row(self, image_id: str) -> dict[str, Any]:
        """The stored row of one live image (metadata and captions, no vector); NotFound when there is none."""
        if not isinstance(image_id, str) or not image_id or len(image_id) > 4096:
            raise ClipsearchError("an image id must be a non-empty string")
        row = self.index.row_of(image_id)
        if row is None:
            raise NotFound(f"no image {image_id!r} in index '{self.index.name}'")
        return row

    def label_sets(self) -> list[str]:
        """Label-set names classify() takes: the built-in ones, and "index" when the index has stored labels."""
        return [*LABEL_SETS, *([INDEX_LABELS] if self._index_labels() else [])]

    def template_sets(self) -> list[str]:
        """Template-set names classify() takes."""
        return list(TEMPLATE_SETS)

    def _index_labels(self) -> list[str]:
        try:
            return index_class_names(self.index, "all")
        except ClipsearchError:  # no stored labels
            return []

    # -- search ----------------------------------------------------------------------------
    def search(
        self,
        query: str | list[str] | None = None,
        image_id: str | None = None,
        image: bytes | None = None,
        k: int = 10,
        where: str | None = None,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """Hits as `clipsearch search NAME --json` prints them: for a text query (weighted `+`/`-` terms),
        an uploaded image (plus optional text terms), or the stored vector of an indexed image (`image_id`)."""
        terms = _checked_query(query)
        check_k(k)
        if k > MAX_RESULTS:
            raise ClipsearchError(f"k {k} is too many: at most {MAX_RESULTS} results per request")
        if where is not None and len(where) > MAX_WHERE_CHARS:
            raise ClipsearchError(f"the filter is too long: at most {MAX_WHERE_CHARS} characters")
        self._current_index()
        if image_id is not None:
            if terms or image is not None:
                raise ClipsearchError("give either an indexed image id or a query (text and/or an uploaded image)")
            self.row(image_id)  # NotFound for an unknown id
            vector = self.index.vector_of(image_id)
        else:
            parsed = parse_query(terms, [decode_upload(image)] if image is not None else [], files=False)
            if where and not self.ready:  # a mistake in the filter is reported without waiting for the model
                self.index.rows(where, ["key"])
            encoder = self._encoder()
            with self._model_lock:
                vector = embed_query(encoder, parsed)
        hits = self.index.search(vector=vector, k=k, where=where, threshold=threshold)
        return [hit.to_dict() for hit in hits]

    # -- zero-shot -------------------------------------------------------------------------
    def classify(self, image: bytes, labels: str, templates: str | None = None, k: int = 5) -> list[dict[str, Any]]:
        """Top-k classes (k at most the number of classes) of an uploaded image with softmax(100·cos) probabilities
        over the whole label set: the numbers `clipsearch predict IMAGE --labels L --index NAME --json` prints.
        `labels`: a label-set name, "index" (the stored labels), or "a,b,c"; `templates`: a template-set name."""
        spec = _checked_labels(labels)
        if templates is not None and templates not in TEMPLATE_SETS:
            raise ClipsearchError(f"unknown templates {templates!r}: use one of {', '.join(TEMPLATE_SETS)}")
        if spec == INDEX_LABELS:
            spec = self._index_labels() or _no_index_labels(self.index.name)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ClipsearchError(f"k must be a positive number of labels (got {k})")
        class_names, prompts = prediction_prompts(spec, templates, 1, files=False)
        k = min(k, len(class_names))  # "top 5" of three typed labels: all three
        pixels = decode_upload(image)
        encoder = self._encoder()
        prototypes = self._class_prototypes(encoder, prompts)
        with self._model_lock:
            ranked = predict_images(encoder, [pixels], class_names, prototypes, k)[0]
        return [
            {"rank": rank, "label": p.label, "probability": p.probability, "cosine": p.cosine}
            for rank, p in enumerate(ranked, 1)
        ]

    def _class_prototypes(self, encoder: Any, prompts: list[list[str]]) -> Any:
        key = tuple(map(tuple, prompts))
        with self._cache_lock:
            if key in self._prototypes:
                self._prototypes.move_to_end(key)
                return self._prototypes[key]
        with self._model_lock:
            prototypes = class_prototypes(encoder, prompts)
        with self._cache_lock:
            self._prototypes[key] = prototypes
            while len(self._prototypes) > _CACHED_PROTOTYPES:
                self._prototypes.popitem(last=False)
        return prototypes

    # -- pixels ------------------------------------------------------------------------------
    def thumbnail(self, image_id: str, size: int = 256) -> bytes:
        """A JPEG of an indexed image, its longer side at most `size` pixels (dataset pixels too)."""
        if isinstance(size, bool) or not isinstance(size, int) or not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise ClipsearchError(f"thumbnail size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]} pixels")
        row = self.row(image_id)
        key = (image_id, size, (row.get("content_hash"), row.get("mtime"), row.get("uri")))
        with self._cache_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        picture = _pixels(row)
        picture.thumbnail((size, size))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        with self._cache_lock:
            self._thumbs[key] = buffer.getvalue()
            while len(self._thumbs) > _CACHED_THUMBS:
                self._thumbs.popitem(last=False)
        return buffer.getvalue()

    def image(self, image_id: str) -> tuple[bytes, str]:
        """(bytes, media type) of an indexed image: its file as stored when a browser shows that format,
        else (other formats, dataset pixels) a PNG of its upright pixels."""
        row = self.row(image_id)
        media_type = _BROWSER_TYPES.get(Path(row["uri"]).suffix.lower())
        if media_type and Path(row["uri"]).is_file():
            try:
                return read_image_bytes(row["uri"]), media_type
            except ImageDecodeError as error:
                raise ClipsearchError(f"cannot read {row['uri']}: {error}") from None
        buffer = io.BytesIO()
        _pixels(row).save(buffer, "PNG")
        return buffer.getvalue(), "image/png"

    # -- evaluations ---------------------------------------------------------------------------
    def evaluations(self) -> list[dict[str, Any]]:
        """The evaluation results saved in the index folder (`eval zeroshot`, `eval retrieval`, `probe eval`, ...),
        newest first: {"name", "updated" (seconds since the epoch), "results", "plots": {kind: path}}."""
        folder = self.index.store.path / outputs.EVAL_DIR
        found = []
        for results in folder.glob(f"*/{outputs.RESULTS_FILE}") if folder.is_dir() else []:
            try:
                data = read_json(results)
            except (OSError, ValueError):  # half-written or damaged: not shown
                continue
            plots = {
                kind: str(results.parent / file)
                for kind, file in (("confusion", outputs.CONFUSION_FILE), ("curve", outputs.CURVE_FILE))
                if (results.parent / file).is_file()
            }
            found.append(
                {"name": results.parent.name, "updated": results.stat().st_mtime, "results": data, "plots": plots}
            )
        return sorted(found, key=lambda entry: -entry["updated"])


def decode_upload(data: bytes | None) -> Image.Image:
    """An uploaded image, size-checked and decoded by the guarded decoder indexing uses."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ClipsearchError("the upload is empty: send an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"the upload is too large: {len(data)} bytes, at most {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        return decode_image(bytes(data))
    except ImageDecodeError as error:
        raise ClipsearchError(f"cannot read the uploaded image: {error}") from None


def _pixels(row: dict[str, Any]) -> Image.Image:
    """The upright RGB pixels of a stored row (its file, or its dataset's archive)."""
    try:
        return open_uri(row["uri"])
    except (ImageDecodeError, OSError) as error:
        raise ClipsearchError(f"cannot read image {row['id']!r}: {error}") from None


def _checked_query(query: str | Sequence[str] | None) -> list[str]:
    """The query's terms as a list of strings, bounded in length."""
    if query is None or query == "":
        return []
    terms = [query] if isinstance(query, str) else query
    if not isinstance(terms, (list, tuple)) or not all(isinstance(term, str) for term in terms):
        raise ClipsearchError('the query must be a string or a list of strings such as ["a dog", "+", "2:snow"]')
    if sum(len(term) for term in terms) > MAX_QUERY_CHARS:
        raise ClipsearchError(f"the query is too long: at most {MAX_QUERY_CHARS} characters")
    return list(terms)


def _checked_labels(labels: str) -> str:
    if not isinstance(labels, str) or not labels.strip():
        raise ClipsearchError('give labels: a label set name or a comma-separated list such as "cat,dog,bird"')
    labels = labels.strip()
    if labels.count(",") >= MAX_LABELS or len(labels) > 100 * MAX_LABELS:
        raise ClipsearchError(f"too many labels: at most {MAX_LABELS}")
    return labels


def _no_index_labels(name: str) -> list[str]:
    raise ClipsearchError(f"index '{name}' has no stored labels; type labels or pick a label set")


def _one_line(error: BaseException) -> str:
    if isinstance(error, ClipsearchError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}".rstrip(": ")
