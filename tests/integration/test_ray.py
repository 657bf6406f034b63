"""`clipsearch index --engine ray`: the same index as the local engine, encoded by a Ray Data pipeline.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; every check compares a Ray
run with a local run of the same source: rows, keys, skipped files, vectors (1e-6), search results,
re-index counts, and the index left by a killed actor or a killed driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cifar_fixture import make_cifar_archive
from cli_runner import run_cli, run_json
from imagegen import distinct_image, write_distinct_images
from index_helpers import TINY
from ray_faults import CRASH_FILE_ENV

from clipsearch.api import Index
from clipsearch.errors import ClipsearchError
from clipsearch.index.engines import check_workers_see

NAMES = [f"{i:02d}.png" for i in range(14)] + [f"sub/{i:02d}.jpg" for i in range(6)]
COUNTS = ("new", "updated", "unchanged", "touched", "moved", "deleted", "skipped", "encoded", "captions")


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Ray instance whose workers arm tests/ray_faults.py: the file that makes one encoding actor die
    (absent until a test writes it)."""
    ray = pytest.importorskip("ray")  # imported here: the rest of the suite runs without it
    crash_file = tmp_path_factory.mktemp("ray") / "crash-one-actor"
    tests = str(Path(__file__).resolve().parents[1])
    saved = {key: os.environ.get(key) for key in (CRASH_FILE_ENV, "PYTHONPATH")}
    os.environ[CRASH_FILE_ENV] = str(crash_file)  # before ray.init: its worker processes inherit both
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, saved["PYTHONPATH"]]))
    ray.init(
        address="local",  # never a running cluster
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": "ray_faults.arm"},
    )
    yield crash_file
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _folder(path: Path) -> Path:
    write_distinct_images(path, NAMES)
    (path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return path


def _index(source: Path | str, name: str, root: Path, *extra: object) -> dict:
    return run_json("index", source, "--name", name, *TINY, "--root", root, "--batch-size", "8", *extra)


def _local(source: Path | str, name: str, root: Path, *extra: object) -> dict:
    return _index(source, name, root, "--workers", "0", *extra)


def _on_ray(source: Path | str, name: str, root: Path, *extra: object, actors: int = 2) -> dict:
    return _index(source, name, root, "--engine", "ray", "--actors", actors, *extra)


def _table(name: str, root: Path) -> tuple[list[dict], np.ndarray, list[dict]]:
    """(every row but its vector, the vectors, the skipped files), by id."""
    index = Index.open(name, root)
    rows = index.rows(include_deleted=True).sort_by("id")
    skipped = sorted(({k: r[k] for k in ("id", "reason", "size")} for r in index.skipped()), key=lambda r: r["id"])
    return (
        rows.drop_columns(["vector"]).to_pylist(),
        np.stack(rows.column("vector").to_numpy(zero_copy_only=False)),
        skipped,
    )


def _assert_same_index(name: str, expected: str, root: Path) -> None:
    rows, vectors, skipped = _table(name, root)
    want_rows, want_vectors, want_skipped = _table(expected, root)
    assert rows == want_rows  # ids, keys, every metadata column, deleted flags
    assert skipped == want_skipped
    np.testing.assert_allclose(vectors, want_vectors, atol=1e-6)
    index, reference = Index.open(name, root), Index.open(expected, root)
    for query in ("a red square", "blue and green"):
        hits, want = index.search(query, k=8), reference.search(query, k=8)
        assert [h.id for h in hits] == [h.id for h in want]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in want], atol=1e-5)


