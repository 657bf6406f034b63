"""The JSON API of `clipsearch serve` (issue 13, acceptance check 2): every endpoint's JSON equals the CLI's
`--json` for the same request; unknown ids, path-like ids, oversized and non-image uploads and missing or
wrong tokens are one-line 4xx answers; nothing outside the index is read; serving writes nothing and picks
up a re-index; the real `clipsearch serve` starts, answers and stops cleanly on Ctrl-C."""

from __future__ import annotations

import builtins
import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli, run_json
from fastapi.testclient import TestClient
from index_helpers import TINY
from PIL import Image
from web_indexes import CIFAR_IMAGES, CIFAR_INDEX, SHAPES_IMAGES, SHAPES_INDEX

from clipsearch.sources.images import open_uri
from clipsearch.tasks.prompts import label_set
from clipsearch.web import service as service_module
from clipsearch.web.app import create_app
from clipsearch.web.service import SearchService

LOOPBACK = "http://127.0.0.1"
LABELS = "red circle,blue square,green triangle"


@pytest.fixture(scope="module")
def shapes_service(web_root: Path) -> SearchService:
    service = SearchService(SHAPES_INDEX, web_root)
    service._loaded.wait(120)
    assert service.ready, service.status
    return service


@pytest.fixture(scope="module")
def client(shapes_service: SearchService) -> TestClient:
    """The app without its lifespan (the Gradio page is not built: the browser tests cover it)."""
    return TestClient(create_app(shapes_service), base_url=LOOPBACK)


def first_image(folder: Path) -> Path:
    return sorted((folder / "test").glob("*.png"))[0]


def upload(path: Path | bytes) -> dict:
    data = path if isinstance(path, bytes) else path.read_bytes()
    return {"image": ("query.png", data, "image/png")}


def test_info_equals_the_cli(client: TestClient, web_root: Path) -> None:
    expected = run_json("info", SHAPES_INDEX, "--root", web_root)
    answer = client.get("/api/info").json()
    assert answer.pop("disk_bytes") > 0 and expected.pop("disk_bytes") > 0  # may differ by lance's own files
    assert answer == expected


@pytest.mark.parametrize(
    ("body", "cli_args"),
    [
        ({"query": "a red circle", "k": 5}, ["a red circle", "-k", "5"]),
        (
            {"query": ["red", "+", "2:circle", "-", "0.5:square"], "k": 7},
            ["red", "+", "2:circle", "-", "0.5:square", "-k", "7"],
        ),
        ({"query": "a shape", "k": 4, "where": "split = 'test'"}, ["a shape", "-k", "4", "--where", "split = 'test'"]),
    ],
    ids=["text", "weighted", "where"],
)
def test_search_equals_the_cli(client: TestClient, web_root: Path, body: dict, cli_args: list) -> None:
    expected = run_json("search", SHAPES_INDEX, *cli_args, "--root", web_root)
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"hits": expected}
    assert expected  # the comparison compared something


def test_search_with_a_threshold_equals_the_cli(client: TestClient, web_root: Path) -> None:
    scores = [hit["score"] for hit in client.post("/api/search", json={"query": "a shape", "k": 30}).json()["hits"]]
    threshold = (scores[9] + scores[10]) / 2  # the random tiny model's cosines are small: cut between two of them
    expected = run_json("search", SHAPES_INDEX, "a shape", "-k", "30", "--threshold", threshold, "--root", web_root)
    answer = client.post("/api/search", json={"query": "a shape", "k": 30, "threshold": threshold}).json()
    assert answer == {"hits": expected} and len(expected) == 10


