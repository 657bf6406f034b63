"""The terminal UI, driven headless through Textual's pilot: every list the user sees is
compared with `Index.search` run directly on the same index."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_runner import run_cli
from PIL import Image
from rich.console import Console

from clipsearch.errors import ClipsearchError
from clipsearch.index.index import Index
from clipsearch.index.schema import vectors_of
from clipsearch.sources.images import open_uri
from clipsearch.sources.shapes import generate_shapes
from clipsearch.tui.actions import (
    Query,
    clean_query_text,
    describe_error,
    export_results,
    run_query,
    viewer_command,
    warm_model,
)
from clipsearch.tui.app import SearchApp
from clipsearch.tui.render import details_table, hit_details, hit_label
from clipsearch.tui.widgets import HelpScreen, PreviewImage

SIZE = (120, 36)
UPPER_HALF_BLOCK = "\u2580"  # how textual-image draws two pixels a cell where there are no graphics
TIMEOUT = 60  # seconds; only reached when something is broken
LOADING_SECONDS = 5  # a model load that a quit must not wait for
QUIT_SECONDS = 1.5  # generous for 2 shared cores; about 0.1 s on an idle machine


@pytest.fixture(scope="module")
def shapes_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Index:
    """60 captioned shapes indexed with the tiny random model."""
    base = tmp_path_factory.mktemp("tui")
    generate_shapes(base / "shapes", n=60, size=32, seed=0)
    index = Index.create("shapes", base / "indexes", encoder=tiny_encoder)
    index.add_folder(base / "shapes", workers=0, progress=False)
    return index


def run(scenario) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


async def settle(app: SearchApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """Until no worker runs (a worker may start another) and the UI has caught up."""
    await pilot.pause()
    while list(app.workers):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def ready(app: SearchApp, pilot) -> None:  # type: ignore[no-untyped-def]
    while not app.ready:
        await pilot.pause(0.02)
    await settle(app, pilot)


async def type_into(pilot, selector: str, text: str, submit: bool = True, paste: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Click a box, then type `text` key by key (or paste it, as a dropped file's path
    arrives) in place of what it held, and press enter."""
    await pilot.click(selector)
    box = pilot.app.query_one(selector)
    box.value = text if paste else ""
    if not paste:
        await pilot.press(*text)
    if submit:
        await pilot.press("enter")


def listed_ids(app: SearchApp) -> list[str]:
    """The 'path / id' column of the results list, top to bottom."""
    table = app.query_one("#results")
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


def message(app: SearchApp) -> tuple[str, bool]:
    line = app.query_one("#message")
    return str(line.content), line.has_class("error")


def shown_text(renderable) -> str:  # type: ignore[no-untyped-def]
    """A widget's content as the user reads it, wide enough that nothing wraps."""
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.id for h in hits]


def test_labels_and_details_show_every_annotation_that_is_set(shapes_index: Index) -> None:
    [hit] = shapes_index.search("a star", k=1)
    assert hit_label(hit.row) == hit.row["label_name"]
    hit.row.update(zs_label="red star", zs_score=0.875, zs_labelset="shapes", probe_label="red cross", probe_score=None)
    assert hit_label(hit.row) == f"{hit.row['label_name']} · zs: red star · probe: red cross"
    fields = hit_details(hit)
    assert ("zero-shot", "red star (0.875, shapes)") in fields and ("probe", "red cross") in fields
    assert ("size", f"{hit.row['size']:,} bytes") in fields and ("path", hit.uri) in fields


# -- the actions, without a terminal ---------------------------------------------------
def test_run_query_answers_what_index_search_answers(shapes_index: Index) -> None:
    hits, seconds = run_query(shapes_index, Query(text="a red circle", where="split = 'test'", k=4))
    assert ids(hits) == ids(shapes_index.search("a red circle", k=4, where="split = 'test'")) and seconds > 0

    row = shapes_index.rows("split = 'val'", ["id", "vector"]).slice(0, 1)
    image_id, stored = row.column("id")[0].as_py(), vectors_of(row)[0]
    like, _ = run_query(shapes_index, Query(like=image_id, k=5))
    assert ids(like) == ids(shapes_index.search(vector=stored, k=5)) and like[0].id == image_id
    with pytest.raises(ClipsearchError):
        run_query(shapes_index, Query(like="no/such/image.png", k=5))


