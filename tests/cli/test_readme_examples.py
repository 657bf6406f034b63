"""Every `clipsearch ...` example in README.md's fenced bash/console blocks is either run here, in README
order, against generated data with the tiny model, or skipped for a stated reason (real weights, a server,
a cluster, long training). A new, changed or removed example fails `test_every_readme_example_is_accounted_for`
until this file says what to do with it: the README cannot drift from what the commands do."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli
from imagegen import write_distinct_images

README = Path(__file__).resolve().parents[2] / "README.md"
TINY = ["--model", "tiny", "--pretrained", "none"]
WEIGHTS = "needs real pretrained weights from the Hugging Face hub (offline here)"
TRAINING = "trains for minutes (tests/integration/test_train.py runs shapes and train on small data)"
PROBES = "trains probes (tests/integration/test_probes.py runs probe train/eval/apply and eval compare)"
FLICKR = "needs the Flickr files (tests/integration/test_caption_datasets.py builds fake ones)"

# Skipped examples, each with its reason; every entry must still be in the README.
SKIP = {
    "clipsearch index ./imgs --name mine --model tiny-rn --pretrained runs/shapes/best.safetensors": (
        "needs a trained checkpoint (tests/integration/test_train.py indexes with one)"
    ),
    "clipsearch index ~/Pictures --name photos --backend openvino --precision fp32": (
        "exports the model to OpenVINO (slow; tests/unit/test_backends.py covers the exported backends)"
    ),
    'clipsearch search photos "a dog" --backend onnx': "exports the model to ONNX (tests/unit/test_backends.py)",
    "clipsearch import laion --vectors out/ --model ViT-B-32 --pretrained laion2b_s34b_b79k": (
        "needs clip-retrieval output (tests/integration/test_import.py imports generated vectors)"
    ),
    "clipsearch import mine --vectors emb.npy --metadata meta.parquet --model ViT-B-32 [--normalize] [--json]": (
        "needs precomputed vectors (tests/integration/test_import.py)"
    ),
    "clipsearch tui photos [-k 20] [--out ~/exports]": "interactive (tests/integration/test_tui.py drives it)",
    "clipsearch index flickr8k --data-dir ~/data/flickr8k --split test --name f8k": FLICKR,
    "clipsearch index flickr30k --captions dataset_flickr30k.json --data-dir ~/data/flickr30k-images --name f30k": (
        FLICKR
    ),
    "clipsearch search f8k --image dog.jpg --captions": FLICKR,
    "clipsearch eval retrieval f8k --split test --ks 1,5,10 --json": FLICKR,
    "clipsearch index data/shapes --name shapes --model tiny-rn --pretrained runs/shapes/best.safetensors": TRAINING,
    "clipsearch predict cat.jpg --model hf:openai/clip-vit-base-patch32 "
    '--labels "a photo of a cat,a photo of a dog" --templates bare.txt -k 2': WEIGHTS,
    "clipsearch index cifar10 --name c10-hf --split test --model hf:openai/clip-vit-base-patch32": WEIGHTS,
    "clipsearch eval zeroshot c10-hf --labels cifar10 --templates cifar": WEIGHTS,
    "clipsearch index cifar100 --name c100-hf --split test --model hf:openai/clip-vit-base-patch32": WEIGHTS,
    "clipsearch eval zeroshot c100-hf --labels cifar100 --templates cifar": WEIGHTS,
}
# Whole kinds of examples other sections add: a rule and its reason.
SKIP_RULES = (
    (re.compile(r"^clipsearch serve\b"), "starts a web server (tests/web/ serve the app in-process)"),
    (re.compile(r"--engine ray|--ray-address"), "needs a Ray cluster (tests/integration/test_ray.py)"),
    (re.compile(r"--model hf:|--model hf-hub:"), WEIGHTS),
    (re.compile(r"^clipsearch (probe |eval compare )"), PROBES),
    (re.compile(r"^clipsearch (train|shapes) "), TRAINING),
)
# Run as written after the README's placeholders are made (below); an index or predict example that names no
# model gets the tiny one (the default model needs weights). `remove` runs last: the others use the index.
RUN = [
    "clipsearch index ~/Pictures --name photos",
    "clipsearch index ~/Pictures --name photos --exclude '*/thumbs/*' --prune --workers 3 --batch-size 64",
    "clipsearch index ./imgs --name test --model tiny --pretrained none",
    'clipsearch search photos "a dog in the snow" -k 5',
    "clipsearch search photos --image query.jpg --json",
    'clipsearch search photos "a dog" + "2:snow" - grass',
    'clipsearch search photos ~/me.jpg + "0.5:sunglasses" --where "uri LIKE \'%/2024/%\'" --threshold 0.2',
    "clipsearch search photos sunset --paths | xargs -I{} cp {} ~/sunsets/",
    'clipsearch search photos "red car" --grid hits.png',
    "clipsearch search photos text:photo.jpg",
    'clipsearch search ~/Pictures "a dog"',
    'clipsearch search ~/Pictures "a cat" --no-update',
    "clipsearch list",
    "clipsearch info photos [--json] [--skipped]",
    "clipsearch remove photos",
    "clipsearch check photos [--repair] [--json]",
    "clipsearch index cifar10 --name c10 --split test --data-dir ~/data",
    "clipsearch classify photos --labels cat,dog,bird",
    'clipsearch search photos "sleeping" --where "zs_label = \'cat\'"',
    "clipsearch predict lion.jpg --labels cifar100 -k 5",
    "clipsearch eval zeroshot c10 --labels cifar10 --templates cifar,imagenet,simple",
    "clipsearch eval zeroshot c10 --corruption gaussian_noise:3 --json",
    'clipsearch search c10 "a cat" -k 20 --export hits/',
    "clipsearch index cifar10 --name c10all --split all --data-dir ~/data",
    "clipsearch --version",
    "clipsearch -q index ~/Pictures --name photos",
    'clipsearch -v search photos "a dog"',
    "clipsearch search -h",
]


def readme_examples(text: str) -> list[str]:
    """The `clipsearch` command lines of the fenced bash/console blocks, continuation lines joined,
    comments and shell prompts dropped."""
    examples = []
    for block in re.findall(r"^```(?:bash|console|sh|shell)\n(.*?)^```", text, re.M | re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"^\$\s+", "", line.strip())
            if line.startswith("clipsearch "):
                examples.append(re.sub(r"\s+#.*$", "", line).strip())
    return examples


def _skip_reason(example: str) -> str | None:
    return SKIP.get(example) or next((reason for rule, reason in SKIP_RULES if rule.search(example)), None)


def test_every_readme_example_is_accounted_for() -> None:
    examples = readme_examples(README.read_text())
    assert len(examples) > 30
    unknown = [e for e in examples if e not in RUN and _skip_reason(e) is None]
    assert not unknown, f"README examples neither run nor skipped with a reason in {__file__}: {unknown}"
    assert not (set(RUN) | set(SKIP)) - set(examples), "examples listed here that the README no longer has"


def _variants(example: str) -> list[list[str]]:
    """The argv lists an example stands for: `[--x]` optional parts left out, then all given; a pipe's
    first command only (`| xargs ...` is the shell's)."""
    command = example.split(" | ")[0]
    bare = re.sub(r"\s*\[[^\]]*\]", "", command)
    full = re.sub(r"\[([^\]]*)\]", r"\1", command)
    return [shlex.split(v)[1:] for v in dict.fromkeys([bare, full])]


@pytest.fixture
def readme_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with the README's placeholders: ~/Pictures, ./imgs, query.jpg, ~/me.jpg, lion.jpg, ~/data."""
    home = tmp_path / "home"
    write_distinct_images(home / "Pictures", ["2024/a.png", "2024/b.png", "c.png", "x/thumbs/t.png"])
    write_distinct_images(tmp_path / "imgs", ["d.png", "e.png"], first_seed=10)
    write_distinct_images(tmp_path, ["query.jpg", "lion.jpg"], first_seed=20)
    write_distinct_images(home, ["me.jpg"], first_seed=30)
    make_cifar_archive(home / "data", "cifar10", n_train_per_class=1, n_test_per_class=1)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_readme_examples_run(readme_world: Path) -> None:
    examples = readme_examples(README.read_text())
    runnable = [e for e in examples if e in RUN]
    runnable.sort(key=lambda e: e.startswith("clipsearch remove "))  # stable: README order, removals last
    for example in runnable:
        for argv in _variants(example):
            argv = [str(readme_world) + a[1:] if a.startswith("~/") else a for a in argv]
            command = next((a for a in argv if not a.startswith("-")), "")
            if command in ("index", "predict") and "--model" not in argv:
                argv += TINY
            code, _, err = run_cli(*argv)
            assert code == 0, f"{example!r} ({argv}): {err}"
