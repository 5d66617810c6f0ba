"""Bad files never crash a run: image folders skip (and report) or refuse unusable files; damaged
Fashion-MNIST / CIFAR / STL-10 files are a DataError naming the file, never a raw traceback."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import selfsup.data.sources as sources
from fakedata import write_cifar10, write_cifar100, write_fashion_mnist, write_stl10
from selfsup.config import DataConfig
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.fields import choices_of

SIZE = 16  # side of every good image, and the decode size: good images load pixel-exactly
BOMB_LIMIT = 5000  # PIL.Image.MAX_IMAGE_PIXELS in these tests: warns above it, raises above 2x


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "no-system-dir"])
    monkeypatch.delenv("SELFSUP_DATA", raising=False)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


# --- building a folder with every kind of file --------------------------------------------


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _good(path: Path, mode: str, seed: int) -> np.ndarray:
    """Save a SIZE x SIZE image of ``mode`` at ``path``; return the RGB it must load as."""
    rgb = _rgb(seed)
    image = PIL.Image.fromarray(rgb)
    if mode == "RGB":
        image.save(path)
        return rgb
    if mode == "RGBA":  # opaque: RGB unchanged
        PIL.Image.fromarray(np.dstack([rgb, np.full((SIZE, SIZE), 255, np.uint8)])).save(path)
        return rgb
    if mode in ("L", "LA"):
        gray = image.convert("L")
        gray.convert(mode).save(path)
        return np.repeat(np.asarray(gray)[:, :, None], 3, 2)
    if mode == "1":  # bilevel: black or white
        bits = image.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
        bits.save(path)
        return np.repeat(np.asarray(bits.convert("L"))[:, :, None], 3, 2)
    if mode == "P":
        palette = image.quantize(colors=16)
        palette.save(path)
        return np.asarray(palette.convert("RGB"))
    if mode == "P-transparent":  # palette entry 0 transparent: composited onto white
        palette = image.quantize(colors=16)
        palette.save(path, transparency=0)
        out = np.asarray(palette.convert("RGB")).copy()
        out[np.asarray(palette) == 0] = 255
        return out
    if mode == "CMYK":
        cmyk = image.convert("CMYK")
        cmyk.save(path)
        return np.asarray(cmyk.convert("RGB"))
    if mode == "I;16":  # 16-bit gray: v * 257 loads as v
        gray = np.asarray(image.convert("L"))
        PIL.Image.fromarray(gray.astype(np.uint16) * 257).save(path)
        assert PIL.Image.open(path).mode.startswith("I")  # really a 16-bit file
        return np.repeat(gray[:, :, None], 3, 2)
    raise ValueError(mode)


GOOD_A = {
    "a00-rgb.png": "RGB",
    "a01-gray.png": "L",
    "a02-gray-alpha.png": "LA",
    "a03-palette.png": "P",
    "a04-bilevel.png": "1",
}
GOOD_B = {
    "b00-rgba.png": "RGBA",
    "b01-cmyk.tif": "CMYK",
    "b02-gray16.png": "I;16",
    "b03-palette-transparent.png": "P-transparent",
    "b04-photo.JPG": "RGB",
}


def _png_bytes(seed: int, size: int = 64) -> bytes:
    """A random RGB PNG file's bytes (64 x 64 by default: big enough to truncate)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build_folder(tmp_path: Path) -> dict[str, object]:
    """``tmp_path/pets``: classes ``a`` and ``b`` with one good image of every mode each, and
    every kind of bad file; returns what must load and what must be skipped (path -> words the
    reason must contain)."""
    root = tmp_path / "pets"
    a, b = root / "a", root / "b"
    a.mkdir(parents=True)
    b.mkdir()
    rgb, labels = [], []
    for label, (folder, files) in enumerate(((a, GOOD_A), (b, GOOD_B))):
        for i, (name, mode) in enumerate(files.items()):
            if name.endswith(".JPG"):  # lossy: only check it loads, via its own decode
                PIL.Image.fromarray(_rgb(99)).save(folder / name, quality=95)
                with PIL.Image.open(folder / name) as im:
                    rgb.append(np.asarray(im.convert("RGB")))
            else:
                rgb.append(_good(folder / name, mode, seed=10 * label + i))
            labels.append(label)
    # a symlink to a good image inside the folder is read like the file itself
    (b / "b05-link-inside.png").symlink_to(a / "a00-rgb.png")
    rgb.append(rgb[0])
    labels.append(1)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png_bytes(5, SIZE))
    for i in range(3):
        (outside / f"o{i}.png").write_bytes(_png_bytes(6 + i, SIZE))

    png = _png_bytes(1)
    bad: dict[Path, tuple[str, ...]] = {}

    def add(path: Path, content: bytes | None, *reason: str) -> None:
        if content is not None:
            path.write_bytes(content)
        bad[path] = reason

    add(a / "bad-truncated.png", png[:200], "truncated")
    add(a / "bad-corrupt.png", png[:60] + bytes(300) + png[360:], "corrupt")
    add(a / "bad-garbage.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt")
    add(a / "bad-text.jpg", b"this is not a picture\n", "not an image")
    add(b / "bad-empty.png", b"", "empty")
    big = tmp_path / "big.png"
    PIL.Image.new("RGB", (120, 120), "red").save(big)  # > 2 x limit: PIL raises
    add(b / "bad-bomb.png", big.read_bytes(), "too large")
    PIL.Image.new("RGB", (80, 80), "red").save(big)  # > limit: PIL only warns
    add(b / "bad-bomb-warning.png", big.read_bytes(), "too large")
    unreadable = b / "bad-unreadable.png"
    add(unreadable, _png_bytes(2, SIZE), "permission denied")
    unreadable.chmod(0)
    (a / "bad-link-outside.png").symlink_to(outside / "secret.png")
    bad[a / "bad-link-outside.png"] = ("outside the image folder", "not followed")
    (a / "bad-link-broken.png").symlink_to(tmp_path / "nowhere.png")
    bad[a / "bad-link-broken.png"] = ("broken symbolic link",)
    (a / "sub-outside").symlink_to(outside, target_is_directory=True)  # a folder link in a class
    bad[a / "sub-outside"] = ("outside the image folder", "not followed")
    (root / "c-linked-class").symlink_to(outside, target_is_directory=True)  # a class link
    bad[root / "c-linked-class"] = ("outside the image folder", "not followed")

    # ignored without a report: not candidates at all
    (root / "empty-class").mkdir()
    (root / "notes-class").mkdir()
    (root / "notes-class" / "readme.txt").write_text("no images here")
    (a / ".hidden.png").write_bytes(b"garbage, but hidden")
    (a / "notes.txt").write_text("not an image extension")
    return {"root": root, "rgb": rgb, "labels": labels, "bad": bad, "unreadable": unreadable}


