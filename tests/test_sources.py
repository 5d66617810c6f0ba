"""Tests of selfsup.data.sources: every source, offline, against files in the real formats."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import selfsup.data.sources as sources
from fakedata import (
    FASHION_CLASSES,
    stl_marker_image,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_image_folder,
    write_stl10,
)
from selfsup.data.sources import DATASET_SPLITS, dataset_names, default_data_root, load_dataset
from selfsup.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def no_system_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the system Fashion-MNIST folder at an empty temp dir, whatever the machine has."""
    system = tmp_path / "system-fashion-mnist"
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [system])
    monkeypatch.delenv("SELFSUP_DATA", raising=False)
    return system


def _mapped_files(tensor: torch.Tensor) -> list[str]:
    """The files whose memory mapping contains ``tensor``'s data (Linux /proc/self/maps)."""
    address = tensor.data_ptr()
    files = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) == 6:
            files.append(fields[5])
    return files


# --- names, splits, roots -----------------------------------------------------------------


def test_dataset_names_and_splits() -> None:
    names = ["cache:PATH", "cifar10", "cifar100", "fashion-mnist", "imagefolder:PATH", "lfw"]
    names += ["stl10", "synthetic"]
    assert dataset_names() == names
    assert sorted(DATASET_SPLITS) == names
    assert DATASET_SPLITS["stl10"] == ("train", "test", "unlabeled", "train+unlabeled")


def test_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    for bad in ("imagenet", "imagefolder"):
        with pytest.raises(ConfigError) as err:
            load_dataset(bad, root=tmp_path)
        for name in dataset_names():
            assert name in str(err.value)


def test_unknown_split_lists_valid_splits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train, test, unlabeled, train\\+unlabeled"):
        load_dataset("stl10", "val", root=tmp_path)
    with pytest.raises(ConfigError, match=r"'validation'.*train, test"):
        load_dataset("synthetic", "validation")
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        load_dataset(f"imagefolder:{tmp_path}", "unlabeled", root=tmp_path)


def test_bad_image_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("synthetic", image_size=0)


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_root() == tmp_path / "home" / ".cache" / "selfsup"
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    assert default_data_root() == tmp_path / "data"
    # root=None reads from the default root
    written = write_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_test=3)
    assert torch.equal(
        load_dataset("fashion-mnist", "test").labels, torch.from_numpy(written["test"][1])
    )


# --- Fashion-MNIST --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    written = write_fashion_mnist(tmp_path / "fashion-mnist", n_train=11, n_test=5, gz=gz)
    for split in ("train", "test"):
        data = load_dataset("fashion-mnist", split, root=tmp_path)
        images, labels = written[split]
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(labels), 1, 28, 28)
        assert np.array_equal(data.images.numpy(), images)
        assert data.labels.dtype == torch.int64 and np.array_equal(data.labels.numpy(), labels)
        assert data.classes == FASHION_CLASSES
        assert (data.name, data.split) == ("fashion-mnist", split)


def test_fashion_mnist_search_order(tmp_path: Path, no_system_fashion_mnist: Path) -> None:
    tv = write_fashion_mnist(tmp_path / "root" / "FashionMNIST" / "raw", n_train=3, seed=3)
    got = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert np.array_equal(got.images.numpy(), tv["train"][0])  # torchvision's layout works
    ours = write_fashion_mnist(tmp_path / "root" / "fashion-mnist", n_train=4, seed=2)
    got = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert np.array_equal(got.images.numpy(), ours["train"][0])  # root/fashion-mnist beats it
    system = write_fashion_mnist(no_system_fashion_mnist, n_train=5, seed=1, gz=False)
    got = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert np.array_equal(got.images.numpy(), system["train"][0])  # the system copy beats both


