"""The web page of `clipsearch serve` in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium; `make test` installs them): what a person sees after typing a query, dropping an image,
clicking a result, classifying an upload and opening the index page, checked against `Index.search`,
`clipsearch predict --json` and `clipsearch info --json` over the tiny indexes of tests/web/conftest.py.

With CLIPSEARCH_SCREENSHOTS=DIR (e.g. `docs`), each tab's screenshot is saved there as web_<tab>.png.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_json
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from web_indexes import CIFAR_INDEX, SHAPES_INDEX

from clipsearch.api import Index
from clipsearch.tasks import outputs
from clipsearch.tasks.metrics import classification_report
from clipsearch.web.app import create_app
from clipsearch.web.service import SearchService
from clipsearch.web.ui import build_ui

WAIT_SECONDS = 30.0
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio's use of pandas
SCREENSHOT_BYTES = 300_000
ZERO_SHOT_LABELS = "red circle, blue square, green triangle"


# -- the browser and the server ------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: `make test` installs them")
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _serve(app: Any, browser: Any) -> Iterator[str]:
    """An ASGI app on a free port, served by uvicorn in a thread."""
    import uvicorn

    port = _free_port()
    # The page keeps its event stream open: shutting down waits for it only briefly.
    server = uvicorn.Server(uvicorn.Config(app, "127.0.0.1", port, log_level="error", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        browser.get("about:blank")  # the page's event stream closes: the server stops at once
        server.should_exit = True
        thread.join(10)


def _serve_index(name: str, root: Path, browser: Any) -> Iterator[str]:
    """The app of `clipsearch serve NAME`: create_app over a SearchService."""
    with _serve(create_app(SearchService(name, root)), browser) as url:
        yield url


@pytest.fixture(scope="module")
def shapes_url(web_root: Path, browser: Any) -> Iterator[str]:
    yield from _serve_index(SHAPES_INDEX, web_root, browser)


@pytest.fixture(scope="module")
def cifar_root(web_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the CIFAR index (the shared one stays as built) with a saved zero-shot evaluation:
    top-1 3/4 on four images, and its confusion matrix plot."""
    root = tmp_path_factory.mktemp("browser") / "indexes"
    shutil.copytree(web_root / CIFAR_INDEX, root / CIFAR_INDEX)
    names = ["cat", "dog", "bird"]
    report = classification_report(np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 0]), names)
    outputs.write_classification(report, names, outputs.zero_shot_dir(Index.open(CIFAR_INDEX, root), "test"), "test")
    return root


@pytest.fixture(scope="module")
def cifar_url(cifar_root: Path, browser: Any) -> Iterator[str]:
    yield from _serve_index(CIFAR_INDEX, cifar_root, browser)


# -- what the page shows -------------------------------------------------------------------
def until(check: Callable[[], Any], what: str, seconds: float = WAIT_SECONDS) -> Any:
    """The first truthy value of `check()` within `seconds`; fails saying what was awaited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element that is being re-rendered
            value = None
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def open_page(driver: Any, url: str) -> None:
    """Open the page and wait until it says the server's model is ready. Tests build their own model only
    after that: two threads creating the seeded random tiny model at once could draw each other's weights."""
    driver.get(url)
    until(lambda: "Model ready" in driver.find_element(By.ID, "model-status").text, "the model to be ready")


def open_tab(driver: Any, label: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{label}']").click()


def text_of(driver: Any, elem_id: str) -> str:
    return driver.find_element(By.ID, elem_id).text


def gallery(driver: Any) -> list[tuple[str, int]]:
    """(id, natural width) of each result thumbnail: the id is the third field of its caption."""
    images = driver.find_elements(By.CSS_SELECTOR, "#results img")
    return [(image.get_attribute("alt").split(" · ")[2], image.get_property("naturalWidth")) for image in images]


def gallery_ids_when(driver: Any, count: int) -> list[str]:
    """The ids of the gallery once it shows `count` loaded thumbnails."""
    shown = until(
        lambda: (items := gallery(driver)) and len(items) == count and all(w for _, w in items) and items,
        f"{count} loaded thumbnails",
    )
    return [image_id for image_id, _ in shown]


def table(driver: Any, elem_id: str) -> list[list[str]]:
    """The visible rows of a Gradio dataframe, as cell texts."""
    cells = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [role=gridcell]")
    rows: dict[int, dict[int, str]] = {}
    for cell in cells:
        rows.setdefault(int(cell.get_attribute("data-row")), {})[int(cell.get_attribute("data-col"))] = cell.text
    return [[row[col] for col in sorted(row)] for _, row in sorted(rows.items())]


def set_text(driver: Any, elem_id: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def upload(driver: Any, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path.resolve()))


def screenshot(driver: Any, tab: str) -> None:
    """docs/web_<tab>.png when CLIPSEARCH_SCREENSHOTS names a folder: the whole page, under 300 KB."""
    folder = os.environ.get("CLIPSEARCH_SCREENSHOTS")
    if not folder:
        return
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    picture = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    buffer = io.BytesIO()
    picture.quantize(256).save(buffer, "PNG", optimize=True)
    if len(buffer.getvalue()) > SCREENSHOT_BYTES:
        picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4))
        buffer = io.BytesIO()
        picture.quantize(256).save(buffer, "PNG", optimize=True)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"web_{tab}.png").write_bytes(buffer.getvalue())


