import builtins
import dataclasses
import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cifar_fixture import make_cifar_archive

from clipsearch.errors import ClipsearchError
from clipsearch.sources import cifar
from clipsearch.sources.cifar import (
    VARIANTS,
    CifarDataset,
    cifar_items,
    is_cifar_uri,
    load_cifar,
    locate_cifar,
    open_cifar_uri,
)
from clipsearch.tasks.prompts import label_set

VARIANT_NAMES = ["cifar10", "cifar100"]


def official_rows(archive, variant, official_set):
    """The archive's images of one official set, read with plain trusted pickle (independent of cifar.py)."""
    spec = VARIANTS[variant]
    rows = []
    with tarfile.open(archive) as tar:
        for filename in spec.files[official_set]:
            batch = pickle.load(tar.extractfile(f"{spec.folder}/{filename}"), encoding="bytes")
            rows.append(batch[b"data"])
    return np.concatenate(rows)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_locate_from_archive_path_extracts_next_to_it(tmp_path, variant):
    archive = make_cifar_archive(tmp_path, variant)

    folder = locate_cifar(variant, archive, download=False)

    assert folder == tmp_path / VARIANTS[variant].folder
    assert (folder / VARIANTS[variant].meta_file).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, folder.name])  # no staging left


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_locate_from_folder_holding_the_archive_then_from_extracted_folder(tmp_path, variant):
    archive = make_cifar_archive(tmp_path, variant)

    folder = locate_cifar(variant, tmp_path, download=False)
    archive.unlink()  # from now on only the extracted data is there

    assert locate_cifar(variant, tmp_path, download=False) == folder
    assert locate_cifar(variant, folder, download=False) == folder


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_split_sizes_are_proportional_and_disjoint(tmp_path, variant):
    ds = load_cifar(variant, make_cifar_archive(tmp_path, variant, n_classes=10), download=False)

    (_, train), (_, val), (test_set, test) = (ds.split_indices(s) for s in ("train", "val", "test"))

    assert (len(train), len(val), len(test)) == (54, 6, 30)
    assert test_set == "test"
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))
    assert ds.images("val").shape == (6, 32, 32, 3) and ds.labels("val").shape == (6,)


def test_val_split_of_the_real_training_set_is_the_documented_permutation():
    ds = CifarDataset("cifar10", Path("/data"), (), np.empty((0, 3072), np.uint8), np.zeros(50_000, np.int64),
                      np.empty((0, 3072), np.uint8), np.zeros(10_000, np.int64))  # fmt: skip

    _, val = ds.split_indices("val")
    _, train = ds.split_indices("train")

    assert (len(train), len(val), len(ds.split_indices("test")[1])) == (45_000, 5_000, 10_000)
    assert val.tolist() == sorted(np.random.default_rng(0).permutation(50_000)[:5_000].tolist())


def test_items_have_stable_ids_and_uris_that_lead_back_to_the_pixels(tmp_path):
    archive = make_cifar_archive(tmp_path, "cifar10")
    ds = load_cifar("cifar10", archive, download=False)
    expected = {official_set: official_rows(archive, "cifar10", official_set) for official_set in ("train", "test")}

    items = cifar_items(ds, "all")

    assert len(items) == 90 and len({item.id for item in items}) == 90
    assert [item.id for item in items] == [item.id for item in cifar_items(load_cifar("cifar10", tmp_path), "all")]
    for item in items:
        split, index = re.fullmatch(r"cifar10/(train|val|test)/(\d{5})", item.id).groups()
        official_set = "test" if split == "test" else "train"
        assert item.uri == f"cifar10:{ds.folder}#{official_set}/{int(index)}"
        assert is_cifar_uri(item.uri)
        image = open_cifar_uri(item.uri)
        assert (image.mode, image.size) == ("RGB", (32, 32))
        row = expected[official_set][int(index)]
        assert np.array_equal(np.asarray(image), row.reshape(3, 32, 32).transpose(1, 2, 0))
        assert item.content_hash == hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest()
        assert item.label_name == ds.label_names[item.label]
        assert (item.source, item.split, item.size, item.mtime) == ("cifar10", split, 3072, 0.0)
    assert {item.split for item in cifar_items(ds, "val")} == {"val"}


