import json
import sys
import types

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.tasks.prompts import TEMPLATE_SETS, resolve_labels, resolve_templates


def test_cifar_templates_are_the_18_of_the_clip_paper():
    templates = TEMPLATE_SETS["cifar"]()

    assert len(templates) == 18 == len(set(templates))
    assert templates[:4] == [
        "a photo of a {}.",
        "a blurry photo of a {}.",
        "a black and white photo of a {}.",
        "a low contrast photo of a {}.",
    ]
    assert templates[-1] == "a photo of the big {}."


def test_imagenet_templates_are_the_80_openai_ones_as_strings():
    templates = TEMPLATE_SETS["imagenet"]()

    assert len(templates) == 80 == len(set(templates))
    assert all(template.count("{}") == 1 for template in templates)
    assert templates[0] == "a bad photo of a {}."
    assert "itap of a {}." in templates


def test_builtin_templates_are_filled_with_each_label():
    prompts = resolve_templates("cifar", ["cat", "lawn mower"])

    assert len(prompts) == 2 and all(len(sentences) == 18 for sentences in prompts)
    assert prompts[0][1] == "a blurry photo of a cat."
    assert prompts[1][-1] == "a photo of the big lawn mower."
    assert resolve_templates("simple", ["dog"]) == [["a photo of a dog."]]


def test_templates_file_one_per_line(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a sketch of a {}.\n\n  {} in {x} braces  \n", encoding="utf-8")

    assert resolve_templates(str(path), ["cat"]) == [["a sketch of a cat.", "cat in {x} braces"]]


def test_templates_file_line_without_placeholder_is_refused(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\na photo of something\n", encoding="utf-8")

    with pytest.raises(ClipsearchError, match="a photo of something"):
        resolve_templates(str(path), ["cat"])


def test_per_class_json_gives_each_class_its_sentences(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"cat": ["a cat.", "a kitten."], "dog": ["a dog."], "unused": ["x"]}), encoding="utf-8")

    assert resolve_templates(str(path), ["dog", "cat"]) == [["a dog."], ["a cat.", "a kitten."]]


def test_per_class_json_missing_class_is_refused(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"cat": ["a cat."]}), encoding="utf-8")

    with pytest.raises(ClipsearchError, match="'dog'"):
        resolve_templates(str(path), ["cat", "dog"])


@pytest.mark.parametrize("content", ["{not json", '["a cat."]', '{"cat": "a cat."}', '{"cat": []}'])
def test_malformed_per_class_json_is_refused(tmp_path, content):
    path = tmp_path / "prompts.json"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ClipsearchError):
        resolve_templates(str(path), ["cat"])


def test_unknown_templates_name_the_choices():
    with pytest.raises(ClipsearchError, match="cifar, imagenet, simple"):
        resolve_templates("cifra", ["cat"])


def test_builtin_label_sets():
    cifar10 = resolve_labels("cifar10")
    cifar100 = resolve_labels("cifar100")

    assert cifar10 == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert len(cifar100) == 100 == len(set(cifar100))
    assert cifar100[1] == "aquarium fish" and cifar100[41] == "lawn mower" and cifar100[-1] == "worm"
    assert not any("_" in name for name in cifar100)


def test_shapes_labels_come_from_the_shapes_source(monkeypatch):
    fake_shapes = types.ModuleType("clipsearch.sources.shapes")
    fake_shapes.class_names = lambda: ["red circle", "blue square"]
    monkeypatch.setitem(sys.modules, "clipsearch.sources.shapes", fake_shapes)

    assert resolve_labels("shapes") == ["red circle", "blue square"]


def test_labels_from_inline_list_and_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("golden retriever\n\n  tabby cat \n", encoding="utf-8")

    assert resolve_labels(" cat, dog ,bird,") == ["cat", "dog", "bird"]
    assert resolve_labels(str(path)) == ["golden retriever", "tabby cat"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("cat,dog,cat", "repeats labels cat"), (",", "no labels"), ("cifar1000", "cifar10, cifar100, shapes")],
)
def test_bad_label_specs_are_refused(spec, message):
    with pytest.raises(ClipsearchError, match=message):
        resolve_labels(spec)


def test_empty_label_file_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n \n", encoding="utf-8")

    with pytest.raises(ClipsearchError, match="no labels"):
        resolve_labels(str(path))
