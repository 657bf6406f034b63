"""The Python API's errors speak to a Python caller too (issue 14 item 14b): no command-line flag
(`--labels`, `--resume`, ...) in the messages of tasks/, training/, api.py and index/; the CLI adds its
flags in its own messages where one helps."""

from __future__ import annotations

import re

import pytest
from cli_runner import run_cli
from imagegen import write_distinct_images

from clipsearch.api import Index
from clipsearch.errors import ClipsearchError
from clipsearch.tasks.probes import few_shot, split_features
from clipsearch.tasks.zeroshot_eval import parse_template_specs
from clipsearch.training.config import TrainConfig, checked_run_config

FLAG = re.compile(r"(^|\s|\()--[a-z]")


@pytest.fixture
def photos(tmp_path, tiny_encoder) -> Index:
    write_distinct_images(tmp_path / "photos", [f"img{i}.png" for i in range(4)])
    index = Index.create("photos", tmp_path / "indexes", encoder=tiny_encoder)
    index.add_folder(tmp_path / "photos", workers=0, progress=False)
    return index


def message(call) -> str:
    with pytest.raises(ClipsearchError) as caught:
        call()
    return str(caught.value)


def test_api_errors_name_no_command_line_flag(photos, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.safetensors").write_bytes(b"")
    messages = {
        "labels unknown": message(lambda: photos.evaluate_zero_shot(split="all")),
        "no such split": message(lambda: photos.evaluate_zero_shot("cat,dog", split="val")),
        "no captions": message(lambda: photos.evaluate_retrieval()),
        "empty templates": message(lambda: parse_template_specs(" , ")),
        "shots": message(lambda: few_shot(split_features(photos, "all", ["x"]), 0, 0)),
        "lr": message(lambda: TrainConfig("d", "tiny-rn", "o", lr=-1.0).check()),
        "schedule": message(lambda: TrainConfig("d", "tiny-rn", "o", schedule="step").check()),
        "existing run": message(lambda: checked_run_config(TrainConfig("d", "tiny-rn", str(tmp_path / "run")), False)),
        "resume nothing": message(lambda: checked_run_config(TrainConfig("d", "tiny-rn", str(tmp_path / "x")), True)),
        "empty query": message(lambda: photos.search("")),
    }
    for what, text in messages.items():
        assert not FLAG.search(text), f"{what}: {text}"
    assert "labels" in messages["labels unknown"] and "resume it" in messages["existing run"]


def test_the_cli_still_names_its_flags(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.safetensors").write_bytes(b"")
    code, _, stderr = run_cli("train", tmp_path, "--arch", "tiny-rn", "--out", tmp_path / "run")
    assert code == 1 and "pass --resume" in stderr and "--out" in stderr
    code, _, stderr = run_cli("train", "--out", tmp_path / "nothing", "--resume")
    assert code == 1 and "drop --resume" in stderr