def test_query_text_is_trimmed_and_a_pasted_quoted_path_unwrapped(tmp_path: Path) -> None:
    picture = tmp_path / "my photo.png"
    Image.new("RGB", (4, 4)).save(picture)
    assert clean_query_text(f"  '{picture}' ") == str(picture)
    assert clean_query_text(f'"{picture}"') == str(picture)
    assert clean_query_text("'a dog'") == "'a dog'"  # quotes of a text query are the user's
    assert clean_query_text("  a dog \n") == "a dog"


def test_errors_are_one_line_and_name_their_kind_unless_they_are_the_users() -> None:
    assert describe_error(ClipsearchError("unknown index 'x'")) == "unknown index 'x'"
    assert describe_error(ValueError("bad value\ntraceback-ish detail")) == "ValueError: bad value"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_details_table_and_an_empty_export(shapes_index: Index, tmp_path: Path) -> None:
    [hit] = shapes_index.search("a cross", k=1)
    shown = shown_text(details_table(hit_details(hit)))
    assert all(name in shown and value in shown for name, value in hit_details(hit))
    with pytest.raises(ClipsearchError, match="no results to export"):
        export_results([], tmp_path / "x.json", "nothing")
    assert not (tmp_path / "x.json").exists()
    written = export_results([hit], tmp_path / "one.json", "one")
    assert json.loads(written.read_text()) == json.loads(json.dumps([hit.to_dict()]))


# -- the acceptance checks --------------------------------------------------------------
def test_query_preview_and_more_like_this_match_index_search(shapes_index: Index) -> None:
    loads: list[Index] = []

    def counting_load(index: Index) -> None:
        loads.append(index)
        warm_model(index)

    query = "a red circle + 2:square - blue"
    expected = shapes_index.search(query, k=8)

    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, k=8, load_model=counting_load)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await type_into(pilot, "#query", query)
            await settle(app, pilot)
            assert listed_ids(app) == ids(expected)
            table = app.query_one("#results")
            assert [str(table.get_row_at(i)[1]) for i in range(table.row_count)] == [f"{h.score:.4f}" for h in expected]
            assert "last query" in app.status_text() and "8 results" in message(app)[0]

            await pilot.press("down", "down")  # the third hit
            await settle(app, pilot)
            third = expected[2]
            assert app.selected.id == third.id
            details = shown_text(app.query_one("#details").content)
            assert third.uri in details and f"{third.row['width']} x {third.row['height']} px" in details
            assert third.row["captions"][0] in details
            preview = app.query_one("#preview")
            assert preview.image.size == open_uri(third.uri).size
            picture = preview.query_one(PreviewImage)  # textual-image's widget; half blocks without a terminal
            assert picture.image is preview.image and picture.display and picture.size.area > 0
            assert UPPER_HALF_BLOCK in shown_text(picture.render())

            await pilot.press("m")  # more like this
            await settle(app, pilot)
            stored = vectors_of(shapes_index.rows(f"id = '{third.id}'", ["vector"]))[0]
            like = shapes_index.search(vector=stored, k=8)
            assert listed_ids(app) == ids(like) and like[0].id == third.id
            assert app.shown_query == Query(like=third.id, k=8)
            assert len(loads) == 1  # the model loaded once for all queries

    run(scenario)


def test_a_bad_filter_is_shown_and_the_app_stays_usable(shapes_index: Index, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, k=5)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await type_into(pilot, "#where", "no_such_column = 3", submit=False, paste=True)
            await type_into(pilot, "#query", "a green star")
            await settle(app, pilot)
            text, is_error = message(app)
            assert is_error and text.startswith("invalid filter") and listed_ids(app) == []

            await type_into(pilot, "#where", "split = 'test'", paste=True)  # enter in the filter box runs the query too
            await settle(app, pilot)
            expected = shapes_index.search("a green star", k=5, where="split = 'test'")
            assert listed_ids(app) == ids(expected) and not message(app)[1]

            await pilot.press("plus")  # k+ re-runs the last query
            await settle(app, pilot)
            assert app.k == 6 and listed_ids(app) == ids(
                shapes_index.search("a green star", k=6, where="split = 'test'")
            )

            picture = shapes_index.rows("split = 'val'", ["uri"]).column("uri")[0].as_py()
            await type_into(pilot, "#where", "", submit=False, paste=True)
            await type_into(pilot, "#query", picture, paste=True)  # an image query by path
            await settle(app, pilot)
            assert listed_ids(app) == ids(shapes_index.search(image=picture, k=6))

            await type_into(pilot, "#query", str(tmp_path / "missing.jpg"), paste=True)
            await settle(app, pilot)
            assert message(app) == (f"query image not found: {tmp_path / 'missing.jpg'}", True)
            assert app.is_running

    run(scenario)


