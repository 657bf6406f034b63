"""The JSON API of `clipsearch serve` (a contract: these routes and keys stay):

    GET  /api/info                 the object `clipsearch info NAME --json` prints
    GET  /api/status               {"ready": bool, "status": "loading model …" | "ready" | why not}
    POST /api/search               JSON {"query", "id", "k", "where", "threshold"}, or a multipart form with an
                                   `image` file and the same fields -> {"hits": [the `search --json` objects]}
    POST /api/classify             multipart `image` + `labels` ("a,b,c" or a label-set name), `templates`, `k`
                                   -> {"labels": [{"rank", "label", "probability", "cosine"}, ...]}
    GET  /api/thumb/{id}?size=256  a JPEG thumbnail of an indexed image (ids URL-encoded; slashes allowed)
    GET  /api/image/{id}           the image itself

A user's mistake is a 4xx with {"detail": "one line"}: 400 a bad request, 404 an id that is no row of the
index, 413 too large, 503 the model still loading. Ids are looked up as rows; no path from a request is opened.
fastapi is imported by `api_router`, not by importing this module.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations as objects, and
# fastapi is imported inside api_router (module-level annotations naming it are strings).
import json
from typing import TYPE_CHECKING, Any

from ..errors import ClipsearchError
from .service import MAX_UPLOAD_BYTES, NotFound, NotReady, SearchService, TooLarge

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI, Request, Response

MAX_JSON_BYTES = 64 * 1024  # a search request's JSON body
SEARCH_FIELDS = ("query", "id", "k", "where", "threshold")
_STATUS = ((NotFound, 404), (TooLarge, 413), (NotReady, 503))
_SEARCH_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "id": {"type": "string", "description": "an indexed image id: search with its stored vector"},
        "k": {"type": "integer", "default": 10},
        "where": {"type": "string", "description": "LanceDB SQL filter, e.g. split = 'test'"},
        "threshold": {"type": "number", "description": "drop hits with a cosine below this"},
    },
}
_FORM_SCHEMA = {
    "type": "object",
    "properties": {**_SEARCH_SCHEMA["properties"], "image": {"type": "string", "format": "binary"}},
}


def status_of(error: ClipsearchError) -> int:
    """The HTTP status a user error is answered with."""
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 400)


def json_response(content: Any, status_code: int = 200) -> "Response":
    """`content` serialised as the CLI's `--json` serialises it (json.dumps, str for anything else)."""
    from fastapi import Response

    return Response(json.dumps(content, default=str), status_code, media_type="application/json")


def error_response(status_code: int, detail: str) -> "Response":
    """{"detail": one line}: the shape FastAPI's own errors have."""
    return json_response({"detail": " ".join(str(detail).split()) or "error"}, status_code)


def install_error_handlers(app: "FastAPI") -> None:
    """User errors and invalid requests as one-line JSON 4xx answers, never a traceback."""
    from fastapi.exceptions import RequestValidationError

    async def user_error(request: "Request", error: Exception) -> "Response":
        assert isinstance(error, ClipsearchError)
        return error_response(status_of(error), str(error))

    async def invalid_request(request: "Request", error: Exception) -> "Response":
        assert isinstance(error, RequestValidationError)
        problems = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors()[:3]]
        return error_response(422, "invalid request: " + "; ".join(problems))

    app.add_exception_handler(ClipsearchError, user_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def api_router(service: SearchService) -> "APIRouter":
    """The /api routes over one service (blocking work runs in the thread pool)."""
    from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
    from starlette.concurrency import run_in_threadpool

    router = APIRouter(prefix="/api")

    @router.get("/info", summary="The index: model, counts, ANN type and recall (= `clipsearch info NAME --json`)")
    def info() -> Response:
        return json_response(service.info())

    @router.get("/status", summary="Whether the model is loaded: {ready, status}")
    def status() -> Response:
        return json_response({"ready": service.ready, "status": service.status})

    @router.post(
        "/search",
        summary="Nearest images to a text query, an uploaded image or an indexed id (= `search --json`)",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": _SEARCH_SCHEMA},
                    "multipart/form-data": {"schema": _FORM_SCHEMA},
                }
            }
        },
    )
    async def search(request: Request) -> Response:
        fields, image = await _search_request(request)
        hits = await run_in_threadpool(lambda: service.search(**fields, image=image))
        return json_response({"hits": hits})

    @router.post("/classify", summary="Zero-shot top-k labels of an uploaded image (= `clipsearch predict --json`)")
    async def classify(
        image: UploadFile = File(..., description="the image to label"),
        labels: str = Form(..., description='a label-set name (cifar10, cifar100, shapes, index) or "a,b,c"'),
        templates: str | None = Form(None, description="a template-set name (cifar, imagenet, simple, shapes)"),
        k: int = Form(5, description="how many labels"),
    ) -> Response:
        data = await _read_upload(image)
        ranked = await run_in_threadpool(service.classify, data, labels, templates or None, k)
        return json_response({"labels": ranked})

    @router.get("/thumb/{image_id:path}", summary="A JPEG thumbnail of an indexed image")
    def thumb(image_id: str, size: int = Query(256, description="longest side in pixels (16-1024)")) -> Response:
        return Response(service.thumbnail(image_id, size), media_type="image/jpeg", headers=_PRIVATE_CACHE)

    @router.get("/image/{image_id:path}", summary="An indexed image, full size")
    def image(image_id: str) -> Response:
        data, media_type = service.image(image_id)
        return Response(data, media_type=media_type, headers=_PRIVATE_CACHE)

    return router