def ids(hits: list[Any]) -> list[str]:
    return [hit.id for hit in hits]


def label_of(folder: Path, wanted: set[str]) -> Path:
    """An image of the shapes folder whose label is one of `wanted` (else the first one)."""
    rows = shape_rows(folder)
    row = next((row for row in rows if row["label"] in wanted), rows[0])
    return folder / row["file"]


def shape_rows(folder: Path) -> list[dict]:
    """The shapes folder's caption records: file, label, captions, split."""
    return [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines() if line.strip()]


# -- the tests -----------------------------------------------------------------------------
def test_a_text_query_shows_the_thumbnails_index_search_finds_in_its_order(
    browser: Any, shapes_url: str, web_root: Path
) -> None:
    open_page(browser, shapes_url)
    expected = ids(Index.open(SHAPES_INDEX, web_root).search("a red circle + 2:square - blue", k=5))
    set_text(browser, "k", "5")
    set_text(browser, "query", "a red circle + 2:square - blue\n")
    assert gallery_ids_when(browser, 5) == expected
    rows = until(lambda: (rows := table(browser, "results-table")) and len(rows) == 5 and rows, "the results table")
    assert [row[2] for row in rows] == expected and [row[0] for row in rows] == ["1", "2", "3", "4", "5"]

    set_text(browser, "where", "no_such_column = 1")  # a bad filter is a message, and the page goes on working
    browser.find_element(By.ID, "search-btn").click()
    until(lambda: "Error:" in text_of(browser, "search-status"), "the filter's error message")
    set_text(browser, "where", "split = 'test'")
    browser.find_element(By.ID, "search-btn").click()
    filtered = ids(
        Index.open(SHAPES_INDEX, web_root).search("a red circle + 2:square - blue", k=5, where="split = 'test'")
    )
    assert until(lambda: (shown := [i for i, w in gallery(browser) if w]) == filtered and shown, "filtered results")


def test_clicking_a_result_shows_it_large_and_more_like_this_searches_by_it(
    browser: Any, shapes_url: str, web_root: Path
) -> None:
    index = Index.open(SHAPES_INDEX, web_root)
    open_page(browser, shapes_url)
    set_text(browser, "k", "5")
    set_text(browser, "query", "a green triangle\n")
    second = gallery_ids_when(browser, 5)[1]
    browser.find_elements(By.CSS_SELECTOR, "#results button.thumbnail-item")[1].click()
    until(lambda: second in text_of(browser, "detail-meta"), "the selected image's metadata")
    meta = text_of(browser, "detail-meta")
    assert all(caption in meta for caption in index.row_of(second)["captions"])
    until(lambda: browser.find_element(By.CSS_SELECTOR, "#detail-image img").get_property("naturalWidth"), "the image")

    browser.find_element(By.ID, "more-like").click()
    until(lambda: "more like" in text_of(browser, "search-status"), "the more-like-this results")
    similar = gallery_ids_when(browser, 5)
    assert similar == ids(index.search(vector=index.vector_of(second), k=5))
    browser.find_element(By.CSS_SELECTOR, "#results-table [data-testid='cell-2-2']").click()  # a table row too
    until(lambda: similar[2] in text_of(browser, "detail-meta"), "the clicked row's metadata")
    screenshot(browser, "search")