def test_a_folder_indexed_on_ray_equals_the_local_index_also_after_changes(ray_instance: Path, tmp_path: Path) -> None:
    root, folder = tmp_path / "ix", _folder(tmp_path / "photos")
    local = _local(folder, "local", root)
    on_ray = _on_ray(folder, "ray", root)
    assert (on_ray["engine"], on_ray["actors"], local["engine"], local["actors"]) == ("ray", 2, "local", 0)
    assert {k: on_ray[k] for k in COUNTS} == {k: local[k] for k in COUNTS} and local["encoded"] == len(NAMES)
    assert on_ray["skipped_files"] == local["skipped_files"] == [["broken.png", on_ray["skipped_files"][0][1]]]
    _assert_same_index("ray", "local", root)

    # touched (same bytes, new mtime), moved, deleted, rewritten and new files
    os.utime(folder / "00.png", (1e9, 1e9))
    (folder / "01.png").rename(folder / "sub" / "moved.png")
    (folder / "02.png").unlink()
    distinct_image(99).save(folder / "03.png")
    distinct_image(98).save(folder / "new.png")
    local, on_ray = _local(folder, "local", root), _on_ray(folder, "ray", root, actors=1)
    assert {k: on_ray[k] for k in COUNTS} == {k: local[k] for k in COUNTS}
    assert (local["encoded"], local["touched"], local["moved"], local["deleted"]) == (2, 1, 1, 1)
    _assert_same_index("ray", "local", root)


def test_cifar_on_ray_equals_local_even_when_an_encoding_actor_dies(ray_instance: Path, tmp_path: Path) -> None:
    archive = make_cifar_archive(tmp_path, "cifar10")
    root, data = tmp_path / "ix", ("--data-dir", archive, "--split", "test")
    local = _local("cifar10", "local", root, *data)
    ray_instance.write_text("")  # the actor taking the first batch removes it and dies; Ray restarts it, retries
    on_ray = _on_ray("cifar10", "ray", root, *data, actors=1)
    assert not ray_instance.exists()  # the actor did die mid-run
    assert {k: on_ray[k] for k in COUNTS} == {k: local[k] for k in COUNTS} and local["encoded"] == 30
    _assert_same_index("ray", "local", root)


_SLOW_DRIVER = """
import sys, time
from clipsearch.index import sync
sync.WRITE_BATCH = 4
write = sync._write_images
sync._write_images = lambda *args: (time.sleep(0.4), write(*args))[1]  # slow commits: time to be killed
from clipsearch.cli.app import main
main(sys.argv[1:])
"""


def test_a_killed_ray_driver_leaves_a_usable_index_that_a_rerun_completes(ray_instance: Path, tmp_path: Path) -> None:
    root, folder = tmp_path / "ix", _folder(tmp_path / "photos")
    import ray

    address = ray.get_runtime_context().gcs_address  # the module's instance
    args = ["index", folder, "--name", "ray", *TINY, "--root", root, "--batch-size", "4", "--json"]
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SLOW_DRIVER,
            *map(str, args),
            "--engine",
            "ray",
            "--ray-address",
            address,
            "--actors",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        written = 0
        deadline = time.monotonic() + 120
        while written < 4 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            written = _live_rows("ray", root)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    partial = Index.open("ray", root)
    written = partial.live_count()
    assert 4 <= written < len(NAMES)
    assert len(partial.search("a red square", k=3)) == 3  # usable as it is

    rerun = _on_ray(folder, "ray", root, actors=1)
    _local(folder, "local", root)
    assert rerun["encoded"] == rerun["new"] == len(NAMES) - written
    _assert_same_index("ray", "local", root)


def _live_rows(name: str, root: Path) -> int:
    try:
        return Index.open(name, root).live_count()
    except ClipsearchError:  # not created yet (its manifest is written first)
        return 0


def test_workers_that_cannot_read_the_images_stop_the_run_with_one_line(ray_instance: Path) -> None:
    with pytest.raises(ClipsearchError, match=r"^the Ray workers cannot read /nowhere/a\.png .*every node mounts"):
        check_workers_see(["/nowhere/a.png"])


def test_engine_options_are_checked_and_a_missing_ray_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    write_distinct_images(folder, ["a.png"])
    code, _, stderr = run_cli("index", folder, *TINY, "--root", tmp_path / "ix", "--actors", "2")
    assert code != 0 and "need --engine ray" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli("index", folder, *TINY, "--root", tmp_path / "ix", "--engine", "spark")
    assert code != 0 and "unknown engine 'spark'" in stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` fails
    code, _, stderr = run_cli("index", folder, *TINY, "--root", tmp_path / "ix", "--engine", "ray")
    assert code != 0 and "pip install 'clipsearch[ray]'" in stderr and len(stderr.strip().splitlines()) <= 2