_PRIVATE_CACHE = {"Cache-Control": "private, max-age=60"}


async def _search_request(request: "Request") -> tuple[dict[str, Any], bytes | None]:
    """(service.search keyword arguments, uploaded image bytes) from a JSON body or a multipart form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=len(SEARCH_FIELDS) + 8)
        try:
            unknown = sorted(set(form.keys()) - {*SEARCH_FIELDS, "image"})
            if unknown:
                raise ClipsearchError(f"unknown search fields: {', '.join(unknown)} (use {', '.join(SEARCH_FIELDS)})")
            upload = form.get("image")
            image = await _read_upload(upload) if upload is not None and not isinstance(upload, str) else None
            queries = [q for q in form.getlist("query") if isinstance(q, str) and q]
            raw = {key: form.get(key) for key in SEARCH_FIELDS[1:] if form.get(key) not in (None, "")}
            fields = {**_form_numbers(raw), "query": queries if len(queries) > 1 else (queries or [None])[0]}
        finally:
            await form.close()
        return _keywords(fields), image
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise TooLarge(f"the request body is too large: at most {MAX_JSON_BYTES // 1024} KB of JSON")
    try:
        fields = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise ClipsearchError(f"the body is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise ClipsearchError('the body must be a JSON object such as {"query": "a dog", "k": 10}')
    unknown = sorted(set(fields) - set(SEARCH_FIELDS))
    if unknown:
        raise ClipsearchError(f"unknown search fields: {', '.join(unknown)} (use {', '.join(SEARCH_FIELDS)})")
    return _keywords(fields), None


def _form_numbers(raw: dict[str, Any]) -> dict[str, Any]:
    """A form's k and threshold (text) as numbers."""
    fields = dict(raw)
    for key, kind in (("k", int), ("threshold", float)):
        if key in fields:
            try:
                fields[key] = kind(str(fields[key]).strip())
            except ValueError:
                raise ClipsearchError(f"{key} must be a {kind.__name__} (got {fields[key]!r})") from None
    return fields


def _keywords(fields: dict[str, Any]) -> dict[str, Any]:
    """Request fields as service.search keywords, type-checked."""
    k, threshold = fields.get("k", 10), fields.get("threshold")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ClipsearchError(f"k must be a whole number (got {k!r})")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ClipsearchError(f"threshold must be a number (got {threshold!r})")
    for key in ("id", "where"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise ClipsearchError(f"{key} must be a string (got {fields[key]!r})")
    return {
        "query": fields.get("query"),
        "image_id": fields.get("id"),
        "k": k,
        "where": fields.get("where") or None,
        "threshold": None if threshold is None else float(threshold),
    }


async def _read_upload(upload: Any) -> bytes:
    """An uploaded file's bytes, refused (413) past MAX_UPLOAD_BYTES without reading further."""
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"the upload is too large: more than {MAX_UPLOAD_BYTES // 2**20} MB")
    return data
