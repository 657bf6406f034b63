"""The one ASGI app of `clipsearch serve`: the JSON API under /api (api.py), its OpenAPI page at /docs, and
the Gradio page (ui.py) at "/", all behind one guard.

The Gradio page is built in the background when the server starts (importing gradio takes seconds), so the
API answers at once and the page's requests wait for it.

The guard sees every request, the Gradio page and its assets included:
- with a token, each request must carry it (`Authorization: Bearer T`, or `?token=T`, which also sets a
  cookie so a browser's later requests carry it): missing -> 401, wrong -> 403;
- without one (loopback only, enforced by the command), the Host header must name the loopback, so a web
  page that rebinds its own domain to 127.0.0.1 cannot read the index through the browser;
- a request body may not exceed MAX_BODY_BYTES (413), whether or not it declares its length.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .api import api_router, error_response, install_error_handlers
from .service import MAX_UPLOAD_BYTES, SearchService
from .ui import build_ui

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 1024 * 1024  # one upload plus its form fields
TOKEN_COOKIE = "clipsearch_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PAGE_WAIT_SECONDS = 120.0  # how long a request for the page waits while gradio loads
PAGE_STOP_SECONDS = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def create_app(service: SearchService, token: str | None = None) -> FastAPI:
    """The FastAPI app serving `service`: /api/*, /docs, and the Gradio page at "/"; `token`: required on every
    request (without one, only requests addressed to the loopback are answered). The page is built when the
    server starts, in the background (importing gradio takes seconds): the API answers meanwhile."""
    from fastapi import FastAPI

    page = LazyPage(service)
    app = FastAPI(
        title="clipsearch",
        summary=f"Search index '{service.index.name}' by text or image, and label images zero-shot.",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lambda app: page.running(),
    )
    install_error_handlers(app)
    app.include_router(api_router(service))
    app.mount("/", page)
    app.add_middleware(Guard, token=token)
    return app


class LazyPage:
    """The Gradio page (ui.build_ui mounted on its own FastAPI app), built in a thread once the server runs;
    requests for it wait until it is (bounded)."""

    def __init__(self, service: SearchService):
        self.service = service
        self.app: Callable[..., Awaitable[None]] | None = None
        self.error: str | None = None
        self._built: asyncio.Event | None = None

    def build(self) -> FastAPI:
        """The page's ASGI app (blocking: imports gradio and builds the Blocks)."""
        # After the index has loaded: importing gradio meanwhile would slow the server's first answers down.
        self.service.opened.wait(PAGE_WAIT_SECONDS)
        import gradio as gr
        from fastapi import FastAPI

        blocks = build_ui(self.service)
        page = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # the API's docs are the outer app's
        return gr.mount_gradio_app(page, blocks, path="/", max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The server's lifespan: build the page in the background and run its own lifespan (gradio's queue and
        startup events) until the server stops; one task enters and leaves it."""
        self._built, stopping = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(self._serve(stopping))
        try:
            yield
        finally:
            stopping.set()
            if self.app is None:  # still importing gradio: nothing to stop
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(task, PAGE_STOP_SECONDS)

    async def _serve(self, stopping: asyncio.Event) -> None:
        assert self._built is not None
        try:
            app = await _in_daemon_thread(self.build)
            async with app.router.lifespan_context(app):
                self.app = app
                self._built.set()
                await stopping.wait()
        except Exception as error:  # the API still serves; the page says why it is missing
            self.error = f"the web page could not be built: {type(error).__name__}: {error}"
        finally:
            self.app = None
            self._built.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._built is None:
            await _refuse(scope, receive, send, 503, "the web page starts with the server (run it under uvicorn)")
            return
        try:
            await asyncio.wait_for(self._built.wait(), PAGE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            await _refuse(scope, receive, send, 503, "the web page is still being built; reload in a moment")
            return
        if self.app is None:
            await _refuse(scope, receive, send, 503, self.error or "the web page is not available")
            return
        await self.app(scope, receive, send)


async def _in_daemon_thread(function: Callable[[], Any]) -> Any:
    """`function()` run in a daemon thread: unlike asyncio.to_thread's pool, a Ctrl-C while gradio is still
    importing does not wait for the import to finish before the process exits."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            settle, outcome = done.set_result, function()
        except BaseException as error:  # handed to the awaiting task
            settle, outcome = done.set_exception, error
        with contextlib.suppress(RuntimeError):  # the server stopped meanwhile: its loop is closed
            loop.call_soon_threadsafe(lambda: done.cancelled() or settle(outcome))

    threading.Thread(target=run, name="clipsearch-page", daemon=True).start()
    return await done


class Guard:
    """ASGI middleware: the token (or, without one, a loopback Host) and the request-body bound, on every request."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str | None = None, max_body: int = MAX_BODY_BYTES):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _refuse(scope, receive, send, *refusal)
            return
        if scope["type"] == "http":
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                await _refuse(scope, receive, send, 413, f"the request is too large: at most {self._limit()}")
                return
            receive = self._bounded(receive)
        if self.token and _query_token(scope) == self.token:  # a browser's first visit: remember the token
            send = _setting_cookie(send, self.token)
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except BodyTooLarge:
            if not started:  # else a mounted app already answered (500) before passing the error on
                await _refuse(scope, receive, send, 413, f"the request is too large: at most {self._limit()}")

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) when the request may not be answered, else None."""
        if not self.token:
            host = _host_name(headers.get("host", ""))
            return None if host in LOOPBACK_HOSTS else (403, f"host {host!r} is not served (loopback only)")
        offered = [_bearer(headers.get("authorization", "")), _query_token(scope), _cookie_token(headers)]
        offered = [candidate for candidate in offered if candidate]
        if not offered:
            return 401, "a token is required: send 'Authorization: Bearer TOKEN' or open the page with ?token=TOKEN"
        if not any(hmac.compare_digest(candidate.encode(), self.token.encode()) for candidate in offered):
            return 403, "wrong token"
        return None

    def _bounded(self, receive: Receive) -> Receive:
        """`receive` that raises BodyTooLarge once the body passes max_body bytes (chunked bodies too)."""
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        return bounded

    def _limit(self) -> str:
        return f"{self.max_body // 2**20} MB"


class BodyTooLarge(Exception):
    """A request body passed the bound while it was read."""


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    await error_response(status, detail)(scope, receive, send)


def _host_name(host: str) -> str:
    """The name of a Host header without its port ("[::1]:7860" -> "::1")."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _cookie_token(headers: dict[str, str]) -> str | None:
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header carries no token
        return None
    return cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None


def _setting_cookie(send: Send, token: str) -> Send:
    """`send` that adds the token cookie to the response's headers."""
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return sending
