"""The hostile corpus (issue 12): files and indexes a hostile user could leave behind. Every case
runs under a timeout, ends in one line (never a traceback), hangs on nothing, reads nothing
outside the folder it was given, and lists every bad file in `skipped` with its reason."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import lancedb
import numpy as np
import pytest
from caption_fixture import karpathy_image, write_image, write_karpathy
from cli_runner import run_cli, run_json
from imagegen import write_distinct_images
from index_helpers import GOOD, TINY, build_clean_indexes, private_root
from PIL import Image

from clipsearch.index import engines
from clipsearch.sources import images

BAD_NAME = b"bad\xff\xfe.jpg"
# file -> the reason `skipped` must give (a substring)
HOSTILE = {
    "x.jpg": "not a regular file (a FIFO)",
    "zero.jpg": "not a regular file (a character device)",
    "bad\\xff\\xfe.jpg": "not valid UTF-8",
    "strip.png": "too narrow",
    "loop.jpg": "broken symlink",
    "dangling.jpg": "broken symlink",
    "empty.jpg": "not an image",
    "text.png": "not an image",
}
pytestmark = pytest.mark.timeout(120)


def one_line_error(code: int, stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_hostile_folder(folder: Path) -> None:
    write_distinct_images(folder, GOOD)
    os.mkfifo(folder / "x.jpg")  # an open() of it would wait for a writer forever
    os.symlink("/dev/zero", folder / "zero.jpg")  # hashing it would never end
    fd = os.open(os.fsencode(folder) + b"/" + BAD_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, (folder / "a.png").read_bytes())
    os.close(fd)
    Image.new("L", (300_000, 1), 200).save(folder / "strip.png")  # 0.3 MP, 67 MP once preprocessed
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("missing.jpg", folder / "dangling.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not a picture")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean index 'photos' of GOOD under <dir>/indexes, its folder at <dir>/photos."""
    return build_clean_indexes(tmp_path_factory.mktemp("clean"), {"photos": GOOD})


@pytest.fixture
def root(clean: Path, tmp_path: Path) -> Path:
    return private_root(clean, tmp_path)


def search_ids(root: Path, *extra: str) -> list[tuple[str, float]]:
    code, stdout, stderr = run_cli("search", "photos", "red", "-k", "4", "--root", root, "--json", *extra)
    assert code == 0 and "Traceback" not in stderr, stderr
    return [(hit["id"], round(hit["score"], 5)) for hit in json.loads(stdout)]


# -- items 1-4, 18: the hostile folder --------------------------------------------------------
def test_hostile_folder_indexes_every_good_file_and_skips_each_bad_one_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    write_hostile_folder(folder)
    index_args = ("index", folder, *TINY, "--workers", "0", "--root", tmp_path / "ix", "--json")
    code, stdout, stderr = run_cli(*index_args)
    assert code == 0 and "Traceback" not in stderr, stderr
    summary = json.loads(stdout)
    assert summary["new"] == len(GOOD) and summary["skipped"] == len(HOSTILE)
    info = run_json("info", "hostile", "--root", tmp_path / "ix", "--skipped")
    reasons = {row["id"]: row["reason"] for row in info["skipped_files"]}
    assert set(reasons) == set(HOSTILE), reasons
    for name, reason in HOSTILE.items():
        assert reason in reasons[name], (name, reasons[name])
    # The batch was written (nothing lost), and a re-run succeeds with nothing to do.
    again = run_json(*index_args[:-1])
    assert again["new"] == 0 and again["unchanged"] == summary["new"] and again["skipped"] == len(HOSTILE)


# -- item 5: k --------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["1000000000", "9223372036854775808", "0", "-3"])
def test_absurd_k_is_one_line(root: Path, k: str) -> None:
    one_line_error(*run_cli("search", "photos", "red", "-k", k, "--root", root)[::2], "-k")


def test_k_above_the_rows_returns_every_row(root: Path) -> None:
    assert len(json.loads(run_cli("search", "photos", "red", "-k", "90000", "--root", root, "--json")[1])) == 6


