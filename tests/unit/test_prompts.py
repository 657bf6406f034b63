"""Label sets and prompt templates: the shipped data files hold the published lists; specs resolve to prompts."""

import json

import pytest
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from clipsearch.errors import ClipsearchError
from clipsearch.sources.shapes import class_names as shapes_class_names
from clipsearch.tasks import prompts
from clipsearch.tasks.prompts import resolve_labels, resolve_templates, template_set

# The 18 CIFAR-10/100 templates of the CLIP paper (openai/CLIP, data/prompts.md), in its order.
CLIP_PAPER_CIFAR_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
]
# batches.meta / meta of the official python archives (label_names, fine_label_names).
OFFICIAL_CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OFFICIAL_CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip


def test_cifar_templates_are_the_18_of_the_clip_paper():
    assert template_set("cifar") == CLIP_PAPER_CIFAR_TEMPLATES


def test_imagenet_templates_are_open_clips_80_openai_ones():
    templates = template_set("imagenet")

    assert templates == [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert len(templates) == 80 == len(set(templates))
    assert all(template.count("{}") == 1 for template in templates)


def test_builtin_sets_are_the_shipped_json_files():
    for kind, names in (("labels", ("cifar10", "cifar100")), ("templates", prompts.TEMPLATE_SETS)):
        for name in names:
            shipped = json.loads((prompts.DATA_DIR / kind / f"{name}.json").read_text(encoding="utf-8"))
            assert shipped == (resolve_labels(name) if kind == "labels" else template_set(name))
    assert template_set("simple") == ["a photo of a {}."]
    assert all("{}" in template for template in template_set("shapes"))


def test_a_returned_set_is_a_copy():
    template_set("cifar").append("a drawing of a {}.")
    resolve_labels("cifar10").clear()

    assert len(template_set("cifar")) == 18 and len(resolve_labels("cifar10")) == 10


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


def test_builtin_label_sets_are_the_official_names():
    cifar100 = resolve_labels("cifar100")

    assert resolve_labels("cifar10") == OFFICIAL_CIFAR10
    assert sorted(OFFICIAL_CIFAR100_FINE) == OFFICIAL_CIFAR100_FINE and len(set(OFFICIAL_CIFAR100_FINE)) == 100
    assert cifar100 == [name.replace("_", " ") for name in OFFICIAL_CIFAR100_FINE]  # as CLIP and CLIP_benchmark
    assert cifar100[1] == "aquarium fish" and cifar100[41] == "lawn mower"


def test_shapes_labels_are_the_generated_shapes_classes():
    assert resolve_labels("shapes") == shapes_class_names()


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
