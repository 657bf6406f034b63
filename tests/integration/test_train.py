"""The trainer (acceptance checks 1 and 4): the shapes captions reach the index, a short CPU run
learns (validation recall@5 well above the untrained model's), --resume continues exactly, gradient
accumulation equals one big batch, checkpoints index and search through the CLI (tiny-rn and mini),
and Flickr8k / CIFAR data become training examples."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from caption_fixture import table_rows, write_flickr8k
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli
from rich.console import Console

from clipsearch.errors import ClipsearchError
from clipsearch.index.index import Index
from clipsearch.index.store import CAPTIONS
from clipsearch.model.checkpoints import load_state_dict
from clipsearch.model.encoder import Encoder
from clipsearch.model.spec import ModelSpec
from clipsearch.sources.shapes import class_names, generate_shapes
from clipsearch.tasks.retrieval import evaluate_retrieval
from clipsearch.tasks.zeroshot_eval import evaluate_zero_shot
from clipsearch.training.config import TrainConfig
from clipsearch.training.data import load_training_data
from clipsearch.training.loop import derived_seed, train
from clipsearch.training.optim import build_trainable, contrastive_backward, is_decay_exempt, make_optimizer
from clipsearch.training.validate import chance_levels

# 320 train / 40 val / 40 test images of 32 px: a few seconds per epoch with the tiny model.
N_IMAGES = 400
SIZE = 32
ARCH = "tiny-rn"  # the small CNN CLIP the demo trains
FAST = dict(arch=ARCH, batch_size=32, lr=5e-3, workers=0)
SHORT_EPOCHS = 6  # 60 optimizer steps: recall@5 goes from chance to several times chance


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    generate_shapes(folder, n=N_IMAGES, size=SIZE, seed=7)
    return folder


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 train / 16 val / 16 test images: enough for runs whose numbers only need to repeat."""
    folder = tmp_path_factory.mktemp("small")
    generate_shapes(folder, n=160, size=SIZE, seed=8)
    return folder


@pytest.fixture(scope="module")
def trained(shapes: Path, tmp_path_factory: pytest.TempPathFactory):
    """One short run shared by the tests that need a trained model."""
    out = tmp_path_factory.mktemp("runs") / "short"
    result = train(TrainConfig(data=str(shapes), out=str(out), epochs=SHORT_EPOCHS, **FAST), progress=False)
    return out, result


def _records(folder: Path) -> dict[str, dict]:
    lines = (folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["file"]: record for record in map(json.loads, lines)}


def test_captions_sidecar_reaches_the_index(shapes: Path, tmp_path: Path, tiny_encoder) -> None:
    index = Index.create("shapes", tmp_path, encoder=tiny_encoder)
    index.add_folder(shapes, workers=0, progress=False)
    records = _records(shapes)
    rows = index.rows(columns=["id", "captions", "label_name", "split"]).to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(records)
    for row in rows:
        record = records[row["id"]]
        assert (row["captions"], row["label_name"], row["split"]) == (
            record["captions"],
            record["label"],
            record["split"],
        )

    table = index.store.scan(CAPTIONS, ["image_id", "caption_index", "caption", "vector"]).to_pylist()
    assert len(table) == sum(len(r["captions"]) for r in records.values())
    for row in table[:50]:
        assert records[row["image_id"]]["captions"][row["caption_index"]] == row["caption"]
    sample = table[:50]
    expected = tiny_encoder.encode_texts([row["caption"] for row in sample])
    np.testing.assert_allclose(np.array([row["vector"] for row in sample]), expected, atol=1e-5)


def test_training_data_uses_the_dataset_splits_and_holdout(shapes: Path) -> None:
    data = load_training_data(str(shapes))
    records = _records(shapes)
    assert len(data.train) == sum(r["split"] == "train" for r in records.values())
    assert len(data.val) == sum(r["split"] == "val" for r in records.values())
    assert data.class_names == class_names()
    held = {"red star", "green cross", "blue triangle", "yellow square", "purple circle"}
    assert data.heldout == held
    assert not held & {example.label for example in data.train}


