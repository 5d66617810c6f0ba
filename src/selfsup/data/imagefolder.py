"""Your own images: a folder of class sub-folders (labelled) or of loose images (unlabeled).

Layout of ``imagefolder:PATH``::

    PATH/train/<class>/*.jpg   (or PATH/<class>/*.jpg: PATH itself is the train split)
    PATH/test/<class>/*.jpg    (or PATH/val/...)

Sorted class-folder names are the classes (class folders are searched recursively; ones without
images, and hidden entries, are ignored); a split folder with only loose images is unlabeled
(labels -1); a folder with both is an error rather than a guess.

Every image, whatever its mode or size, becomes RGB, its shorter side resized to
``image_size`` and centre-cropped square, so the whole split is one uint8 (N, 3, S, S) array.

Decoding is slow, so the result is cached under ``<data root>/cache/`` as a ``.npy`` that later
loads memory-map (see :mod:`selfsup.data.cache`), plus a JSON sidecar with labels and classes. The
cache name hashes the folder's absolute path, ``image_size`` and every file's relative path, size
and mtime: adding, removing or editing an image rebuilds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from selfsup.atomic import write_json_atomic
from selfsup.data.array import ImageArray
from selfsup.data.cache import (
    cache_key,
    open_npy,
    remove_stale,
    write_npy_atomic,
)
from selfsup.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
_SPLIT_DIRS = {"train": ("train",), "test": ("test", "val")}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursively, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if _is_image(Path(f))]
    return sorted(found)


def split_folder(path: Path, split: str) -> Path:
    """The folder holding ``split``: ``train`` is PATH/train or PATH; ``test`` is PATH/test|val."""
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist or is not a folder")
    for sub in _SPLIT_DIRS[split]:
        if (path / sub).is_dir():
            return path / sub
    if split == "train":
        return path
    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise DataError(
        f"image folder {path} has no 'test' or 'val' sub-folder for split {split!r}; "
        f"its sub-folders are: {', '.join(subdirs) or '(none)'}"
    )


def scan(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and classes of one split folder (labels -1 and no classes when flat)."""
    loose = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [(d.name, _images_under(d)) for d in subdirs]
    per_class = [(name, files) for name, files in per_class if files]
    if per_class and loose:
        raise DataError(
            f"{folder} mixes class sub-folders ({', '.join(n for n, _ in per_class)}) with "
            f"{len(loose)} loose images such as {loose[0].name}: move them into a class folder, "
            "or into a folder of their own"
        )
    if not per_class and not loose:
        raise DataError(
            f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), neither loose "
            "nor in class sub-folders"
        )
    if loose:
        return loose, [-1] * len(loose), []
    files = [f for _, fs in per_class for f in fs]
    labels = [i for i, (_, fs) in enumerate(per_class) for _ in fs]
    return files, labels, [name for name, _ in per_class]


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: transparency is composited onto white, 16/32-bit gray rescaled."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max(initial=0.0))
        if image.mode.startswith("I;16") or 255 < top <= 65535:
            values = values / 257.0  # 16-bit range onto 8-bit
        elif top > 65535:
            values = values * (255.0 / top)
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode(path: Path, size: int) -> np.ndarray:
    """One image file as uint8 (3, size, size): RGB, shorter side resized, centre-cropped.

    Resizing uses PIL's bilinear filter, which antialiases when shrinking. EXIF orientation is
    applied first so photos come out the way viewers show them.
    """
    with Image.open(path) as opened:
        image = _to_rgb(ImageOps.exif_transpose(opened))
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(path: Path, split: str, image_size: int, cache_dir: Path) -> ImageArray:
    """Load ``split`` of the image folder at ``path`` (see the module docstring)."""
    folder = split_folder(path.expanduser().absolute(), split)
    files, labels, classes = scan(folder)
    listing = []
    for f in files:
        stat = f.stat()
        listing.append([f.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    folder_key = cache_key(["imagefolder", str(folder), image_size])
    key = cache_key(["imagefolder", 1, str(folder), image_size, listing])
    npy = cache_dir / f"imagefolder-{folder_key}-{key}.npy"
    sidecar = npy.with_suffix(".json")
    shape = (len(files), 3, image_size, image_size)

    images = _open_cached(npy, sidecar, shape)
    if images is None:

        def fill(out: np.ndarray) -> None:
            for i, f in enumerate(tqdm(files, desc=f"decoding {folder.name}", unit="img")):
                try:
                    out[i] = decode(f, image_size)
                except Exception as e:  # any decoder failure means this file is unusable
                    raise DataError(
                        f"cannot read image {f}: {e}; remove or replace this file"
                    ) from e

        write_npy_atomic(npy, shape, fill)
        write_json_atomic(sidecar, {"folder": str(folder), "labels": labels, "classes": classes})
        remove_stale(cache_dir, f"imagefolder-{folder_key}-*", {npy, sidecar})
        images = _open_cached(npy, sidecar, shape)
        if images is None:
            raise DataError(f"cannot read back the cache {npy} just written; delete it and retry")
    return ImageArray(images, torch.tensor(labels, dtype=torch.int64), classes)


def _open_cached(npy: Path, sidecar: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached images when both files are present and agree with ``shape``."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or len(meta.get("labels", ())) != shape[0]:
        return None
    return open_npy(npy, shape)