def test_open_cifar_uri_reuses_the_loaded_arrays(tmp_path, monkeypatch):
    ds = load_cifar("cifar10", make_cifar_archive(tmp_path, "cifar10"), download=False)
    loads = []
    real_load = cifar.load_batch_file
    monkeypatch.setattr(cifar, "load_batch_file", lambda path: loads.append(path) or real_load(path))

    for item in cifar_items(ds, "all"):
        open_cifar_uri(item.uri)

    assert loads == []


@pytest.mark.parametrize(
    "uri", ["cifar10:/data#valid/3", "cifar1000:/data#train/3", "/data/cat.png", "cifar10:#train/1"]
)
def test_non_cifar_uris_are_recognised_and_refused(uri):
    assert not is_cifar_uri(uri)
    with pytest.raises(ClipsearchError, match="not a CIFAR uri"):
        open_cifar_uri(uri)


def test_cifar100_keeps_raw_fine_names_and_gives_prompt_names_with_spaces(tmp_path):
    ds = load_cifar("cifar100", make_cifar_archive(tmp_path, "cifar100", n_train_per_class=1, n_test_per_class=1))

    assert len(ds.label_names) == 100
    assert "lawn_mower" in ds.label_names and "aquarium_fish" in ds.label_names
    assert ds.classnames == label_set("cifar100")
    lawn_mower = ds.label_names.index("lawn_mower")
    assert {item.label_name for item in cifar_items(ds, "all") if item.label == lawn_mower} == {"lawn_mower"}


class RunsCommand:
    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        return self.payload


@pytest.mark.parametrize("make_payload", [
    lambda marker: (os.system, (f"touch {marker}",)),
    lambda marker: (builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
])  # fmt: skip
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, make_payload):
    folder = locate_cifar("cifar10", make_cifar_archive(tmp_path, "cifar10"), download=False)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": RunsCommand(make_payload(marker))}, f, protocol=2)

    with pytest.raises(ClipsearchError, match=r"refused: the file tries to load \w+\.(system|exec)") as caught:
        load_cifar("cifar10", folder, download=False)

    assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("member_name", ["../escaped", "/tmp/absolute-escape", "cifar-10-batches-py/link"])
def test_archive_entries_outside_its_folder_or_links_are_refused(tmp_path, member_name):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        entry = tarfile.TarInfo(member_name)
        if member_name.endswith("link"):
            entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(entry)
        else:
            entry.size = 4
            tar.addfile(entry, io.BytesIO(b"evil"))

    with pytest.raises(ClipsearchError, match="unsafe archive entry"):
        locate_cifar("cifar10", archive, download=False)

    assert not (tmp_path.parent / "escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def test_archive_of_the_other_variant_is_refused(tmp_path):
    archive = make_cifar_archive(tmp_path, "cifar100", n_train_per_class=1, n_test_per_class=1)

    with pytest.raises(ClipsearchError, match="cifar-10-batches-py"):
        locate_cifar("cifar10", archive, download=False)


def test_missing_data_offline_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default ~/.cache/clipsearch is empty
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    monkeypatch.setattr(urllib.request, "urlopen", pytest.fail)

    for data_dir in (None, tmp_path / "empty"):
        with pytest.raises(ClipsearchError, match="--data-dir") as caught:
            load_cifar("cifar10", data_dir)
        assert "\n" not in str(caught.value)
    with pytest.raises(ClipsearchError, match="CIFAR-100 not found"):
        load_cifar("cifar100", tmp_path, download=False)


def test_nothing_found_downloads_the_official_archive(tmp_path, monkeypatch):
    mirror = make_cifar_archive(tmp_path / "mirror", "cifar10")
    mirrored = dataclasses.replace(
        VARIANTS["cifar10"], url=mirror.as_uri(), md5=hashlib.md5(mirror.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(VARIANTS, "cifar10", mirrored)

    ds = load_cifar("cifar10", tmp_path / "data")

    assert (tmp_path / "data" / mirror.name).read_bytes() == mirror.read_bytes()
    assert ds.folder == (tmp_path / "data" / "cifar-10-batches-py").resolve()
    assert len(cifar_items(ds, "test")) == 30


def test_unknown_variant_and_split_name_the_choices(tmp_path):
    with pytest.raises(ClipsearchError, match="cifar10, cifar100"):
        load_cifar("cifar1000", tmp_path)
    ds = load_cifar("cifar10", make_cifar_archive(tmp_path, "cifar10"))
    with pytest.raises(ClipsearchError, match="train, val, test, all"):
        cifar_items(ds, "validation")