def test_folder_without_splits_gets_a_stable_90_10_split(tmp_path: Path, shapes: Path) -> None:
    records = list(_records(shapes).values())[:50]
    folder = tmp_path / "plain"
    folder.mkdir()
    for record in records:
        name = record["file"].replace("/", "_")
        (folder / name).write_bytes((shapes / record["file"]).read_bytes())
    lines = [json.dumps({"file": r["file"].replace("/", "_"), "captions": r["captions"]}) for r in records]
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = load_training_data(str(folder))
    assert (len(first.train), len(first.val)) == (45, 5)
    (folder / "captions.jsonl").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    again = load_training_data(str(folder))
    assert {e.uri for e in again.val} == {e.uri for e in first.val}


def test_short_run_beats_the_untrained_model(trained) -> None:
    out, result = trained
    untrained, final = result.history[0], result.history[-1]
    assert untrained["epoch"] == 0 and final["epoch"] == SHORT_EPOCHS
    for direction in ("t2i", "i2t"):
        before, after = untrained[f"val_{direction}_R@5"], final[f"val_{direction}_R@5"]
        assert after >= 2 * before and after >= before + 0.2, (direction, before, after)
    assert result.chance["t2i_R@5"] == pytest.approx(5 / 40)
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "metrics.jsonl",
        "curves.png",
        "best.safetensors",
        "last.safetensors",
        "last.state.pt",
    }
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "lr", "samples_per_s"} <= set(r) for r in rows if "loss" in r)
    config = json.loads((out / "config.json").read_text())
    assert config["epochs_done"] == SHORT_EPOCHS and config["train"]["arch"] == ARCH
    assert config["best"]["epoch"] == result.best_epoch


def test_validation_numbers_match_an_index_of_the_checkpoint(trained, shapes: Path, tmp_path: Path) -> None:
    """The trainer's validation and `eval retrieval` / `eval zeroshot` agree on the val split."""
    out, result = trained
    index = Index.create("val", tmp_path, model=ARCH, pretrained=str(out / "best.safetensors"))
    index.add_folder(shapes, exclude=["train", "test"], workers=0, progress=False)
    retrieval = evaluate_retrieval(index, "val")
    zero_shot, _ = evaluate_zero_shot(index, "shapes", split="val")
    best = result.best_metrics
    for k in (1, 5, 10):
        assert retrieval["text_to_image"][f"R@{k}"] == pytest.approx(best[f"t2i_R@{k}"], abs=1e-9)
        assert retrieval["image_to_text"][f"R@{k}"] == pytest.approx(best[f"i2t_R@{k}"], abs=1e-9)
    assert zero_shot["seen"]["top1"] == pytest.approx(best["zs_seen_top1"])
    assert zero_shot["held_out"]["top1"] == pytest.approx(best["zs_heldout_top1"])


def test_checkpoint_indexes_and_searches_through_the_cli(trained, shapes: Path, tmp_path: Path) -> None:
    out, _ = trained
    checkpoint = out / "best.safetensors"
    root = tmp_path / "idx"
    code, _, err = run_cli(
        "index",
        shapes,
        "--name",
        "s",
        "--model",
        ARCH,
        "--pretrained",
        checkpoint,
        "--workers",
        "0",
        "--root",
        root,
        "--json",
    )
    assert code == 0, err
    code, stdout, err = run_cli("search", "s", "a red circle", "-k", "5", "--json", "--root", root)
    assert code == 0, err
    hits = json.loads(stdout)
    assert len(hits) == 5 and all("red" in hit["label_name"] for hit in hits[:3])