def test_fashion_mnist_missing_says_where_it_looked(
    tmp_path: Path, no_system_fashion_mnist: Path
) -> None:
    (tmp_path / "fashion-mnist").mkdir()
    write_fashion_mnist(tmp_path / "fashion-mnist")
    (tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(err.value)
    for place in (no_system_fashion_mnist, tmp_path / "fashion-mnist", tmp_path / "FashionMNIST"):
        assert str(place) in message
    assert "train-labels-idx1-ubyte" in message
    assert "data.download=true" in message and "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_download_goes_through_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, train, download))
            write_fashion_mnist(Path(root) / "FashionMNIST" / "raw", n_test=7)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DataError):
        load_dataset("fashion-mnist", "test", root=tmp_path)  # download=False: no fetching
    assert calls == []
    data = load_dataset("fashion-mnist", "test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)] and len(data) == 7


@pytest.mark.parametrize(
    ("name", "cls", "split", "write"),
    [
        ("cifar10", "CIFAR10", "test", lambda root: write_cifar10(root, n_test=5)),
        ("cifar100", "CIFAR100", "train", lambda root: write_cifar100(root, n_train=5)),
        ("stl10", "STL10", "train+unlabeled", lambda root: write_stl10(root, 2, 1, 3)),
    ],
)
def test_download_goes_through_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, cls: str, split: str, write
) -> None:
    import torchvision.datasets

    calls = []

    def fake(root: str, **kwargs: object) -> None:
        calls.append((root, kwargs))
        write(Path(root))

    monkeypatch.setattr(torchvision.datasets, cls, fake)
    data = load_dataset(name, split, root=tmp_path / "new", download=True)
    assert len(data) == 5 and len(calls) == 1
    root, kwargs = calls[0]
    assert root == str(tmp_path / "new") and kwargs["download"] is True
    if name == "stl10":
        assert kwargs["split"] == split
    else:
        assert kwargs["train"] == (split == "train")
    load_dataset(name, split, root=tmp_path / "new", download=True)
    assert len(calls) == 1  # present now: no second download


def test_failed_download_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import urllib.error

    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="no route to host"):
        load_dataset("cifar10", root=tmp_path, download=True)


