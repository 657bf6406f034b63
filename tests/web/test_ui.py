"""The web page's plain functions, without a browser: the loading banner, the parsing of what a person
types, and the words and numbers the tabs render from the service's answers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.web.ui import model_banner
from clipsearch.web.ui_common import enlarged, error_line, hit_caption, hit_rows
from clipsearch.web.ui_index import ann_line, evaluations_view
from clipsearch.web.ui_search import detail_markdown, parse_threshold
from clipsearch.web.ui_zeroshot import chosen_labels, probability_rows, top_k


@dataclass
class FakeService:
    ready: bool
    status: str


def test_the_banner_says_while_the_model_loads_and_when_it_failed() -> None:
    assert model_banner(FakeService(False, "loading model tiny@random-seed0 … (3 s)")) == (
        False,
        "**Model still loading** (loading model tiny@random-seed0 … (3 s)): queries wait until it is ready.",
    )
    assert model_banner(FakeService(True, "ready")) == (True, "**Model ready.**")
    settled, line = model_banner(FakeService(False, "OSError: no weights"))
    assert settled and line == "**Error:** the model could not be loaded: OSError: no weights"


def test_typed_fields_are_parsed_or_refused_with_one_line() -> None:
    assert parse_threshold("") is None and parse_threshold(" 0.25 ") == 0.25 and parse_threshold("-0.1") == -0.1
    with pytest.raises(ClipsearchError, match="threshold must be a number"):
        parse_threshold("high")
    assert top_k(5, "red circle, blue square, green triangle") == 3 and top_k(2, "a,b,c") == 2
    assert top_k(5, "cifar10") == 5 and top_k(None, "") == 5
    assert chosen_labels(" a, b ", "cifar10") == "a, b" and chosen_labels("", "cifar10") == "cifar10"
    with pytest.raises(ClipsearchError, match="type labels"):
        chosen_labels("  ", "(the labels typed above)")
    assert error_line(ValueError("bad\nsecond line")) == "ValueError: bad" and error_line(ClipsearchError("x")) == "x"


def test_hits_become_captions_and_table_rows_with_their_label() -> None:
    hits = [
        {"rank": 1, "score": 0.87654, "id": "sub/a.png", "label_name": None, "zs_label": "cat"},
        {"rank": 2, "score": 0.5, "id": "b.png", "label_name": "dog", "zs_label": "cat"},
        {"rank": 3, "score": 0.25, "id": "c.png"},
    ]
    assert [hit_caption(hit) for hit in hits] == [
        "#1 · 0.877 · sub/a.png · cat",
        "#2 · 0.500 · b.png · dog",
        "#3 · 0.250 · c.png",
    ]
    assert hit_rows(hits) == [
        [1, "0.8765", "sub/a.png", "cat"],
        [2, "0.5000", "b.png", "dog"],
        [3, "0.2500", "c.png", ""],
    ]
    assert probability_rows([{"label": "cat", "probability": 0.123456789}]) == [[1, "cat", "0.123457"]]


def test_the_index_tab_words_the_ann_index_and_the_saved_evaluations() -> None:
    ann = {"factory": "IVF100,Flat", "kind": "ivf", "n": 12000, "recall@10": 0.97, "nprobe": 8}
    assert (
        ann_line(ann) == "**ANN** IVF100,Flat (ivf) · 12000 vectors · recall@10 against exact search: 0.97 · nprobe 8"
    )
    entries = [
        {
            "name": "retrieval-test",
            "updated": 0.0,
            "results": {"text_to_image": {"R@1": 0.5}, "n_images": 6},
            "plots": {"curve": "/x/recall_at_k.png"},
        },
        {"name": "zeroshot-test", "updated": 0.0, "results": {"top1": 0.75, "n": 4}, "plots": {}},
    ]
    markdown, plots = evaluations_view(entries)
    assert "**retrieval-test**" in markdown and "text to image: R@1 0.500" in markdown
    assert "top1: 0.7500 · n: 4" in markdown and plots == [("/x/recall_at_k.png", "retrieval-test · curve")]
    assert evaluations_view([])[1] == []


def test_a_small_image_is_enlarged_by_a_whole_factor_for_the_large_view() -> None:
    assert enlarged(Image.new("RGB", (32, 24))).size == (384, 288)
    assert enlarged(Image.new("RGB", (500, 300))).size == (500, 300)


def test_the_large_view_lists_a_rows_metadata_and_captions() -> None:
    row = {
        "id": "a|b.png",
        "key": 3,
        "uri": "/x/a|b.png",
        "label_name": None,
        "mtime": 0.0,
        "deleted": False,
        "captions": ["a red circle", "a round red thing"],
    }
    lines = detail_markdown(row).splitlines()
    assert (
        lines[0] == "### a|b.png"
        and "| uri | /x/a/b.png |" in lines
        and "| mtime | 1970-01-01 00:00:00+00:00 |" in lines
    )
    assert lines[-2:] == ["- a red circle", "- a round red thing"] and not any(
        "key" in line or "deleted" in line for line in lines
    )