def test_resume_continues_exactly(small_shapes: Path, tmp_path: Path) -> None:
    config = dict(data=str(small_shapes), epochs=2, **FAST)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **config), progress=False)
    train(TrainConfig(out=str(tmp_path / "split"), **config), progress=False, stop_after=1)
    with pytest.raises(ClipsearchError, match="already holds a training run"):
        train(TrainConfig(out=str(tmp_path / "split"), **config), progress=False)
    with pytest.raises(ClipsearchError, match="lr"):
        train(TrainConfig(out=str(tmp_path / "split"), **{**config, "lr": 1e-4}), resume=True, progress=False)
    resumed = train(TrainConfig(out=str(tmp_path / "split"), **config), resume=True, progress=False)

    a = load_state_dict(tmp_path / "whole" / "last.safetensors")
    b = load_state_dict(tmp_path / "split" / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert resumed.last_metrics == pytest.approx(whole.last_metrics)

    def rows(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        timings = ("samples_per_s", "epoch_seconds")
        return [{k: v for k, v in json.loads(line).items() if k not in timings} for line in lines]

    split_rows, whole_rows = rows("split"), rows("whole")
    assert len(split_rows) == len(whole_rows)
    for resumed_row, whole_row in zip(split_rows, whole_rows):
        assert resumed_row == pytest.approx(whole_row, rel=1e-5)


def _batch(n: int, seed: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    texts = torch.randint(1, 49000, (n, context), generator=generator)
    texts[:, -1] = 49407  # end-of-text token, where the text tower pools
    return images, texts


def test_accumulation_equals_one_big_batch() -> None:
    """Batch 32 x 2 accumulation steps: the loss and every gradient of batch 64.

    On `tiny` (a ViT: no batch statistics). BatchNorm towers such as tiny-rn's
    normalise each micro-batch by its own statistics in training mode (in
    open_clip too), so for them the identity holds only approximately.
    """
    spec = ModelSpec.resolve("tiny", "none")
    images, texts = _batch(64, seed=3, context=32)
    results = []
    for micro in (64, 32):
        model, _, _ = build_trainable(spec, seed=0, device=torch.device("cpu"))
        model.zero_grad()
        parts = [(images[i : i + micro], texts[i : i + micro]) for i in range(0, 64, micro)]
        loss = contrastive_backward(model, open_clip.ClipLoss(), parts)
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (big_loss, big_grads), (acc_loss, acc_grads) = results
    assert acc_loss == pytest.approx(big_loss, rel=1e-5)
    assert big_grads.keys() == acc_grads.keys() and "logit_scale" in big_grads
    for name, grad in big_grads.items():
        torch.testing.assert_close(acc_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_no_weight_decay_on_gains_biases_and_logit_scale() -> None:
    model, _, _ = build_trainable(ModelSpec.resolve(ARCH, "none"), seed=0, device=torch.device("cpu"))
    optimizer = make_optimizer(model, lr=1e-3, wd=0.2)
    decay = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    for name, param in model.named_parameters():
        exempt = param.ndim < 2 or "logit_scale" in name or name.endswith("bias") or ".ln" in name or "bn" in name
        assert (id(param) not in decay) == exempt == is_decay_exempt(name, param), name


def test_chance_levels() -> None:
    chance = chance_levels(100, np.array([2, 2, 1, 0]), 30)
    assert chance["t2i_R@1"] == pytest.approx(0.01)
    assert chance["zs_top1"] == pytest.approx(1 / 30)
    # 3 images with captions, 5 captions: P(one of c captions in the top 1 of 5) = c / 5
    assert chance["i2t_R@1"] == pytest.approx(np.mean([2 / 5, 2 / 5, 1 / 5]))
    assert chance["i2t_R@10"] == pytest.approx(1.0)


def test_per_sample_seeds_are_stable_and_distinct() -> None:
    assert derived_seed(0, 1, 5) == derived_seed(0, 1, 5)
    assert len({derived_seed(0, e, i) for e in range(3) for i in range(100)}) == 300


def test_shapes_and_train_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, stdout, err = run_cli(
        "shapes", data, "--n", 200, "--size", 32, "--seed", 2, "--holdout", "red star,green cross", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["holdout"] == ["red star", "green cross"]
    run = tmp_path / "run"
    code, stdout, err = run_cli(
        "train",
        data,
        "--arch",
        ARCH,
        "--epochs",
        1,
        "--batch-size",
        32,
        "--accum-steps",
        2,
        "--workers",
        0,
        "--out",
        run,
        "--json",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs_done"] == 1 and Path(summary["checkpoints"]["best"]).is_file()
    assert json.loads((run / "config.json").read_text())["train"]["accum_steps"] == 2
    code, _, err = run_cli("train", data, "--arch", ARCH, "--out", run)
    assert code == 1 and "--resume" in err and "Traceback" not in err
    code, _, err = run_cli("train", tmp_path / "missing", "--arch", ARCH)
    assert code == 1 and "not found" in err


def test_flickr8k_files_become_train_and_val_examples(tmp_path: Path) -> None:
    written = write_flickr8k(tmp_path / "flickr", {"train": 6, "val": 3, "test": 2}, captions_per_image=5)
    data = load_training_data("flickr8k", tmp_path / "flickr")
    by_name = {Path(e.uri).name: e for e in data.train + data.val}
    assert len(data.train) == 6 and len(data.val) == 3
    for example in data.val:
        split, captions = written[Path(example.uri).name]
        assert split == "val" and list(example.captions) == captions and Path(example.uri).is_file()
    assert all(written[name][0] != "test" for name in by_name)
    assert not data.class_names  # no labels: retrieval only


def test_cifar_trains_on_class_prompts(tmp_path: Path) -> None:
    make_cifar_archive(tmp_path, "cifar10", n_train_per_class=20, n_test_per_class=1)
    data = load_training_data("cifar10", tmp_path)
    assert (len(data.train), len(data.val)) == (180, 20) and data.captions_are_prompts
    airplane = next(e for e in data.train if e.label == "airplane")
    assert "a photo of a airplane." in airplane.captions and len(airplane.captions) == 18
    result = train(
        TrainConfig(data="cifar10", data_dir=str(tmp_path), out=str(tmp_path / "run"), epochs=1, **FAST), progress=False
    )
    assert set(result.last_metrics) == {"zs_top1"}  # identical prompts make retrieval meaningless
    assert result.best_epoch == 1 and result.chance["zs_top1"] == pytest.approx(0.1)


def test_mini_trains_one_epoch_and_its_checkpoint_searches(tmp_path: Path) -> None:
    """Acceptance check 4 in small: the ResNet18 `mini` trains an epoch on shapes, then indexes and searches."""
    data = tmp_path / "shapes"
    generate_shapes(data, n=100, size=64, seed=5)
    run = tmp_path / "mini"
    code, stdout, err = run_cli(
        "train", data, "--arch", "mini", "--epochs", 1, "--batch-size", 16, "--workers", 0, "--out", run, "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["epochs_done"] == 1
    root = tmp_path / "idx"
    code, _, err = run_cli(
        "index",
        data,
        "--name",
        "m",
        "--model",
        "mini",
        "--pretrained",
        run / "best.safetensors",
        "--workers",
        0,
        "--root",
        root,
        "--json",
    )
    assert code == 0, err
    code, stdout, err = run_cli("search", "m", "a blue square", "-k", "3", "--json", "--root", root)
    assert code == 0, err
    hits = json.loads(stdout)
    # The same top 3 as a brute-force ranking of the stored vectors against the checkpoint's text vector.
    stored = [row for row in table_rows(root / "m", "images") if not row["deleted"]]
    assert len(stored) == 100
    vectors = np.array([row["vector"] for row in stored], np.float32)
    query = Encoder.load("mini", str(run / "best.safetensors")).encode_texts(["a blue square"])[0]
    scores = vectors @ query
    best = np.argsort(-scores, kind="stable")[:3]
    assert [hit["id"] for hit in hits] == [stored[i]["id"] for i in best]
    assert [hit["score"] for hit in hits] == pytest.approx(scores[best].tolist(), abs=1e-5)


def test_each_epoch_is_one_line_in_a_log_file(small_shapes: Path, tmp_path: Path) -> None:
    """`clipsearch train ... 2> log` at the console width of a file (80): no epoch line is broken in two."""
    log = io.StringIO()
    config = TrainConfig(data=str(small_shapes), out=str(tmp_path / "run"), epochs=1, **FAST)
    train(config, progress=False, console=Console(file=log, width=80))
    [line] = [line for line in log.getvalue().splitlines() if line.startswith("epoch 1/1")]
    assert "loss" in line and "t2i R@1/5/10" in line
    assert "zs top1" in line, line  # the last group: on the same line, not wrapped onto the next