def test_search_by_upload_equals_the_cli_and_by_id_finds_the_image(
    client: TestClient, web_root: Path, shapes_folder: Path
) -> None:
    path = first_image(shapes_folder)
    expected = run_json("search", SHAPES_INDEX, "--image", path, "-k", "5", "--root", web_root)
    by_upload = client.post("/api/search", data={"k": "5"}, files=upload(path)).json()["hits"]
    assert by_upload == expected
    image_id = path.relative_to(shapes_folder).as_posix()
    by_id = client.post("/api/search", json={"id": image_id, "k": 5}).json()["hits"]
    assert by_id[0]["id"] == image_id and by_id[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # The stored vector is the one the CLI's image query re-computes: same neighbours, same scores.
    assert [h["id"] for h in by_id] == [h["id"] for h in expected]
    assert [h["score"] for h in by_id] == pytest.approx([h["score"] for h in expected], abs=1e-5)


def test_classify_equals_predict(client: TestClient, web_root: Path, shapes_folder: Path) -> None:
    path = first_image(shapes_folder)
    for templates in (None, "shapes"):
        options = ["--templates", templates] if templates else []
        [expected] = run_json(
            "predict", path, "--labels", LABELS, "-k", "3", "--index", SHAPES_INDEX, *options, "--root", web_root
        )
        form = {"labels": LABELS, "k": "3", **({"templates": templates} if templates else {})}
        answer = client.post("/api/classify", data=form, files=upload(path)).json()["labels"]
        assert [p["label"] for p in answer] == [p["label"] for p in expected["predictions"]]
        for got, want in zip(answer, expected["predictions"]):
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
            assert got["cosine"] == pytest.approx(want["cosine"], abs=1e-6)


def test_classify_takes_a_label_set_and_the_index_labels(client: TestClient, shapes_folder: Path) -> None:
    files = upload(first_image(shapes_folder))
    shapes = client.post("/api/classify", data={"labels": "shapes", "k": "5"}, files=files).json()["labels"]
    stored = client.post("/api/classify", data={"labels": "index", "k": "50"}, files=files).json()["labels"]
    assert len(shapes) == 5 and sum(p["probability"] for p in shapes) <= 1 + 1e-9
    assert 1 < len(stored) < len(label_set("shapes")) and {p["label"] for p in stored} <= set(label_set("shapes"))


def recording(open_function, opened: list[str]):
    """`open_function`, noting the name of every file it opens in `opened`."""

    def opening(file, *args, **kwargs):
        opened.append(str(file))
        return open_function(file, *args, **kwargs)

    return opening


@pytest.mark.parametrize("route", ["thumb", "image"])
def test_unknown_and_path_like_ids_are_404_and_nothing_outside_is_read(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    opened: list[str] = []
    for module, name in ((builtins, "open"), (os, "open"), (Image, "open")):
        monkeypatch.setattr(module, name, recording(getattr(module, name), opened))
    relative = os.path.relpath(secret, Path.cwd())
    for image_id in ["no-such-image.png", "../../etc/passwd", str(secret), relative]:
        response = client.get(f"/api/{route}/{urllib.request.quote(image_id, safe='')}")
        assert response.status_code == 404, response.text
        assert response.json()["detail"].startswith("no image") and "\n" not in response.json()["detail"]
    response = client.post("/api/search", json={"query": str(secret), "k": 3})  # a path is text here
    assert response.status_code == 200
    assert not [path for path in opened if "secret" in path or "passwd" in path]


def test_thumbnails_and_images_of_a_folder_index(client: TestClient, shapes_folder: Path) -> None:
    path = first_image(shapes_folder)
    image_id = path.relative_to(shapes_folder).as_posix()  # "test/…png": a slash in the id
    response = client.get(f"/api/image/{urllib.request.quote(image_id, safe='')}")
    assert response.status_code == 200 and response.content == path.read_bytes()
    thumb = Image.open(io.BytesIO(client.get(f"/api/thumb/{image_id}?size=16").content))
    assert thumb.format == "JPEG" and max(thumb.size) == 16


def test_thumbnails_of_dataset_rows_come_from_the_archive(web_root: Path) -> None:
    cifar = SearchService(CIFAR_INDEX, web_root)
    cifar_client = TestClient(create_app(cifar), base_url=LOOPBACK)
    rows = cifar.index.rows(columns=["id", "uri"]).to_pylist()
    assert len(rows) == CIFAR_IMAGES
    row = rows[0]
    response = cifar_client.get(f"/api/image/{row['id']}")
    assert response.headers["content-type"] == "image/png"
    pixels = Image.open(io.BytesIO(response.content))
    assert np.array_equal(np.asarray(pixels), np.asarray(open_uri(row["uri"])))
    thumb = cifar_client.get(f"/api/thumb/{row['id']}")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (32, 32)


def test_bad_uploads_and_requests_are_one_line_4xx(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, shapes_folder: Path
) -> None:
    monkeypatch.setattr(service_module, "MAX_UPLOAD_BYTES", 1000)
    big = first_image(shapes_folder).read_bytes() + b"\0" * 2000
    cases = [
        (client.post("/api/search", files=upload(big)), 413),
        (client.post("/api/classify", data={"labels": LABELS}, files=upload(big)), 413),
        (client.post("/api/search", files=upload(b"this is not an image")), 400),
        (client.post("/api/classify", data={"labels": LABELS}, files=upload(b"GIF89a broken")), 400),
        (client.post("/api/search", json={"query": "x", "k": 10**6}), 400),
        (client.post("/api/search", json={"query": "x" * 5000}), 400),
        (client.post("/api/search", json={"query": "x", "where": "no_such_column = 1"}), 400),
        (client.post("/api/search", json={"query": "x", "limit": 3}), 400),
        (client.post("/api/search", json=["x"]), 400),
        (client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (client.post("/api/search", json={"id": "no-such-id"}), 404),
        (client.post("/api/classify", data={"labels": "/etc/passwd"}, files=upload(first_image(shapes_folder))), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail


def test_an_oversized_body_is_refused_before_it_is_read(client: TestClient) -> None:
    chunks = (b"x" * 2**20 for _ in range(30))  # 30 MB, no Content-Length: counted as it arrives
    response = client.post("/api/search", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_token_is_required_on_every_request(shapes_service: SearchService) -> None:
    token = "a-long-secret-token"
    guarded = TestClient(create_app(shapes_service, token=token), base_url="http://192.0.2.1:7860")
    for path in ("/api/info", "/", "/docs", "/gradio_api/info"):
        assert guarded.get(path).status_code == 401
        assert guarded.get(path, headers={"Authorization": "Bearer wrong-token-here"}).status_code == 403
    assert guarded.get("/api/info", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    first = guarded.get(f"/api/info?token={token}")
    assert first.status_code == 200 and "clipsearch_token" in first.headers["set-cookie"]
    assert guarded.get("/api/info").status_code == 200  # the cookie the first visit set
    # Without a token only requests addressed to the loopback are answered (DNS rebinding).
    open_app = create_app(shapes_service)
    assert TestClient(open_app, base_url="http://evil.example").get("/api/info").status_code == 403
    assert TestClient(open_app, base_url="http://localhost:7860").get("/api/info").status_code == 200


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_serving_writes_nothing_and_picks_up_a_reindex(tmp_path: Path, web_root: Path, shapes_folder: Path) -> None:
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    root = tmp_path / "indexes"
    assert run_cli("index", folder, "--name", "live", "--root", root, "--workers", "0", *TINY)[0] == 0
    service = SearchService("live", root)
    live = TestClient(create_app(service), base_url=LOOPBACK)
    before = tree(root)
    assert live.post("/api/search", json={"query": "a circle", "k": 3}).status_code == 200
    assert live.get("/api/info").json()["counts"]["images"] == SHAPES_IMAGES
    assert tree(root) == before  # no lock file, no manifest, no FAISS file written

    shutil.copy(first_image(folder), folder / "new.png")
    Image.open(folder / "new.png").rotate(90).save(folder / "new.png")
    assert run_cli("index", folder, "--name", "live", "--root", root, "--workers", "0", *TINY)[0] == 0
    assert live.get("/api/info").json()["counts"]["images"] == SHAPES_IMAGES + 1
    assert live.post("/api/search", json={"id": "new.png", "k": 1}).json()["hits"][0]["id"] == "new.png"
    assert live.get("/api/thumb/new.png").status_code == 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_starts_answers_and_stops_on_ctrl_c(web_root: Path) -> None:
    """On 0.0.0.0 without --token, a generated token is printed and required; Ctrl-C ends with exit code 0."""
    port = free_port()
    started = time.monotonic()
    command = [sys.executable, "-m", "clipsearch", "serve", SHAPES_INDEX, "--root", str(web_root), "--port", str(port)]
    server = subprocess.Popen([*command, "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        printed = [server.stderr.readline().decode() for _ in range(4)]  # serving …, token …, open …?token=
        token = next(line.split("?token=")[1].strip() for line in printed if "?token=" in line)
        url = f"http://127.0.0.1:{port}/api/info"
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() - started < 120, "no answer in 120 s"
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                ) as answer:
                    info = answer.read()
                break
            except urllib.error.HTTPError:  # an answer (a refused token): not a server still starting
                raise
            except OSError:
                time.sleep(0.05)
        print(f"\nclipsearch serve: first /api/info answer {time.monotonic() - started:.2f} s after start")
        assert f'"images": {SHAPES_IMAGES}'.encode() in info
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url)
        assert refused.value.code == 401
        server.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        _, stderr = server.communicate(timeout=30)
        print(f"clipsearch serve: stopped {time.monotonic() - stopping:.2f} s after SIGINT")
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, stderr
    assert b"Traceback" not in stderr and "serving index 'shapes'" in printed[0]


def test_serve_without_the_web_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, web_root: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name, *a)
    )
    code, stdout, stderr = run_cli("serve", SHAPES_INDEX, "--root", web_root)
    assert code == 1 and stdout == ""
    assert stderr.strip() == "error: serve needs gradio, which is not installed: pip install 'clipsearch[web]'"