# -- item 8: the manifest -----------------------------------------------------------------------
MANIFESTS = {
    "truncated": lambda text: text[: len(text) // 2],
    "garbage": lambda text: "\x00\xffnot json",
    "empty": lambda text: "",
    "empty object": lambda text: "{}",
    "a list": lambda text: "[1, 2]",
    "dim as text": lambda text: text.replace('"dim": 64', '"dim": "64"'),
}


@pytest.mark.parametrize("case", MANIFESTS)
@pytest.mark.parametrize("command", [["info", "photos"], ["search", "photos", "red"], ["index", "PHOTOS"]])
def test_broken_manifest_is_one_line_naming_the_file(root: Path, clean: Path, case: str, command: list[str]) -> None:
    manifest = root / "photos" / "manifest.json"
    manifest.write_text(MANIFESTS[case](manifest.read_text()))
    command = [str(clean / "photos") if part == "PHOTOS" else part for part in command]
    one_line_error(*run_cli(*command, "--root", root)[::2], str(manifest), "remove photos")


def test_unknown_arch_in_the_manifest_is_one_line(root: Path) -> None:
    manifest = root / "photos" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"]["arch"] = "no-such-arch"
    manifest.write_text(json.dumps(data))
    one_line_error(*run_cli("search", "photos", "red", "--root", root)[::2], "no-such-arch", str(manifest))


# -- item 9: list -------------------------------------------------------------------------------
def test_list_shows_the_good_indexes_and_one_line_per_bad_one(root: Path) -> None:
    shutil.copytree(root / "photos", root / "broken")
    (root / "broken" / "manifest.json").write_text("{")
    shutil.copytree(root / "photos", root / "_other")  # a name the tool refuses
    code, stdout, stderr = run_cli("list", "--root", root, "--json")
    assert code == 0 and "Traceback" not in stderr, stderr
    assert [row["name"] for row in json.loads(stdout)] == ["photos"]
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "broken" in warnings[1] and "_other" in warnings[0], stderr


# -- items 10-12: lance files -----------------------------------------------------------------------
def _newest_version_file(table: Path) -> str:
    return sorted(glob.glob(str(table / "_versions" / "*.manifest")))[0]  # lance names count down


LANCE = {
    "data truncated": lambda t: [os.truncate(f, 100) for f in glob.glob(str(t / "data" / "*.lance"))],
    "data deleted": lambda t: [os.remove(f) for f in glob.glob(str(t / "data" / "*.lance"))],
    "version truncated": lambda t: os.truncate(_newest_version_file(t), 40),
}


@pytest.mark.parametrize("case", LANCE)
@pytest.mark.parametrize("command", [["info", "photos"], ["search", "photos", "red"]])
def test_damaged_lance_files_are_one_line_pointing_at_check(root: Path, case: str, command: list[str]) -> None:
    LANCE[case](root / "photos" / "db" / "images.lance")
    code, _, stderr = run_cli(*command, "--root", root)
    one_line_error(code, stderr, "damaged", "clipsearch check photos --repair")
    assert "invalid filter" not in stderr


def test_missing_key_index_is_rebuilt_on_the_fly(root: Path, clean: Path) -> None:
    expected = search_ids(clean / "indexes")
    for folder in glob.glob(str(root / "photos" / "db" / "images.lance" / "_indices" / "*")):
        shutil.rmtree(folder)
    assert search_ids(root) == expected
    assert glob.glob(str(root / "photos" / "db" / "images.lance" / "_indices" / "*"))


def test_missing_skipped_table_is_recreated(root: Path, clean: Path) -> None:
    shutil.rmtree(root / "photos" / "db" / "skipped.lance")
    assert run_json("info", "photos", "--root", root)["counts"]["skipped"] == 0
    code, _, stderr = run_cli("index", clean / "photos", "--root", root, "--workers", "0")
    assert code == 0 and "Traceback" not in stderr, stderr


# -- item 14: checkpoints with lying headers -----------------------------------------------------------
def _safetensors(header: bytes, size: int | None = None, body: bytes = b"") -> bytes:
    return (len(header) if size is None else size).to_bytes(8, "little") + header + body


CHECKPOINTS = {
    "header too large": _safetensors(b"{}", size=2**60),
    "bad offsets": _safetensors(b'{"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}', body=b"\0" * 8),
    "invalid JSON": _safetensors(b"{not json"),
    "empty": b"",
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_lying_safetensors_checkpoint_is_one_line(tmp_path: Path, clean: Path, case: str) -> None:
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(CHECKPOINTS[case])
    code, _, stderr = run_cli("index", clean / "photos", "--model", "tiny", "--pretrained", checkpoint)
    one_line_error(code, stderr, "checkpoint", str(checkpoint))


# -- item 15: names and paths ---------------------------------------------------------------------------
def test_bad_names_and_paths_are_one_line(root: Path, clean: Path, tmp_path: Path) -> None:
    one_line_error(*run_cli("index", clean / "photos", "--name", "n" * 256, *TINY)[::2], "at most 255")
    (tmp_path / "file").write_text("")
    for command in (["list"], ["info", "photos"], ["index", str(clean / "photos"), *TINY]):
        one_line_error(*run_cli(*command, "--root", tmp_path / "file")[::2], "not a folder")
    grid = tmp_path / "file" / "sub" / "sheet.png"  # under a file: no folder can be made there
    one_line_error(*run_cli("search", "photos", "red", "--root", root, "--grid", grid)[::2], "is a file")
    grid = tmp_path / "missing" / "sheet.png"  # a missing folder is made, as before
    code, _, stderr = run_cli("search", "photos", "red", "--root", root, "--grid", grid)
    assert code == 0 and grid.is_file(), stderr


# -- item 16: reads outside the folder the user named ------------------------------------------------------
AUDIT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    secret = sys.argv[1]
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and secret in str(args[0]) else None)
    from clipsearch.errors import ClipsearchError
    from clipsearch.files import file_digest
    from clipsearch.sources.cifar import load_batch_file
    from clipsearch.sources.datasets import dataset_items
    items, problems = dataset_items("flickr8k", "all", Path(sys.argv[2]), Path(sys.argv[3]))
    for item in items:
        file_digest(item.uri)  # what the indexer reads of each item
    try:
        load_batch_file(Path(sys.argv[4]))
        refused = False
    except ClipsearchError:
        refused = True
    print(json.dumps({"opened": opened, "uris": [i.uri for i in items], "problems": problems, "refused": refused}))
    """
)


def test_paths_from_data_files_stay_inside_the_named_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_image(outside / "secret.jpg", seed=1)
    data = tmp_path / "data"
    images = data / "Flicker8k_Dataset"
    images.mkdir(parents=True)
    write_image(images / "ok.jpg", seed=2)
    os.symlink(outside / "secret.jpg", images / "link.jpg")  # a symlink that leads outside
    os.symlink(outside, images / "escape")  # a folder symlink that leads outside
    captions = write_karpathy(
        data / "dataset_flickr8k.json",
        [
            karpathy_image("ok.jpg", "test", ["fine"]),
            karpathy_image("../../outside/secret.jpg", "test", ["dot-dot"]),
            karpathy_image(str(outside / "secret.jpg"), "test", ["absolute"]),
            karpathy_image("secret.jpg", "test", ["via filepath"], filepath="../../outside"),
            karpathy_image("link.jpg", "test", ["symlink"]),
            karpathy_image("secret.jpg", "test", ["folder symlink"], filepath="escape"),
        ],
        "flickr8k",
    )
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    os.symlink(outside / "secret.jpg", cifar / "data_batch_1")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, "secret", str(data), str(captions), str(cifar / "data_batch_1")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    result = json.loads(done.stdout)
    assert result["opened"] == [] and result["refused"]
    assert [Path(uri).name for uri in result["uris"]] == ["ok.jpg"]
    assert sum("leaves the dataset folder" in p for p in result["problems"]) == 3, result["problems"]


# -- acceptance 2: SIGKILL at five points of an index run ---------------------------------------
KILLER = textwrap.dedent(
    """
    import io, os, signal, sys
    from clipsearch.cli.app import main
    from clipsearch.index import ann, store, sync
    from clipsearch.model.encoder import Encoder
    point, calls = sys.argv[1], []

    def kill_on(owner, name, nth=1, before=True):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            calls.append(name)
            if before and calls.count(name) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if not before and calls.count(name) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, wrapped)

    def half_written_faiss(path, write):  # the temp file holds half of the index when the process dies
        buffer = io.BytesIO()
        write(buffer)
        with open(path.with_name(f".{path.name}.killed.tmp"), "wb") as tmp:
            tmp.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    sync.WRITE_BATCH = 2  # several table commits for six images
    if point == "encode":
        kill_on(Encoder, "encode_image_tensors", nth=2)
    elif point == "table write":
        kill_on(store.Store, "upsert", nth=2)
    elif point == "compaction":
        kill_on(store.Store, "compact")
    elif point == "faiss write":
        ann.atomic_write = half_written_faiss
    elif point == "after manifest":  # the manifest write that records the new FAISS file
        save, write_manifest = ann.save, store.Store.write_manifest
        ann.save = lambda *args: calls.append("saved") or save(*args)

        def write_then_die(self, manifest):
            write_manifest(self, manifest)
            if "saved" in calls:
                os.kill(os.getpid(), signal.SIGKILL)

        store.Store.write_manifest = write_then_die
    main(sys.argv[2:])
    """
)


def table_snapshot(root: Path) -> tuple[list[tuple], np.ndarray]:
    """(id, key, deleted) of every stored row, by id, and their vectors in that order."""
    rows = lancedb.connect(str(root / "photos" / "db")).open_table("images").to_arrow().to_pylist()
    rows.sort(key=lambda row: row["id"])
    return [(r["id"], r["key"], r["deleted"]) for r in rows], np.asarray([r["vector"] for r in rows])


KILL_POINTS = ["encode", "table write", "compaction", "faiss write", "after manifest"]


@pytest.fixture(scope="module")
def killed(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """One index run per kill point, SIGKILLed there; all run at once (each start costs seconds)."""
    base, runs = tmp_path_factory.mktemp("killed"), {}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for point in KILL_POINTS:
        root = base / point.replace(" ", "-")
        args = ["index", str(clean / "photos"), *TINY, "--workers", "0", "--batch-size", "2", "--root", str(root)]
        log = base / f"{root.name}.log"
        with open(log, "w") as stderr:  # a file, not a pipe: five processes' output never blocks one
            process = subprocess.Popen([sys.executable, "-c", KILLER, point, *args], stderr=stderr, env=env)
        runs[point] = (root, args, process)
    for root, _, process in runs.values():
        process.wait(timeout=180)
        assert process.returncode == -9, (base / f"{root.name}.log").read_text()[-2000:]
    return {point: (root, args) for point, (root, args, _) in runs.items()}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_leaves_an_index_that_checks_and_resumes_to_the_clean_rows(
    killed: dict[str, tuple[Path, list[str]]], clean: Path, point: str
) -> None:
    root, args = killed[point]
    code, stdout, stderr = run_cli("check", "photos", "--root", root, "--repair")
    assert code == 0 and "Traceback" not in stderr, stdout + stderr
    code, _, stderr = run_cli(*args)
    assert code == 0 and "Traceback" not in stderr, stderr
    (rows, vectors), (clean_rows, clean_vectors) = table_snapshot(root), table_snapshot(clean / "indexes")
    assert rows == clean_rows and np.allclose(vectors, clean_vectors, atol=1e-5)
    assert search_ids(root) == search_ids(clean / "indexes")
    assert run_cli("check", "photos", "--root", root)[0] == 0


# -- acceptance 3: readers in other processes and a long-lived Index during writes -----------------
READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from clipsearch import Index
    root, done = Path(sys.argv[1]), Path(sys.argv[2])
    index = Index.open("photos", root)  # long-lived, as in the TUI
    query = np.ones(index.manifest["dim"], np.float32) / np.sqrt(index.manifest["dim"])
    errors, searches = [], 0
    print("ready", flush=True)
    while not done.exists():
        try:
            for reader in (index, Index.open("photos", root)):
                reader.search(vector=query, k=100)
                searches += 1
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
        time.sleep(0.05)
    ids = sorted(hit.id for hit in index.search(vector=query, k=100))
    print(json.dumps({"errors": errors, "searches": searches, "ids": ids}))
    """
)