@pytest.fixture
def unreadable_as_root(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``chmod 000`` does not stop root: there, opening the file raises PermissionError."""

    def deny(path: Path) -> None:
        if os.geteuid() != 0:
            return
        real_open, real_image_open = builtins.open, PIL.Image.open

        def is_denied(file: object) -> bool:
            return isinstance(file, (str, os.PathLike)) and Path(file) == path

        def fake_open(file: object, *args: object, **kwargs: object) -> object:
            if is_denied(file):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        def fake_image_open(fp: object, *args: object, **kwargs: object) -> object:
            if is_denied(fp):
                raise PermissionError(13, "Permission denied", str(fp))
            return real_image_open(fp, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(PIL.Image, "open", fake_image_open)

    return deny


def _report(tmp_path: Path) -> dict[str, object]:
    reports = list((tmp_path / "cache").glob("imagefolder-*.bad.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


# --- image folders ------------------------------------------------------------------------


def test_config_key_and_choices() -> None:
    assert DataConfig().on_bad_image == "skip"
    assert choices_of(DataConfig, "on_bad_image") == ("skip", "fail")


def test_every_good_mode_loads_and_every_bad_file_is_skipped_and_reported(
    tmp_path: Path, unreadable_as_root: Callable[[Path], None], capsys: pytest.CaptureFixture
) -> None:
    built = build_folder(tmp_path)
    unreadable_as_root(built["unreadable"])
    data = load_dataset(f"imagefolder:{built['root']}", root=tmp_path, image_size=SIZE)

    expected = np.stack(built["rgb"]).transpose(0, 3, 1, 2)
    assert data.images.shape == (len(built["rgb"]), 3, SIZE, SIZE) == (11, 3, 16, 16)
    assert data.images.dtype == torch.uint8
    assert data.classes == ["a", "b"]  # empty-class, notes-class and the linked class are not
    assert data.labels.tolist() == built["labels"]
    names = [*GOOD_A, *GOOD_B, "link-inside"]
    for i, name in enumerate(names):
        assert np.array_equal(data.images[i].numpy(), expected[i]), name

    report = _report(tmp_path)
    listed = {Path(e["path"]): e["reason"] for e in report["skipped"]}
    assert set(listed) == set(built["bad"])  # nothing hidden, nothing ignored listed
    for path, words in built["bad"].items():
        for word in words:
            assert word in listed[path], (path.name, listed[path])
    assert report["loaded"] == 11 and len(report["skipped"]) == 12
    err = capsys.readouterr().err
    assert "skipped 12 bad image file(s)" in err and ".bad.json" in err


def test_cached_load_decodes_nothing_and_still_reports(
    tmp_path: Path,
    unreadable_as_root: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    built = build_folder(tmp_path)
    unreadable_as_root(built["unreadable"])
    name = f"imagefolder:{built['root']}"
    first = load_dataset(name, root=tmp_path, image_size=SIZE)
    capsys.readouterr()

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    second = load_dataset(name, root=tmp_path, image_size=SIZE)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert "skipped 12 bad image file(s)" in capsys.readouterr().err
    # every image of the split is already decoded: reading all of them (an epoch) cannot fail
    assert int(second.images.sum()) > 0
    # one cache, its sidecar, its report; the scratch file of the build is gone
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 3 and not any("decoding" in f or f.endswith(".tmp") for f in files)


def test_a_new_bad_file_rebuilds_the_cache_and_report(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    for i in range(3):
        _good(root / "x" / f"{i}.png", "RGB", i)
    name = f"imagefolder:{root}"
    assert len(load_dataset(name, root=tmp_path, image_size=SIZE)) == 3
    assert not list((tmp_path / "cache").glob("*.bad.json"))  # no bad file: no report
    (root / "x" / "3.png").write_bytes(b"")
    assert len(load_dataset(name, root=tmp_path, image_size=SIZE)) == 3
    assert [e["reason"] for e in _report(tmp_path)["skipped"]] == ["empty file (0 bytes)"]
    (root / "x" / "3.png").unlink()
    (root / "x" / "4.png").symlink_to(tmp_path / "missing.png")
    assert len(load_dataset(name, root=tmp_path, image_size=SIZE)) == 3
    assert "broken symbolic link" in _report(tmp_path)["skipped"][0]["reason"]


@pytest.mark.parametrize(
    ("bad_name", "content", "reason"),
    [
        ("b.png", b"", "empty file"),
        ("b.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt"),
        ("b.jpeg", b"plain text", "not an image"),
        ("b.png", "truncated", "truncated"),
        ("b.png", "bomb", "too large"),
        ("b.png", "unreadable", "permission denied"),
    ],
)
def test_fail_names_the_bad_file_before_anything_is_cached(
    tmp_path: Path,
    unreadable_as_root: Callable[[Path], None],
    bad_name: str,
    content: bytes | str,
    reason: str,
) -> None:
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    _good(root / "x" / "a.png", "RGB", 0)
    _good(root / "x" / "c.png", "L", 1)
    bad = root / "x" / bad_name
    if content == "truncated":
        bad.write_bytes(_png_bytes(3)[:200])
    elif content == "bomb":
        PIL.Image.new("RGB", (120, 120)).save(bad)
    elif content == "unreadable":
        bad.write_bytes(_png_bytes(3, SIZE))
        bad.chmod(0)
        unreadable_as_root(bad)
    else:
        bad.write_bytes(content)
    name = f"imagefolder:{root}"
    with pytest.raises(DataError) as err:
        load_dataset(name, root=tmp_path, image_size=SIZE, on_bad_image="fail")
    assert str(bad) in str(err.value) and reason in str(err.value)
    assert "on_bad_image" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))
    # the default skips it instead
    assert len(load_dataset(name, root=tmp_path, image_size=SIZE)) == 2


def test_fail_names_a_link_outside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    _good(root / "x" / "a.png", "RGB", 0)
    _good(tmp_path / "outside.png", "RGB", 1)
    (root / "x" / "b.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match="outside the image folder") as err:
        load_dataset(f"imagefolder:{root}", root=tmp_path, image_size=SIZE, on_bad_image="fail")
    assert str(root / "x" / "b.png") in str(err.value)


def test_fail_after_a_skipping_build_still_fails(tmp_path: Path) -> None:
    """A cache built with skip holds no bad images; fail must still refuse the folder."""
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    _good(root / "x" / "a.png", "RGB", 0)
    (root / "x" / "b.png").write_bytes(b"")
    name = f"imagefolder:{root}"
    assert len(load_dataset(name, root=tmp_path, image_size=SIZE)) == 1
    with pytest.raises(DataError, match="empty file") as err:
        load_dataset(name, root=tmp_path, image_size=SIZE, on_bad_image="fail")
    assert str(root / "x" / "b.png") in str(err.value)


def test_full_folder_with_fail_is_a_data_error(
    tmp_path: Path, unreadable_as_root: Callable[[Path], None]
) -> None:
    built = build_folder(tmp_path)
    unreadable_as_root(built["unreadable"])
    with pytest.raises(DataError) as err:
        load_dataset(
            f"imagefolder:{built['root']}", root=tmp_path, image_size=SIZE, on_bad_image="fail"
        )
    assert any(str(p) in str(err.value) for p in built["bad"])
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npy"))


def test_bad_on_bad_image_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="skip, fail"):
        load_dataset(f"imagefolder:{tmp_path}", root=tmp_path, on_bad_image="ignore")


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no images \(.*\.jpg.*\.png") as err:
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", root=tmp_path)
    assert str(tmp_path / "empty") in str(err.value)


def test_only_empty_class_folders_is_a_data_error(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
    (root / "dog" / "notes.txt").write_text("no images")
    (root / "dog" / "deeper").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"imagefolder:{root}", root=tmp_path)


def test_only_links_outside_is_a_data_error_that_says_so(tmp_path: Path) -> None:
    root = tmp_path / "links"
    root.mkdir()
    _good(tmp_path / "outside.png", "RGB", 0)
    (root / "a.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match=r"holds no images.*outside the image folder"):
        load_dataset(f"imagefolder:{root}", root=tmp_path)


def test_no_good_image_is_a_data_error_with_a_report(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.png").write_bytes(b"")
    (root / "x" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="none of the 2 image files") as err:
        load_dataset(f"imagefolder:{root}", root=tmp_path, image_size=SIZE)
    assert str(root / "x" / "a.png") in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))
    assert len(_report(tmp_path)["skipped"]) == 2


# --- damaged files of the published formats -----------------------------------------------


def _damage_idx(folder: Path, how: str) -> Path:
    """Damage train-images (raw, or its .gz); return the damaged file."""
    raw = folder / "train-images-idx3-ubyte"
    data = raw.read_bytes() if raw.exists() else b""
    if how == "empty":
        raw.write_bytes(b"")
    elif how == "garbage":
        raw.write_bytes(np.random.default_rng(0).bytes(4000))
    elif how == "wrong-magic":
        raw.write_bytes(struct.pack(">I", 0x00000804) + data[4:])
    elif how == "truncated":
        raw.write_bytes(data[: len(data) // 2])
    elif how == "too-long":
        raw.write_bytes(data + b"\0" * 100)
    elif how == "header-only":
        raw.write_bytes(data[:6])
    elif how == "huge-dims":  # dimensions whose product overflows int64
        raw.write_bytes(struct.pack(">4I", 0x00000803, 2**32 - 1, 2**32 - 1, 2**32 - 1) + data[16:])
    elif how == "labels-for-images":
        raw.write_bytes((folder / "train-labels-idx1-ubyte").read_bytes())
    elif how == "gz-not-gzip":
        raw.unlink()
        raw = folder / "train-images-idx3-ubyte.gz"
        raw.write_bytes(data)
    elif how == "gz-truncated":
        raw.unlink()
        raw = folder / "train-images-idx3-ubyte.gz"
        raw.write_bytes(gzip.compress(data)[:-20])
    elif how == "labels-count":
        raw = folder / "train-labels-idx1-ubyte"
        labels = raw.read_bytes()
        raw.write_bytes(struct.pack(">II", 0x00000801, 5) + labels[8:13])
    elif how == "labels-range":
        raw = folder / "train-labels-idx1-ubyte"
        labels = bytearray(raw.read_bytes())
        labels[8] = 10
        raw.write_bytes(bytes(labels))
    return raw


IDX_DAMAGE = [
    "empty",
    "garbage",
    "wrong-magic",
    "truncated",
    "too-long",
    "header-only",
    "huge-dims",
    "labels-for-images",
    "gz-not-gzip",
    "gz-truncated",
    "labels-count",
    "labels-range",
]


@pytest.mark.parametrize("how", IDX_DAMAGE)
def test_damaged_idx_is_a_data_error(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "fashion-mnist"
    write_fashion_mnist(folder, gz=False)
    damaged = _damage_idx(folder, how)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert damaged.name in str(err.value)
    assert "re-download" in str(err.value)


def _pickled(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


ROWS = np.zeros((2, 3072), np.uint8)
CIFAR_DAMAGE: dict[str, tuple[str, bytes | Callable[[bytes], bytes]]] = {
    "empty": ("data_batch_1", b""),
    "garbage": ("data_batch_1", np.random.default_rng(1).bytes(3000)),
    "truncated": ("data_batch_1", lambda b: b[: len(b) // 2]),
    "not-a-dict": ("data_batch_1", _pickled([1, 2, 3])),
    "no-data-key": ("data_batch_1", _pickled({b"labels": [1, 2]})),
    "no-labels-key": ("data_batch_1", _pickled({b"data": ROWS})),
    "labels-not-a-list": ("data_batch_1", _pickled({b"data": ROWS, b"labels": 3})),
    "labels-text": ("data_batch_1", _pickled({b"data": ROWS, b"labels": ["cat", "dog"]})),
    "labels-float": ("data_batch_1", _pickled({b"data": ROWS, b"labels": [1.5, 2.0]})),
    "labels-huge": ("data_batch_1", _pickled({b"data": ROWS, b"labels": [2**70, 1]})),
    "labels-count": ("data_batch_1", _pickled({b"data": ROWS, b"labels": [1]})),
    "labels-range": ("data_batch_1", _pickled({b"data": ROWS, b"labels": [1, 10]})),
    "data-ragged": ("data_batch_1", _pickled({b"data": [[1, 2], [3]], b"labels": [1, 2]})),
    "data-wrong-width": ("data_batch_1", _pickled({b"data": ROWS[:, :100], b"labels": [1, 2]})),
    "data-float": ("data_batch_1", _pickled({b"data": ROWS * 1.0, b"labels": [1, 2]})),
    "meta-no-names": ("batches.meta", _pickled({b"num_cases_per_batch": 3})),
    "meta-names-not-a-list": ("batches.meta", _pickled({b"label_names": 10})),
    "meta-garbage": ("batches.meta", b"\x80\x02garbage"),
}


@pytest.mark.parametrize("how", sorted(CIFAR_DAMAGE))
def test_damaged_cifar10_is_a_data_error(tmp_path: Path, how: str) -> None:
    write_cifar10(tmp_path)
    name, content = CIFAR_DAMAGE[how]
    path = tmp_path / "cifar-10-batches-py" / name
    path.write_bytes(content(path.read_bytes()) if callable(content) else content)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(path) in str(err.value)
    assert "re-download" in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "no-labels-key", "meta-no-names"])
def test_damaged_cifar100_is_a_data_error(tmp_path: Path, how: str) -> None:
    write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    if how == "truncated":
        path = folder / "train"
        path.write_bytes(path.read_bytes()[:300])
    elif how == "no-labels-key":  # CIFAR-100 has coarse labels but no fine ones here
        path = folder / "train"
        path.write_bytes(_pickled({b"data": ROWS, b"coarse_labels": [1, 2]}))
    else:
        path = folder / "meta"
        path.write_bytes(_pickled({b"coarse_label_names": [b"x"]}))
    with pytest.raises(DataError, match="re-download") as err:
        load_dataset("cifar100", root=tmp_path)
    assert str(path) in str(err.value)


STL_DAMAGE = {
    "x-empty": ("train", "train_X.bin", b""),
    "x-truncated": ("train", "train_X.bin", lambda b: b[:-7]),
    "x-garbage-short": ("train", "train_X.bin", b"garbage"),
    "y-short": ("train", "train_y.bin", b"\x01\x02"),
    "y-empty": ("train", "train_y.bin", b""),
    "y-out-of-range": ("test", "test_y.bin", bytes([0, 11, 3])),
    "unlabeled-empty": ("unlabeled", "unlabeled_X.bin", b""),
    "unlabeled-truncated": ("train+unlabeled", "unlabeled_X.bin", lambda b: b[:-100]),
    "names-not-text": ("train", "class_names.txt", b"\xff\xfe\x00\x81"),
    "names-wrong-count": ("train", "class_names.txt", b"cat\ndog\n"),
}


@pytest.mark.parametrize("how", sorted(STL_DAMAGE))
def test_damaged_stl10_is_a_data_error(tmp_path: Path, how: str) -> None:
    write_stl10(tmp_path)
    split, name, content = STL_DAMAGE[how]
    path = tmp_path / "stl10_binary" / name
    path.write_bytes(content(path.read_bytes()) if callable(content) else content)
    with pytest.raises(DataError) as err:
        load_dataset("stl10", split, root=tmp_path)
    assert str(path) in str(err.value)
    assert "re-download" in str(err.value)
    assert not list(tmp_path.glob("cache/*.npy"))  # no cache of a damaged file


def test_unreadable_stl10_file_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permission error (simulated: tests may run as root) names the file too."""
    write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "train_y.bin"
    path.chmod(0)
    if os.geteuid() == 0:
        real = np.fromfile

        def denied(file: object, *args: object, **kwargs: object) -> np.ndarray:
            if Path(file) == path:  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", str(file))
            return real(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(np, "fromfile", denied)
    with pytest.raises(DataError, match="Permission denied") as err:
        load_dataset("stl10", "train", root=tmp_path)
    assert str(path) in str(err.value)


SPECIAL_FILES = """
import sys
from pathlib import Path
from selfsup.data.sources import load_dataset
data = load_dataset(f"imagefolder:{sys.argv[1]}", root=sys.argv[2], image_size=16,
                    on_bad_image=sys.argv[3])
print(len(data))
"""


@pytest.mark.parametrize("on_bad_image", ["skip", "fail"])
def test_a_pipe_or_socket_named_png_is_skipped_not_opened(tmp_path: Path, on_bad_image) -> None:
    """Issue #22: a FIFO named x.png hung the run forever (opening it waits for a writer)."""
    import socket
    import subprocess
    import sys

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        PIL.Image.fromarray(_rgb(i)).save(folder / f"good{i}.png")
    os.mkfifo(folder / "x.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "y.jpg"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-c", SPECIAL_FILES, str(tmp_path / "imgs"), str(tmp_path), on_bad_image]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    if on_bad_image == "fail":
        assert proc.returncode == 1 and "DataError" in proc.stderr and "x.png" in proc.stderr
        assert "not a regular file" in proc.stderr
        return
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    listed = {Path(e["path"]).name: e["reason"] for e in _report(tmp_path)["skipped"]}
    assert set(listed) == {"x.png", "y.jpg"}
    assert "named pipe" in listed["x.png"] and "socket" in listed["y.jpg"]