def test_a_query_typed_while_the_model_loads_is_answered_when_it_is_ready(shapes_index: Index) -> None:
    loading = threading.Event()

    def slow_load(index: Index) -> None:
        loading.wait(TIMEOUT)
        warm_model(index)

    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, k=4, load_model=slow_load)
        async with app.run_test(size=SIZE) as pilot:
            try:
                while app.index is None:
                    await pilot.pause(0.02)
                await type_into(pilot, "#query", "a yellow cross")
                await pilot.pause(0.2)
                assert not app.ready and app.pending == Query(text="a yellow cross", k=4)
                assert listed_ids(app) == [] and "1 query queued" in app.status_text()
            finally:
                loading.set()
            await ready(app, pilot)
            assert app.pending is None
            assert listed_ids(app) == ids(shapes_index.search("a yellow cross", k=4))

    run(scenario)


# -- actions ----------------------------------------------------------------------------
def test_copy_open_and_export_act_on_the_selected_hit(
    shapes_index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer_bin = tmp_path / "bin"
    viewer_bin.mkdir()
    opened = tmp_path / "opened.txt"
    viewer = viewer_bin / viewer_command()
    viewer.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    viewer.chmod(0o755)
    exports = tmp_path / "exports"
    exports.mkdir()
    expected = shapes_index.search("a purple square", k=5)

    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, k=5, export_dir=exports)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await pilot.click("#results")
            await pilot.press("o")
            assert message(app) == ("select a result first", True)
            await type_into(pilot, "#query", "a purple square", paste=True)
            await settle(app, pilot)
            await pilot.press("down")
            await settle(app, pilot)
            hit = expected[1]

            await pilot.press("c")
            assert app.clipboard == hit.uri

            monkeypatch.setenv("PATH", str(viewer_bin))
            await pilot.press("o")
            await settle(app, pilot)
            for _ in range(200):  # the viewer runs detached
                if opened.is_file() and opened.read_text():
                    break
                await asyncio.sleep(0.02)
            assert opened.read_text().strip() == hit.uri

            monkeypatch.setenv("PATH", str(tmp_path / "empty"))
            await pilot.press("o")
            await settle(app, pilot)
            text, is_error = message(app)
            assert is_error and "no system image viewer" in text and app.is_running

            await pilot.press("j")
            await settle(app, pilot)
            await pilot.click("#png")  # the same export, by mouse
            await settle(app, pilot)

        [json_file] = exports.glob("*.json")
        assert json.loads(json_file.read_text()) == json.loads(json.dumps([h.to_dict() for h in expected]))
        [png_file] = exports.glob("*.png")
        with Image.open(png_file) as sheet:
            assert sheet.format == "PNG" and sheet.width > 5 * 32

    run(scenario)


