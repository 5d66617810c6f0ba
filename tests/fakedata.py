"""Tiny datasets written in the exact on-disk formats of the real ones, for offline tests.

Each writer returns the arrays it wrote, in the layout :func:`selfsup.data.sources.load_dataset`
should return them (uint8 (N, C, H, W) images, int64 labels), so tests can compare pixel-exactly.
The images are built independently of the readers (e.g. STL-10's column-major storage is
written here with numpy's Fortran order, not by the reader's transpose).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> Path:
    """IDX: big-endian uint32 magic, one big-endian uint32 per dim, then uint8 data."""
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(
    directory: str | Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four Fashion-MNIST IDX files into ``directory`` (gzipped when ``gz``).

    Returns ``{"train": (images (N, 1, 28, 28) uint8, labels (N,) int64), "test": ...}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, 0x00000803, gz)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, 0x00000801, gz)
        out[split] = (images[:, None], labels.astype(np.int64))
    return out


def _pickle(path: Path, obj: dict, str_keys: bool) -> None:
    """CIFAR's files are Python 2 pickles: their keys load as bytes with encoding="bytes"."""
    if not str_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) and their CIFAR rows: R plane, G plane, B plane, each row-major."""
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    rows = np.stack([np.concatenate([im[c].ravel() for c in range(3)]) for im in images])
    return images, rows


def write_cifar10(
    root: str | Path, n_per_batch: int = 3, n_test: int = 4, seed: int = 0, str_keys: bool = False
) -> dict[str, object]:
    """Write ``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta).

    Returns ``{"train": (images, labels), "test": (images, labels), "classes": [...]}``, train
    in batch order 1..5.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    classes = [f"class{i}" for i in range(10)]
    out: dict[str, object] = {"classes": classes}
    parts = []
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [
        ("test_batch", n_test)
    ]:
        images, rows = _cifar_images(rng, n)
        labels = rng.integers(0, 10, n).tolist()
        batch = {
            "batch_label": name.encode(),
            "labels": labels,
            "data": rows,
            "filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        _pickle(folder / name, batch, str_keys)
        parts.append((images, np.array(labels, dtype=np.int64)))
    out["train"] = tuple(np.concatenate(x) for x in zip(*parts[:5], strict=True))
    out["test"] = parts[5]
    meta = {"label_names": [c.encode() for c in classes], "num_cases_per_batch": n_per_batch}
    _pickle(folder / "batches.meta", meta, str_keys)
    return out


def write_cifar100(
    root: str | Path, n_train: int = 8, n_test: int = 4, seed: int = 0
) -> dict[str, object]:
    """Write ``root/cifar-100-python/`` (train, test, meta) with fine and coarse labels.

    Returns ``{"train": (images, fine labels), "test": ..., "classes": fine names}``.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    classes = [f"fine{i:02d}" for i in range(100)]
    out: dict[str, object] = {"classes": classes}
    for split, n in (("train", n_train), ("test", n_test)):
        images, rows = _cifar_images(rng, n)
        fine = rng.integers(0, 100, n).tolist()
        batch = {
            "data": rows,
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "filenames": [b"x.png"] * n,
            "batch_label": split.encode(),
        }
        _pickle(folder / split, batch, str_keys=False)
        out[split] = (images, np.array(fine, dtype=np.int64))
    meta = {
        "fine_label_names": [c.encode() for c in classes],
        "coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    _pickle(folder / "meta", meta, str_keys=False)
    return out


STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def stl_marker_image() -> np.ndarray:
    """An asymmetric upright (3, 96, 96) image: a red bar along the top rows, a green bar down
    the left columns, blue only in the bottom-right corner. Wrong orientation or channel order
    moves these."""
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    image[0, :8, :] = 250  # red: top rows
    image[1, :, :8] = 200  # green: left columns
    image[2, 80:, 88:] = 150  # blue: bottom-right block, taller than wide
    return image


def _write_stl_x(path: Path, images: np.ndarray) -> None:
    """STL-10 stores each channel plane column-major (Fortran order), images one after another."""
    with path.open("wb") as f:
        for image in images:
            for plane in image:
                f.write(plane.tobytes(order="F"))


def write_stl10(
    root: str | Path, n_train: int = 4, n_test: int = 3, n_unlabeled: int = 5, seed: int = 0
) -> dict[str, object]:
    """Write ``root/stl10_binary/`` (train/test X and y, unlabeled_X, class_names.txt).

    Image 0 of every split is :func:`stl_marker_image`. Returns ``{"train": (images, labels
    0..9), "test": ..., "unlabeled": images, "classes": [...]}``, images upright (N, 3, 96, 96).
    """
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    out: dict[str, object] = {"classes": list(STL_CLASSES)}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        if n:
            images[0] = stl_marker_image()
        _write_stl_x(folder / f"{split}_X.bin", images)
        if split == "unlabeled":
            out[split] = images
            continue
        labels = rng.integers(0, 10, n)
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[split] = (images, labels.astype(np.int64))
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    return out


def _save(rgb: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Save (H, W, 3) ``rgb`` as an image of ``mode``; return the RGB it should load as."""
    image = Image.fromarray(rgb)
    if mode == "RGB":
        image.save(path)
        return rgb
    if mode == "RGBA":  # fully opaque: RGB unchanged
        alpha = np.full((*rgb.shape[:2], 1), 255, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], 2)).save(path)
        return rgb
    if mode in ("L", "LA"):
        gray = image.convert("L")
        gray.convert(mode).save(path)
        return np.repeat(np.asarray(gray)[:, :, None], 3, 2)
    if mode == "P":
        palette = image.quantize(colors=16)
        palette.save(path)
        return np.asarray(palette.convert("RGB"))
    if mode == "CMYK":  # TIFF stores CMYK losslessly
        cmyk = image.convert("CMYK")
        cmyk.save(path)
        return np.asarray(cmyk.convert("RGB"))
    if mode == "I;16":  # 16-bit gray: value v*257 should read back as v
        gray = np.asarray(image.convert("L"))
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
        return np.repeat(gray[:, :, None], 3, 2)
    raise ValueError(f"write_image_folder: unsupported mode {mode!r}")


def write_image_folder(
    path: str | Path,
    classes: Sequence[str] | None = ("cat", "dog"),
    per_class: int = 3,
    size: int | tuple[int, int] = 16,
    modes: Sequence[str] = ("RGB",),
    seed: int = 0,
) -> dict[str, object]:
    """Write random images into ``path/<class>/`` (or flat into ``path`` when ``classes`` is
    None or empty); ``size`` is ``side`` or ``(width, height)``.

    Image ``i`` of each class gets ``modes[i % len(modes)]``; CMYK is saved as ``.tif``, the
    others as ``.png``. Files are named so that sorted order is writing order. Returns
    ``{"paths": [...], "rgb": [(H, W, 3) uint8 as it should decode], "labels": [...],
    "classes": sorted class names}`` in the order the loader returns them.
    """
    path = Path(path)
    width, height = (size, size) if isinstance(size, int) else size
    rng = _rng(seed)
    names = sorted(classes) if classes else [None]
    out: dict[str, list] = {"paths": [], "rgb": [], "labels": [], "classes": sorted(classes or [])}
    for label, name in enumerate(names):
        folder = path / name if name else path
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            file = folder / f"img{i:03d}.{'tif' if mode == 'CMYK' else 'png'}"
            rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            out["rgb"].append(_save(rgb, mode, file))
            out["paths"].append(file)
            out["labels"].append(label if name else -1)
    return out