def test_an_uploaded_image_shows_its_nearest_neighbours(
    browser: Any, shapes_url: str, web_root: Path, shapes_folder: Path, tmp_path: Path
) -> None:
    picture = label_of(shapes_folder, {"blue square"})
    open_page(browser, shapes_url)
    set_text(browser, "k", "4")
    upload(browser, "query-image", picture)
    shown = gallery_ids_when(browser, 4)
    assert shown == ids(Index.open(SHAPES_INDEX, web_root).search(image=picture, k=4))
    assert shown[0] == picture.relative_to(shapes_folder).as_posix()  # the indexed file itself comes first

    truncated = tmp_path / "truncated.png"  # a PNG header and half its pixels: unreadable, said in the page
    truncated.write_bytes(picture.read_bytes()[: picture.stat().st_size // 2])
    browser.find_element(By.CSS_SELECTOR, "#query-image button[aria-label='Remove Image']").click()
    upload(browser, "query-image", truncated)
    until(lambda: "cannot read the uploaded image" in text_of(browser, "search-status"), "the upload's error message")


def test_zero_shot_shows_the_labels_and_probabilities_of_clipsearch_predict(
    browser: Any, shapes_url: str, web_root: Path, shapes_folder: Path
) -> None:
    picture = label_of(shapes_folder, {"red circle", "blue square", "green triangle"})
    [truth] = [row["label"] for row in shape_rows(shapes_folder) if shapes_folder / row["file"] == picture]
    open_page(browser, shapes_url)
    [predicted] = run_json(
        "predict", picture, "--labels", ZERO_SHOT_LABELS, "--index", SHAPES_INDEX, "-k", "3", "--root", web_root
    )
    open_tab(browser, "Zero-shot")
    set_text(browser, "zs-labels", ZERO_SHOT_LABELS)
    upload(browser, "zs-image", picture)
    rows = until(lambda: (rows := table(browser, "zs-table")) and len(rows) == 3 and rows, "the probability table")
    assert [row[1] for row in rows] == [p["label"] for p in predicted["predictions"]]
    for row, expected in zip(rows, predicted["predictions"]):
        assert float(row[2]) == pytest.approx(expected["probability"], abs=1e-4)
    top = predicted["predictions"][0]["label"]
    assert top == truth  # the index's model was trained on shapes: it knows this one
    assert top in text_of(browser, "zs-status") and top in text_of(browser, "zs-bars")
    screenshot(browser, "zeroshot")


def test_the_index_page_shows_the_counts_of_clipsearch_info(browser: Any, shapes_url: str, web_root: Path) -> None:
    info = run_json("info", SHAPES_INDEX, "--root", web_root)
    open_page(browser, shapes_url)
    open_tab(browser, "Index")
    page = until(
        lambda: (text := text_of(browser, "index-info")) and info["model_id"] in text and text, "the index info"
    )
    for key, value in info["counts"].items():
        assert re.search(rf"\b{key}\s+{value}\b", page), (key, value, page)
    assert f"{info['ann']['factory']} ({info['ann']['kind']})" in page
    assert f"recall@10 against exact search: {info['ann']['recall@10']}" in page
    assert "0 skipped files" in text_of(browser, "index-skipped-count")


def test_a_cifar_index_shows_the_pixels_inside_its_archive(browser: Any, cifar_url: str, cifar_root: Path) -> None:
    open_page(browser, cifar_url)
    expected = ids(Index.open(CIFAR_INDEX, cifar_root).search("a photo of a cat", k=5))
    set_text(browser, "k", "5")
    set_text(browser, "query", "a photo of a cat\n")
    assert gallery_ids_when(browser, 5) == expected


def test_the_index_page_shows_the_saved_evaluations_and_their_plots(browser: Any, cifar_url: str) -> None:
    open_page(browser, cifar_url)
    open_tab(browser, "Index")
    line = until(
        lambda: (text := text_of(browser, "index-evaluations")) and "zeroshot-test" in text and text, "evaluations"
    )
    assert "top1: 0.7500" in line
    plot = until(lambda: browser.find_element(By.CSS_SELECTOR, "#index-plots img"), "the confusion matrix plot")
    assert "zeroshot-test · confusion" in plot.get_attribute("alt")
    until(lambda: plot.get_property("naturalWidth"), "the plot to load")
    screenshot(browser, "index")


class GatedModel:
    """The real service, but its model "loads" until the test opens the gate: not ready, queries wait."""

    def __init__(self, service: SearchService) -> None:
        self.service, self.gate = service, threading.Event()

    @property
    def ready(self) -> bool:
        return self.gate.is_set() and self.service.ready

    @property
    def status(self) -> str:
        return self.service.status if self.gate.is_set() else "loading model tiny (held by the test)"

    def search(self, **request: Any) -> list[dict[str, Any]]:
        self.gate.wait(WAIT_SECONDS)
        return self.service.search(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)


def test_while_the_model_loads_the_page_says_so_and_a_query_waits_for_it(browser: Any, web_root: Path) -> None:
    import gradio as gr
    from fastapi import FastAPI

    service = GatedModel(SearchService(SHAPES_INDEX, web_root))
    with _serve(gr.mount_gradio_app(FastAPI(), build_ui(service), path="/"), browser) as url:
        browser.get(url)
        until(lambda: "Model still loading" in text_of(browser, "model-status"), "the loading banner")
        set_text(browser, "k", "3")
        set_text(browser, "query", "a blue square\n")
        time.sleep(1.0)
        assert gallery(browser) == [] and "results" not in text_of(browser, "search-status")  # it waits
        until(lambda: service.service.ready, "the real model")
        service.gate.set()
        until(lambda: "Model ready" in text_of(browser, "model-status"), "the ready banner")
        expected = ids(Index.open(SHAPES_INDEX, web_root).search("a blue square", k=3))
        assert gallery_ids_when(browser, 3) == expected