def test_readers_see_no_errors_during_writes_and_the_new_rows_after(clean: Path, tmp_path: Path) -> None:
    photos, root, done = tmp_path / "photos", tmp_path / "indexes", tmp_path / "done"
    shutil.copytree(clean / "photos", photos)
    args = ["index", photos, *TINY, "--workers", "0", "--root", root, "--prune"]
    assert run_cli(*args)[0] == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(root), str(done)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert reader.stdout.readline().strip() == "ready"
        (photos / "a.png").unlink()  # a delete
        (photos / "sub" / "d.png").rename(photos / "moved.png")  # a move
        write_distinct_images(photos, ["new.png"], first_seed=90)  # a new file
        code, _, stderr = run_cli(*args)
        assert code == 0, stderr
    finally:
        done.touch()
        stdout, _ = reader.communicate(timeout=120)
    result = json.loads(stdout)
    expected = sorted({*GOOD, "moved.png", "new.png"} - {"a.png", "sub/d.png"})
    assert result["errors"] == [] and result["searches"] > 0, result
    assert result["ids"] == expected


# -- a read or decode that stalls --------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_stalled_read_is_skipped_with_its_reason_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    folder = tmp_path / "slow"
    write_distinct_images(folder, ["a.png", "b.png", "c.png"])
    stalled = "b.png"
    real_open_uri = engines.open_uri

    def open_uri(uri: str, **kwargs):  # stands in for a file on a mount that stopped answering
        if uri.endswith(stalled):
            threading.Event().wait(30)
        return real_open_uri(uri, **kwargs)

    monkeypatch.setattr(engines, "open_uri", open_uri)
    monkeypatch.setattr(images, "DECODE_SECONDS", 1.0)  # workers are forked: they inherit both patches
    args = ("index", folder, *TINY, "--workers", workers, "--root", tmp_path / "ix", "--json")
    code, stdout, stderr = run_cli(*args)
    assert code == 0 and "Traceback" not in stderr, stderr
    summary = json.loads(stdout)
    assert summary["new"] == 2 and summary["skipped"] == 1
    assert summary["skipped_files"] == [[stalled, "reading and decoding took longer than 1 s"]]