@pytest.mark.parametrize("damage", ["magic", "truncated", "labels-swapped"])
def test_fashion_mnist_bad_file_is_named(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "fashion-mnist"
    write_fashion_mnist(folder, gz=False)
    images = folder / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    if damage == "magic":
        data[3] = 0x01
        images.write_bytes(bytes(data))
    elif damage == "truncated":
        images.write_bytes(bytes(data[:-10]))
    else:  # a labels file where images belong
        images.write_bytes((folder / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_corrupt_gzip_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    write_fashion_mnist(folder)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(labels.read_bytes())[:-12] + b"junk")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


# --- CIFAR --------------------------------------------------------------------------------


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_round_trip(tmp_path: Path, str_keys: bool) -> None:
    written = write_cifar10(tmp_path, n_per_batch=2, n_test=3, str_keys=str_keys)
    for split, n in (("train", 10), ("test", 3)):
        data = load_dataset("cifar10", split, root=tmp_path)
        images, labels = written[split]
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert np.array_equal(data.images.numpy(), images)
        assert np.array_equal(data.labels.numpy(), labels)
        assert data.classes == written["classes"]


def test_cifar_rows_are_rgb_planes(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, n_per_batch=1, n_test=1)
    data = load_dataset("cifar10", "test", root=tmp_path)
    # the channel c, row h, column w pixel is element c*1024 + h*32 + w of the stored row
    flat = written["test"][0][0].reshape(-1)
    assert data.images[0, 2, 5, 7] == flat[2 * 1024 + 5 * 32 + 7]
    assert data.images[0, 1, 31, 0] == flat[1 * 1024 + 31 * 32]


def test_cifar100_round_trip_uses_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path, n_train=6, n_test=4)
    for split in ("train", "test"):
        data = load_dataset("cifar100", split, root=tmp_path)
        assert np.array_equal(data.images.numpy(), written[split][0])
        assert np.array_equal(data.labels.numpy(), written[split][1])
    assert data.classes == written["classes"] and len(data.classes) == 100


def test_cifar_missing_batch_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4") as err:
        load_dataset("cifar10", root=tmp_path)
    assert "data.download=true" in str(err.value)
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 4  # test split unaffected


def test_cifar_corrupt_pickle_is_named(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="cifar-100-python/test"):
        load_dataset("cifar100", "test", root=tmp_path)


def test_cifar_missing_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(err.value)
    assert "data.download=true" in str(err.value)


# --- STL-10 -------------------------------------------------------------------------------


def test_stl10_round_trip_and_orientation(tmp_path: Path) -> None:
    written = write_stl10(tmp_path, n_train=3, n_test=2, n_unlabeled=2)
    for split in ("train", "test"):
        data = load_dataset("stl10", split, root=tmp_path)
        assert data.images.shape == (len(written[split][1]), 3, 96, 96)
        assert np.array_equal(data.images.numpy(), written[split][0])
        assert np.array_equal(data.labels.numpy(), written[split][1])
        assert data.classes == written["classes"]
    # upright, channels in R, G, B order: red bar at the top, green at the left
    marker = data.images[0]
    assert (marker[0, :8, :] == 250).all() and (marker[0, 8:, :] == 0).all()
    assert (marker[1, :, :8] == 200).all() and (marker[1, :, 8:] == 0).all()
    assert (marker[2, 80:, 88:] == 150).all() and marker[2].sum() == 150 * 16 * 8
    assert np.array_equal(marker.numpy(), stl_marker_image())


def test_stl10_unlabeled_is_a_cached_memmap(tmp_path: Path) -> None:
    written = write_stl10(tmp_path, n_train=2, n_test=1, n_unlabeled=5)
    data = load_dataset("stl10", "unlabeled", root=tmp_path)
    assert np.array_equal(data.images.numpy(), written["unlabeled"])
    assert (data.labels == -1).all() and data.classes == [] and not data.has_labels
    caches = list((tmp_path / "cache").glob("stl10-unlabeled-*.npy"))
    assert len(caches) == 1 and [p.name for p in (tmp_path / "cache").iterdir()] == [caches[0].name]
    if Path("/proc/self/maps").exists():  # the tensor's memory is a mapping of the cache file
        assert str(caches[0]) in _mapped_files(data.images)
    stat = caches[0].stat()
    again = load_dataset("stl10", "unlabeled", root=tmp_path)
    assert torch.equal(again.images, data.images)
    assert caches[0].stat().st_ino == stat.st_ino  # reused, not rewritten
    data.images[0, 0, 0, 0] = 1 + int(data.images[0, 0, 0, 0]) % 255  # copy-on-write
    assert np.array_equal(
        load_dataset("stl10", "unlabeled", root=tmp_path).images.numpy(), written["unlabeled"]
    )


def test_stl10_train_plus_unlabeled(tmp_path: Path) -> None:
    written = write_stl10(tmp_path, n_train=3, n_test=1, n_unlabeled=4)
    data = load_dataset("stl10", "train+unlabeled", root=tmp_path)
    images = np.concatenate([written["train"][0], written["unlabeled"]])
    assert np.array_equal(data.images.numpy(), images)
    assert data.labels.tolist() == written["train"][1].tolist() + [-1] * 4
    assert data.classes == written["classes"]
    assert list((tmp_path / "cache").glob("stl10-train+unlabeled-*.npy"))


def test_stl10_cache_rebuilt_when_source_changes(tmp_path: Path) -> None:
    write_stl10(tmp_path, n_unlabeled=3)
    load_dataset("stl10", "unlabeled", root=tmp_path)
    written = write_stl10(tmp_path, n_unlabeled=2, seed=5)
    data = load_dataset("stl10", "unlabeled", root=tmp_path)
    assert np.array_equal(data.images.numpy(), written["unlabeled"])
    assert len(list((tmp_path / "cache").glob("*"))) == 1  # the stale cache is gone


def test_stl10_truncated_file_is_named(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    x = tmp_path / "stl10_binary" / "unlabeled_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"unlabeled_X\.bin"):
        load_dataset("stl10", "unlabeled", root=tmp_path)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_stl10_missing_says_where_and_how(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    assert len(load_dataset("stl10", "train", root=tmp_path)) == 4
    with pytest.raises(DataError, match=r"unlabeled_X\.bin") as err:
        load_dataset("stl10", "train+unlabeled", root=tmp_path)
    assert str(tmp_path / "stl10_binary") in str(err.value) and "data.download=true" in str(
        err.value
    )


# --- image folders ------------------------------------------------------------------------


def test_imagefolder_round_trip(tmp_path: Path) -> None:
    written = write_image_folder(tmp_path / "pets", classes=["dog", "cat", "bird"], per_class=2)
    name = f"imagefolder:{tmp_path / 'pets'}"
    data = load_dataset(name, root=tmp_path / "data", image_size=16)
    assert data.classes == ["bird", "cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2] == written["labels"]
    assert np.array_equal(data.images.numpy(), np.stack(written["rgb"]).transpose(0, 3, 1, 2))
    assert (data.name, data.split) == (name, "train")


def test_imagefolder_default_size_is_64(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "f", classes=["a"], per_class=1, size=(100, 80))
    assert load_dataset(f"imagefolder:{tmp_path / 'f'}", root=tmp_path).images.shape == (
        1,
        3,
        64,
        64,
    )


def test_imagefolder_any_mode_becomes_rgb(tmp_path: Path) -> None:
    modes = ("RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16")
    written = write_image_folder(tmp_path / "m", classes=None, per_class=7, size=12, modes=modes)
    data = load_dataset(f"imagefolder:{tmp_path / 'm'}", root=tmp_path, image_size=12)
    assert data.images.shape == (7, 3, 12, 12) and data.images.dtype == torch.uint8
    for i, rgb in enumerate(written["rgb"]):
        assert np.array_equal(data.images[i].permute(1, 2, 0).numpy(), rgb), modes[i]
    gray = data.images[1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_imagefolder_transparency_goes_on_white(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red left half; right half transparent black
    PIL.Image.fromarray(rgba).save(folder / "a.png")
    data = load_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=8)
    assert data.images[0, :, 0, 0].tolist() == [255, 0, 0]
    assert data.images[0, :, 0, 7].tolist() == [255, 255, 255]


@pytest.mark.parametrize("wide", [True, False])
def test_imagefolder_resizes_short_side_and_center_crops(tmp_path: Path, wide: bool) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    pixels = np.zeros((40, 120, 3), np.uint8)  # 120 wide: 30 red | 60 green | 30 blue
    pixels[:, :30, 0], pixels[:, 30:90, 1], pixels[:, 90:, 2] = 255, 255, 255
    image = PIL.Image.fromarray(pixels if wide else pixels.transpose(1, 0, 2))
    image.save(folder / "a.png")
    data = load_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=10)
    assert data.images.shape == (1, 3, 10, 10)
    out = data.images[0] if wide else data.images[0].transpose(1, 2)
    # 120x40 -> 30x10 (red 0-7.5, green 7.5-22.5, blue 22.5-30) -> columns 10-20: all green
    assert (out[1] == 255).all() and (out[0] == 0).all() and (out[2] == 0).all()


def test_imagefolder_odd_sizes_and_extensions(tmp_path: Path) -> None:
    folder = tmp_path / "mixed" / "only"
    write_image_folder(folder.parent, classes=["only"], per_class=1, size=(37, 23))
    PIL.Image.new("RGB", (5, 61), "blue").save(folder / "UPPER.PNG")
    PIL.Image.new("RGB", (50, 50), "red").save(folder / "photo.JPEG", quality=95)
    (folder / "notes.txt").write_text("not an image")
    data = load_dataset(f"imagefolder:{folder.parent}", root=tmp_path, image_size=20)
    assert data.images.shape == (3, 3, 20, 20) and data.labels.tolist() == [0, 0, 0]
    assert data.images[0, :, 10, 10].tolist() == [0, 0, 255]  # sorted: "UPPER" < "img"


def test_imagefolder_flat_folder_is_unlabeled(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "flat", classes=None, per_class=4)
    data = load_dataset(f"imagefolder:{tmp_path / 'flat'}", root=tmp_path, image_size=16)
    assert len(data) == 4 and data.labels.tolist() == [-1] * 4 and data.classes == []


def test_imagefolder_splits(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    train = write_image_folder(root / "train", classes=["a", "b"], per_class=2, seed=1)
    val = write_image_folder(root / "val", classes=["a", "b"], per_class=1, seed=2)
    name = f"imagefolder:{root}"
    got = load_dataset(name, "train", root=tmp_path, image_size=16)
    assert np.array_equal(got.images.numpy(), np.stack(train["rgb"]).transpose(0, 3, 1, 2))
    got = load_dataset(name, "test", root=tmp_path, image_size=16)  # val stands in for test
    assert np.array_equal(got.images.numpy(), np.stack(val["rgb"]).transpose(0, 3, 1, 2))
    test = write_image_folder(root / "test", classes=["a", "b"], per_class=3, seed=3)
    assert len(load_dataset(name, "test", root=tmp_path, image_size=16)) == len(test["rgb"])


def test_imagefolder_test_split_takes_the_train_splits_classes(tmp_path: Path) -> None:
    """Issue 22.4: each split took its classes from its own non-empty folders, so with
    ``test/a`` empty the test images of ``b`` were labelled 0, class ``a`` in training (kNN
    0.0%). The test split is labelled by the train split's classes (a cached test split is
    rebuilt when they change), and a test class the train split lacks is a DataError."""
    root, name = tmp_path / "ds", f"imagefolder:{tmp_path / 'ds'}"
    write_image_folder(root / "train", classes=["b", "c"], per_class=2, seed=1)
    write_image_folder(root / "test", classes=["b", "c"], per_class=2, seed=2)
    (root / "test" / "a").mkdir()
    test = load_dataset(name, "test", root=tmp_path, image_size=16)
    assert test.classes == ["b", "c"] and test.labels.tolist() == [0, 0, 1, 1]
    write_image_folder(root / "train", classes=["a"], per_class=2, seed=3)
    train = load_dataset(name, "train", root=tmp_path, image_size=16)
    test = load_dataset(name, "test", root=tmp_path, image_size=16)
    assert train.classes == test.classes == ["a", "b", "c"]
    assert test.labels.tolist() == [1, 1, 2, 2]
    write_image_folder(root / "test", classes=["d"], per_class=1, seed=4)
    with pytest.raises(DataError, match=r"class 'd'.*the train split.*has no.*a, b, c"):
        load_dataset(name, "test", root=tmp_path, image_size=16)


def test_a_test_folder_inside_a_train_split_of_class_folders_is_no_class(tmp_path: Path) -> None:
    """``PATH/<class>`` with ``PATH/test/<class>``: PATH is the train split and PATH/test the
    test split; the test images used to be trained on as well, as a class named 'test'."""
    write_image_folder(tmp_path / "ds", classes=["a", "b"], per_class=2, seed=1)
    write_image_folder(tmp_path / "ds" / "test", classes=["a", "b"], per_class=1, seed=2)
    name = f"imagefolder:{tmp_path / 'ds'}"
    train = load_dataset(name, "train", root=tmp_path, image_size=16)
    test = load_dataset(name, "test", root=tmp_path, image_size=16)
    assert train.classes == test.classes == ["a", "b"] and len(train) == 4
    assert not [f for f in train.files if f.startswith("test/")]
    assert test.files == ["a/img000.png", "b/img000.png"] and test.labels.tolist() == [0, 1]


def test_imagefolder_missing_test_split_lists_subfolders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "ds", classes=["apple", "pear"], per_class=1)
    name = f"imagefolder:{tmp_path / 'ds'}"
    assert load_dataset(name, root=tmp_path, image_size=16).classes == ["apple", "pear"]
    with pytest.raises(DataError, match=r"test.*val.*apple, pear"):
        load_dataset(name, "test", root=tmp_path, image_size=16)


def test_imagefolder_empty_or_absent_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", root=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", root=tmp_path)
    with pytest.raises(ConfigError, match="imagefolder:PATH"):
        load_dataset("imagefolder:", root=tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", "truncated"])
def test_imagefolder_corrupt_image_is_named(tmp_path: Path, content: bytes | str) -> None:
    written = write_image_folder(tmp_path / "f", classes=["a", "b"], per_class=2, size=64)
    bad = written["paths"][2]
    bad.write_bytes(bad.read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(DataError, match="remove or replace") as err:
        load_dataset(
            f"imagefolder:{tmp_path / 'f'}", root=tmp_path, image_size=16, on_bad_image="fail"
        )
    assert str(bad) in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))  # no half-written cache


def test_imagefolder_cache_reused_then_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    written = write_image_folder(tmp_path / "f", classes=["a", "b"], per_class=2)
    name = f"imagefolder:{tmp_path / 'f'}"
    first = load_dataset(name, root=tmp_path, image_size=16)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("imagefolder-*.npy"))) == 1
    assert len(list(cache.glob("imagefolder-*.json"))) == 1

    real_open = PIL.Image.open

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    second = load_dataset(name, root=tmp_path, image_size=16)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == ["a", "b"]
    if Path("/proc/self/maps").exists():
        assert any(f.endswith(".npy") for f in _mapped_files(second.images))

    # another image_size, or a changed file, needs decoding again
    with pytest.raises(DataError, match="decoded an image"):
        load_dataset(name, root=tmp_path, image_size=8)
    monkeypatch.setattr(PIL.Image, "open", real_open)
    changed = written["paths"][1]
    new_rgb = np.full((16, 16, 3), 7, np.uint8)
    PIL.Image.fromarray(new_rgb).save(changed)
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    third = load_dataset(name, root=tmp_path, image_size=16)
    assert (third.images[1] == 7).all()
    assert torch.equal(third.images[0], first.images[0])
    # the stale cache of this folder and size is gone; the size-8 one was never finished
    assert len(list(cache.glob("imagefolder-*.npy"))) == 1


# --- synthetic ----------------------------------------------------------------------------


def test_synthetic_shapes_classes_and_determinism() -> None:
    start = time.perf_counter()
    train = load_dataset("synthetic", "train")
    elapsed = time.perf_counter() - start
    test = load_dataset("synthetic", "test")
    assert train.images.shape == (4096, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1024, 3, 32, 32) and test.labels.dtype == torch.int64
    assert len(train.classes) == 10 and len(set(train.classes)) == 10
    assert "circle-striped" in train.classes
    assert train.labels.bincount(minlength=10).min() >= 400
    assert test.labels.bincount(minlength=10).min() >= 100
    again = load_dataset("synthetic", "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert not torch.equal(train.images[:1024], test.images)
    assert elapsed < 2.0  # vectorised: well under a second on a normal machine
    assert load_dataset("synthetic", "test", image_size=48).images.shape == (1024, 3, 48, 48)


def test_synthetic_images_vary_within_a_class() -> None:
    data = load_dataset("synthetic", "test")
    images = data.images.float()
    # per-image colour and position: images of one class are not near-copies of each other
    one_class = images[data.labels == 0]
    assert one_class.std(0).mean() > 40
    # the backgrounds (corners) differ in colour between images of the same class
    assert one_class[:, :, 0, 0].std(0).mean() > 40


def test_synthetic_raw_pixels_are_not_linearly_separable() -> None:
    """A ridge-regression classifier on raw pixels stays near chance: the task needs features."""
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    x = torch.cat([train.images.flatten(1).float() / 255, torch.ones(len(train), 1)], 1)
    xt = torch.cat([test.images.flatten(1).float() / 255, torch.ones(len(test), 1)], 1)
    y = torch.nn.functional.one_hot(train.labels, 10).float()
    w = torch.linalg.solve(x.T @ x + 10 * torch.eye(x.shape[1]), x.T @ y)
    accuracy = ((xt @ w).argmax(1) == test.labels).float().mean().item()
    assert accuracy < 0.3


class _RunsCode:
    """A pickle payload that, when unpickled by ``pickle.load``, writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("batch", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_cifar_file_that_carries_code_is_refused_without_running_it(
    tmp_path: Path, batch: str
) -> None:
    """Issue #22.2: ``pickle.load`` ran whatever a batch file names; only plain containers
    and numpy arrays may be built now, anything else is refused by name."""
    import pickle

    write_cifar10(tmp_path)
    marker = tmp_path / "marker"
    hostile = {b"data": _RunsCode(marker), b"labels": [0], b"label_names": [b"a"]}
    (tmp_path / "cifar-10-batches-py" / batch).write_bytes(pickle.dumps(hostile, protocol=2))
    split = "test" if batch == "test_batch" else "train"
    with pytest.raises(DataError, match=f"{batch}.*(getattr|pathlib)") as err:
        load_dataset("cifar10", split, root=tmp_path)
    assert not marker.exists()
    assert "never runs code" in str(err.value)