def test_history_and_help(shapes_index: Index) -> None:
    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, k=3)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            for text in ("red", "blue"):
                await type_into(pilot, "#query", text, paste=True)
                await settle(app, pilot)
            await pilot.press("slash")
            box = app.query_one("#query")
            box.value = "draft"
            values = []
            for key in ("up", "up", "up", "down", "down"):
                await pilot.press(key)
                values.append(box.value)
            assert values == ["blue", "red", "red", "blue", "draft"]

            await pilot.press("escape", "question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = str(app.screen.query_one("#help").content)
            assert "more like this" in help_text.lower() and "history" in help_text
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    run(scenario)


def test_an_index_that_cannot_be_opened_ends_the_app_with_its_message() -> None:
    def unknown() -> Index:
        raise ClipsearchError("unknown index 'nope'")

    async def scenario() -> None:
        app = SearchApp(unknown)
        async with app.run_test(size=SIZE) as pilot:
            while app.is_running and app.startup_error is None:
                await pilot.pause(0.02)
        assert app.startup_error == "unknown index 'nope'" and app.return_code == 1

    run(scenario)


# -- keys and quitting ----------------------------------------------------------------
def test_escape_leaves_any_text_box_for_the_results_so_that_q_quits(shapes_index: Index) -> None:
    """Escape means "done typing": from the query box or the filter box (or the list itself) focus is on
    the results, where letter keys are commands, so `escape q` quits and types nothing."""

    async def scenario(start: str) -> None:
        app = SearchApp(lambda: shapes_index, k=3)
        async with app.run_test(size=SIZE) as pilot:
            await type_into(pilot, "#query", "a red", submit=False, paste=True)
            await pilot.click(start)
            await pilot.press("escape")
            results = app.query_one("#results")
            assert app.focused is results
            await pilot.press("escape")  # in the list already: it stays there
            assert app.focused is results and app.query_one("#query").value == "a red"
            await pilot.press("slash")  # back to typing
            assert app.focused is app.query_one("#query")
            await pilot.press("escape", "q")
            for _ in range(100):
                if not app.is_running:
                    break
                await asyncio.sleep(0.02)
            assert not app.is_running and app.return_code == 0

    for start in ("#query", "#where", "#results"):
        run(lambda start=start: scenario(start))


def test_quitting_does_not_wait_for_the_model_still_loading(shapes_index: Index) -> None:
    release = threading.Event()
    pressed: list[float] = []

    def slow_load(index: Index) -> None:
        release.wait(LOADING_SECONDS)

    async def scenario() -> None:
        app = SearchApp(lambda: shapes_index, load_model=slow_load)
        async with app.run_test(size=SIZE) as pilot:
            while app.index is None:
                await pilot.pause(0.02)
            await pilot.press("escape")
            pressed.append(time.perf_counter())
            await pilot.press("q")

    try:
        run(scenario)  # asyncio.run returns once the app's threads are done (Textual's workers are joined)
        seconds = time.perf_counter() - pressed[0]
    finally:
        release.set()
    print(f"quit while the model loads: {seconds:.3f} s")
    assert seconds < QUIT_SECONDS


# -- the command ------------------------------------------------------------------------
class Terminal(io.StringIO):
    """Captured output that says it is a terminal, as the user's is."""

    def isatty(self) -> bool:
        return True


def run_tui(monkeypatch: pytest.MonkeyPatch, *args: object, terminal: bool = True) -> tuple[int, str, str]:
    """`clipsearch tui ARGS` in this process, on a terminal or not; the app runs headless, and the
    command's exit at the end (os._exit, which would end the tests too) becomes a SystemExit."""

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "stdin", Terminal() if terminal else io.StringIO())
    return run_cli(*args, stdout=Terminal() if terminal else io.StringIO())


@pytest.fixture
def headless_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """SearchApp.run drives the real app with Textual's headless driver until the model is ready, and
    notes what it showed; one entry per app the command started."""
    runs: list[dict] = []

    def run_headless(app: SearchApp) -> None:
        seen: dict = {}
        runs.append(seen)

        async def drive() -> None:
            async with app.run_test(size=SIZE) as pilot:
                while app.is_running and not app.ready:
                    await pilot.pause(0.02)
                if app.ready:
                    seen.update(name=app.index.name, k=app.k, out=app.export_dir, status=app.status_text())

        run(drive)

    monkeypatch.setattr(SearchApp, "run", run_headless)
    return runs


def test_tui_command_opens_the_index_in_the_app(
    shapes_index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, headless_runs: list[dict]
) -> None:
    root = shapes_index.store.path.parent
    assert run_tui(monkeypatch, "tui", "shapes", "--root", root, "-k", "7", "--out", tmp_path) == (0, "", "")
    [seen] = headless_runs
    assert seen["name"] == "shapes" and seen["k"] == 7 and seen["out"] == tmp_path
    identity = shapes_index.spec.identity()
    assert seen["status"].startswith(f"model {identity} · random weights: results mean nothing · 60 images · k=7")


def test_an_unknown_index_or_no_terminal_is_one_line_and_nothing_is_drawn(
    shapes_index: Index, monkeypatch: pytest.MonkeyPatch, headless_runs: list[dict]
) -> None:
    root = shapes_index.store.path.parent
    code, out, err = run_tui(monkeypatch, "tui", "nope", "--root", root)
    assert code == 1 and out == "" and err.startswith(f"error: unknown index 'nope' in {root}")
    assert len(err.splitlines()) == 1 and "\x1b" not in err and headless_runs == []

    code, out, err = run_tui(monkeypatch, "tui", "shapes", "--root", root, terminal=False)  # piped
    assert code == 1 and out == "" and err.startswith("error: clipsearch tui needs a terminal")
    assert len(err.splitlines()) == 1 and "\x1b" not in err and headless_runs == []
