"""The terminal UI, driven headless through Textual's pilot: every list the user sees is
compared with `Index.search` run directly on the same index."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image
from rich.console import Console

from clipsearch.errors import ClipsearchError
from clipsearch.index.index import Index
from clipsearch.index.store import vectors_of
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
from clipsearch.tui.render import UPPER_HALF_BLOCK, details_table, half_block_strips, hit_details, hit_label
from clipsearch.tui.widgets import HelpScreen

SIZE = (120, 36)
TIMEOUT = 60  # seconds; only reached when something is broken


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


# -- half-block pixels -----------------------------------------------------------------
def test_half_blocks_put_the_top_pixel_in_front_and_the_bottom_pixel_behind() -> None:
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    strips = half_block_strips(Image.fromarray(pixels), width=2, height=1)
    assert len(strips) == 1 and strips[0].text == UPPER_HALF_BLOCK * 2
    cells = [segment for segment in strips[0] for _ in segment.text]
    assert [c.style.color.get_truecolor() for c in cells] == [(255, 0, 0), (0, 255, 0)]
    assert [c.style.bgcolor.get_truecolor() for c in cells] == [(0, 0, 255), (10, 20, 30)]


def test_half_blocks_keep_the_aspect_ratio_and_leave_an_odd_last_row_open() -> None:
    image = Image.new("RGB", (40, 10), (200, 100, 50))
    strips = half_block_strips(image, width=20, height=20)  # 20 columns x 5 pixel rows
    assert [s.cell_length for s in strips] == [20, 20, 20]
    last = list(strips[-1])
    assert all(s.style.bgcolor is None and s.style.color.get_truecolor() == (200, 100, 50) for s in last)
    assert half_block_strips(image, width=0, height=5) == []


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
            drawn = "".join(preview.render_line(y).text for y in range(preview.size.height))
            assert UPPER_HALF_BLOCK in drawn

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


# -- the command ------------------------------------------------------------------------


def test_tui_command_opens_the_index_in_the_app(shapes_index: Index, tmp_path: Path, capsys, monkeypatch) -> None:
    seen = {}

    def run_headless(app: SearchApp) -> None:  # the real app, with Textual's headless driver
        async def drive() -> None:
            async with app.run_test(size=SIZE) as pilot:
                while app.is_running and not app.ready:
                    await pilot.pause(0.02)
                if app.ready:
                    seen.update(name=app.index.name, k=app.k, out=app.export_dir, status=app.status_text())

        run(drive)

    monkeypatch.setattr(SearchApp, "run", run_headless)
    root = shapes_index.store.path.parent
    assert run_cli("tui", "shapes", "--root", root, "-k", "7", "--out", tmp_path) == (0, "", "")
    assert seen["name"] == "shapes" and seen["k"] == 7 and seen["out"] == tmp_path
    assert seen["status"].startswith(f"model {shapes_index.spec.identity()} · 60 images · k=7")

    code, _, err = run_cli("tui", "nope", "--root", root)
    assert code == 1 and err.startswith(f"error: unknown index 'nope' in {root}") and "Traceback" not in err
