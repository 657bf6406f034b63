import hashlib
import urllib.request

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.sources.download import fetch


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "remote" / "archive.bin"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 4000)  # ~1 MB: spans several read chunks
    return path


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_file_url_is_fetched_and_verified(tmp_path, source):
    dest_dir = tmp_path / "cache"

    fetched = fetch(source.as_uri(), dest_dir, md5=md5_of(source))

    assert fetched == dest_dir / "archive.bin"
    assert fetched.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest_dir.iterdir()) == ["archive.bin"]  # no temp file left


def test_filename_overrides_the_url_name(tmp_path, source):
    fetched = fetch(source.as_uri(), tmp_path / "cache", filename="renamed.bin")
    assert fetched.name == "renamed.bin" and fetched.read_bytes() == source.read_bytes()


def test_existing_file_with_right_md5_is_reused_without_fetching(tmp_path, source, monkeypatch):
    dest_dir = tmp_path / "cache"
    expected_md5 = md5_of(source)
    fetch(source.as_uri(), dest_dir, md5=expected_md5)
    monkeypatch.setattr(urllib.request, "urlopen", pytest.fail)

    assert fetch(source.as_uri(), dest_dir, md5=expected_md5).read_bytes() == source.read_bytes()


def test_existing_file_with_wrong_md5_is_downloaded_again(tmp_path, source):
    dest_dir = tmp_path / "cache"
    dest_dir.mkdir()
    (dest_dir / "archive.bin").write_bytes(b"truncated")

    fetched = fetch(source.as_uri(), dest_dir, md5=md5_of(source))

    assert fetched.read_bytes() == source.read_bytes()


def test_wrong_md5_is_refused_and_leaves_no_file(tmp_path, source):
    dest_dir = tmp_path / "cache"

    with pytest.raises(ClipsearchError, match="corrupt") as caught:
        fetch(source.as_uri(), dest_dir, md5="0" * 32)

    assert "\n" not in str(caught.value)
    assert list(dest_dir.iterdir()) == []


@pytest.mark.parametrize("offline_var", ["HF_HUB_OFFLINE", "CLIPSEARCH_OFFLINE"])
def test_offline_refuses_http_without_touching_the_network(tmp_path, monkeypatch, offline_var):
    for name in ("HF_HUB_OFFLINE", "CLIPSEARCH_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(offline_var, "1")
    monkeypatch.setattr(urllib.request, "urlopen", pytest.fail)

    with pytest.raises(ClipsearchError, match="offline") as caught:
        fetch("https://example.com/data/cifar.tar.gz", tmp_path / "cache")

    message = str(caught.value)
    assert "https://example.com/data/cifar.tar.gz" in message and "--data-dir" in message
    assert "\n" not in message
    assert not (tmp_path / "cache").exists()


def test_unreachable_url_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "archive.bin"

    with pytest.raises(ClipsearchError, match="cannot download") as caught:
        fetch(missing.as_uri(), tmp_path / "cache")

    assert "\n" not in str(caught.value)
    assert list((tmp_path / "cache").iterdir()) == []
