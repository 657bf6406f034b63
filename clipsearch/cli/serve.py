"""`clipsearch serve NAME`: the web app and JSON API over one index (clipsearch/web/), run by uvicorn."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Optional

import typer

from ..errors import ClipsearchError
from ..web.app import create_app
from ..web.service import SearchService
from .common import BackendOpt, PrecisionOpt, RootOpt, end_process, err

WEB_MODULES = ("gradio", "fastapi", "uvicorn", "multipart")  # what the `web` extra installs


def serve_cmd(
    name: str = typer.Argument(..., help="Index name."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: a token is required)."),
    port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
    root: Optional[Path] = RootOpt,
    token: Optional[str] = typer.Option(
        None,
        "--token",
        help="Required on every request (Authorization: Bearer TOKEN, or ?token=TOKEN in the page's URL).",
    ),
    backend: str = BackendOpt,
    precision: Optional[str] = PrecisionOpt,
) -> None:
    """Serve an index: a web page (search gallery, zero-shot, index page) and a JSON API under /api."""
    missing = [module for module in WEB_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        needs = f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed"
        raise ClipsearchError(f"serve needs {needs}: pip install 'clipsearch[web]'")
    if token is not None and len(token) < 8:
        raise ClipsearchError("--token must be at least 8 characters")
    generated = token is None and not is_loopback(host)
    token = secrets.token_urlsafe(24) if generated else token
    listening = bound_socket(host, port)  # before the index and model: a taken port is one line, at once
    service = SearchService(name, root, backend, precision)  # loads the model in the background
    app = create_app(service, token)
    address = f"http://{'[' + host + ']' if ':' in host else host}:{listening.getsockname()[1]}/"
    err.print(f"serving index '{name}' at {address} (JSON API under /api, its docs at /docs); Ctrl-C stops")
    if generated:
        err.print(f"token (required on every request): {token}\nopen {address}?token={token}", highlight=False)
    run_server(app, listening)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or one line saying why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        raise ClipsearchError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listening.set_inheritable(True)
    return listening


def run_server(app: object, listening: socket.socket) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM; both shut down cleanly and end with exit code 0."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled, after shutting down
        server.run(sockets=[listening])
    err.print("stopped")
    end_process(0)  # the index was only read; tearing down torch's and gradio's modules took seconds
