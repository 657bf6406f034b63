"""Commands that need no model load none (acceptance check 3): `--help`, `list`, `info`, `remove`
and re-indexing an unchanged folder (also naming the index's own model) import neither torch nor
open_clip (seconds of start-up each).
Nor do they open a table, so lancedb stays out of them too: counts, table versions and the stored
rows a re-index plans over come from the manifest, the tables' version folders and the rows file.

The commands run one after another in one fresh interpreter, which notes the heavy modules it
holds after each: modules only accumulate, so a command that imported one is the first to show it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imagegen import write_distinct_images

from clipsearch.api import Index

N_IMAGES = 5
TINY = ["--model", "tiny", "--pretrained", "none"]
MODEL_MODULES = {"torch", "open_clip", "torchvision", "transformers", "ray"}

# Runs each `clipsearch ARGS` of $COMMANDS (a JSON list) in turn; prints, as JSON, per command:
# exit code, stdout, stderr and the heavy modules loaded so far.
PROBE = """
import io, json, os, sys
from contextlib import redirect_stderr, redirect_stdout
from clipsearch.cli.app import main
reports = []
for args in json.loads(os.environ["COMMANDS"]):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as stop:
            code = stop.code or 0
    heavy = [m for m in ("torch", "open_clip", "torchvision", "transformers", "ray", "lancedb") if m in sys.modules]
    reports.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "heavy": heavy})
print(json.dumps(reports))
"""


def test_commands_without_a_model_import_no_torch(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, [f"img{i}.png" for i in range(N_IMAGES)])
    root = tmp_path / "idx"
    Index.create("base", root, encoder=tiny_encoder).add_folder(folder, workers=0, progress=False)
    shutil.copytree(root / "base", root / "doomed")  # for `remove`

    commands = {  # in this order: --help and list before anything opens a table
        "help": ["--help"],
        "list": ["list", "--root", root, "--json"],
        "info": ["info", "base", "--root", root, "--json"],
        "remove": ["remove", "doomed", "--root", root],
        "reindex": ["index", folder, "--name", "base", "--root", root, "--workers", "0", "--json"],
        "reindex_same_model": ["index", folder, "--name", "base", *TINY, "--root", root, "--workers", "0", "--json"],
        "reindex_arch": [
            "index",
            folder,
            "--name",
            "base",
            "--model",
            "tiny",
            "--root",
            root,
            "--workers",
            "0",
            "--json",
        ],
        "reindex_on_ray": ["index", folder, "--name", "base", "--root", root, "--engine", "ray", "--json"],  # no Ray
    }
    env = {**os.environ, "COMMANDS": json.dumps([[str(a) for a in args] for args in commands.values()])}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    results = dict(zip(commands, json.loads(done.stdout)))

    for name, result in results.items():
        assert result["code"] == 0, f"{name}: {result['stderr']}"
        loaded = MODEL_MODULES & set(result["heavy"])
        assert not loaded, f"`clipsearch {' '.join(map(str, commands[name]))}` imported {sorted(loaded)}"
    for name in ("help", "list", "info", "reindex", "reindex_same_model", "reindex_arch"):  # (lancedb: 1.4 s)
        assert "lancedb" not in results[name]["heavy"], f"{name} opened a table"
    assert "Usage: clipsearch" in results["help"]["stdout"]
    listed = json.loads(results["list"]["stdout"])
    assert [(e["name"], e["images"]) for e in listed] == [("base", N_IMAGES), ("doomed", N_IMAGES)]
    assert json.loads(results["info"]["stdout"])["counts"]["images"] == N_IMAGES
    assert not (root / "doomed").exists() and (root / "base").is_dir()
    for name in ("reindex", "reindex_same_model", "reindex_arch", "reindex_on_ray"):
        stats = json.loads(results[name]["stdout"])
        assert (stats["unchanged"], stats["encoded"], stats["new"]) == (N_IMAGES, 0, 0), name
