"""Labeled Faces in the Wild (Huang et al., 2007) in torchvision's ``LFWPeople`` layout.

On disk (what ``torchvision.datasets.LFWPeople`` reads, and the tarballs of
http://vis-www.cs.umass.edu/lfw/ unpack to)::

    ROOT/lfw-py/lfw_funneled/<Person_Name>/<Person_Name>_0001.jpg   (or lfw/, lfw-deepfunneled/)
    ROOT/lfw-py/pairs.txt, peopleDevTrain.txt, pairsDevTest.txt, lfw-names.txt, ...

``ROOT`` itself holding ``lfw_funneled/`` (etc.) is accepted too. People are the classes
(sorted names); only people with at least ``min_images`` images are kept (20 by default: 62
people and 3023 images, the subset of scikit-learn's ``fetch_lfw_people(min_faces_per_person=
20)`` example). The train / test split is by image, seeded: each person's images are shuffled
and ``test_fraction`` of them (at least one) go to test, so every test identity has training
images (identification by kNN needs them).

Each 250 x 250 image is cut to its central ``FACE_CROP`` (the face; scikit-learn crops the
central 125 x 94 px by default) and resized to ``image_size``. The decoded images are cached
under ``ROOT/cache/`` as a memory-mapped ``.npy`` keyed by the files' paths, sizes and times.

:func:`read_pairs` parses ``pairs.txt`` (and ``pairsDevTrain.txt`` / ``pairsDevTest.txt``): a
header ``folds<TAB>n`` (or just ``n``), then per fold ``n`` matched lines ``name i j`` and ``n``
mismatched lines ``name1 i name2 j``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import LFWPeople

from selfsup.data.array import ImageArray
from selfsup.data.cache import cache_key, file_signature, open_npy, write_npy_atomic
from selfsup.data.imagefolder import not_a_regular_file
from selfsup.errors import ConfigError, DataError

LFW_FOLDER = "lfw-py"  # torchvision's base_folder
IMAGE_FOLDERS = ("lfw_funneled", "lfw", "lfw-deepfunneled")  # funneled (default), original, deep
PAIRS_FILES = ("pairs.txt", "pairsDevTest.txt", "pairsDevTrain.txt")
DEFAULT_MIN_IMAGES = 20
LFW_TEST_FRACTION = 0.2  # share of each person's images in the test split
FACE_CROP = 0.5  # side of the central square kept, as a fraction of the image side
GET_LFW = (
    "download lfw-funneled.tgz and pairs.txt (LFW's site, or the mirror torchvision's LFWPeople "
    "names) and unpack them into {root}/lfw-py/; data.download=true tries torchvision's own "
    "download, which recent torchvision versions no longer offer"
)


@dataclass(frozen=True)
class Pair:
    """One verification pair: (person, image number) twice and whether they are the same."""

    fold: int
    first: tuple[str, int]
    second: tuple[str, int]
    same: bool


def find_lfw(root: Path, download: bool = False) -> Path:
    """The folder of person folders under ``root`` (see the module docstring)."""
    bases = [root / LFW_FOLDER, root]
    for base in bases:
        for name in IMAGE_FOLDERS:
            if (base / name).is_dir():
                return base / name
    if download:
        try:
            LFWPeople(str(root), download=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise DataError(
                f"downloading LFW through torchvision into {root} failed: {err}"
            ) from err
        return find_lfw(root, download=False)
    looked = ", ".join(str(b / n) for b in bases for n in IMAGE_FOLDERS)
    raise DataError(f"LFW not found: looked for {looked}. To get it: {GET_LFW.format(root=root)}")


def scan_people(images_dir: Path) -> dict[str, list[Path]]:
    """Person name -> its image files (``<Name>_<NNNN>.jpg``, sorted), people sorted."""
    people = {}
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.glob(f"{folder.name}_*.jpg") if f.is_file())
        if files:
            people[folder.name] = files
    if not people:
        raise DataError(f"{images_dir} holds no <Person>/<Person>_NNNN.jpg images")
    return people


def keep_people(people: dict[str, list[Path]], min_images: int) -> dict[str, list[Path]]:
    """The people with at least ``min_images`` images (a ``DataError`` when none are left)."""
    if min_images < 1:
        raise ConfigError(f"the minimum number of images per person must be >= 1, got {min_images}")
    kept = {name: files for name, files in people.items() if len(files) >= min_images}
    if not kept:
        most = max(len(f) for f in people.values())
        raise DataError(
            f"no person has {min_images} images or more (the most is {most}); lower the minimum"
        )
    return kept


def split_by_image(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices), sorted: per person, a seeded shuffle of its images and
    ``round(test_fraction * n)`` of them (at least 1, and at most n - 1) to test; a person with
    one image stays in train."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for person in torch.unique(labels).tolist():
        idx = (labels == person).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def decode_face(path: Path, size: int, crop: float = FACE_CROP) -> np.ndarray:
    """uint8 (3, size, size): the central ``crop`` square of the image, resized (bilinear).
    Only a regular file is opened (a named pipe would wait for a writer forever)."""
    irregular = not_a_regular_file(os.stat(path).st_mode)
    if irregular:
        raise ValueError(irregular)
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    side = max(1, round(crop * min(w, h)))
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def load_faces(files: list[Path], size: int, cache_dir: Path) -> torch.Tensor:
    """uint8 (N, 3, size, size) of ``files``, decoded once and memory-mapped from the cache."""
    key = cache_key(["lfw", size, FACE_CROP, [file_signature(f) for f in files]])
    npy = cache_dir / f"lfw-{size}-{key}.npy"
    shape = (len(files), 3, size, size)
    cached = open_npy(npy, shape)
    if cached is not None:
        return cached

    def fill(out: np.ndarray) -> None:
        for i, f in enumerate(files):
            try:
                out[i] = decode_face(f, size)
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read the LFW image {f}: {err}") from err

    write_npy_atomic(npy, shape, fill)  # (creates cache_dir, or a WriteError says why not)
    images = open_npy(npy, shape)
    if images is None:
        raise DataError(f"cannot read back the cache {npy} just written; delete it and retry")
    return images


@dataclass
class LFW:
    """The kept people's images (all of them, before the split) and their files."""

    images: ImageArray
    files: list[Path]
    images_dir: Path

    def split(self, split: str, test_fraction: float, seed: int) -> ImageArray:
        train, test = split_by_image(self.images.labels, test_fraction, seed)
        part = self.images.subset(train if split == "train" else test)
        part.split = split
        return part


def load_lfw(
    root: Path,
    *,
    min_images: int = DEFAULT_MIN_IMAGES,
    image_size: int = 64,
    download: bool = False,
) -> LFW:
    """Every image of the people with at least ``min_images`` images, people as classes."""
    images_dir = find_lfw(root, download)
    people = keep_people(scan_people(images_dir), min_images)
    files = [f for fs in people.values() for f in fs]
    labels = torch.tensor([i for i, fs in enumerate(people.values()) for _ in fs])
    images = load_faces(files, image_size, root / "cache")
    return LFW(ImageArray(images, labels, list(people), f"lfw:{min_images}"), files, images_dir)


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of an LFW pairs file (see the module docstring), folds numbered from 0."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the LFW pairs file {path}: {err}") from err
    if not lines:
        raise DataError(f"the LFW pairs file {path} is empty")
    head = lines[0]
    try:
        folds, n = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    except ValueError:
        raise DataError(f"{path}: the first line must be 'folds n' or 'n', got {head}") from None
    if len(lines) - 1 != 2 * folds * n:
        raise DataError(
            f"{path}: the header announces {folds} fold(s) of {n} matched + {n} mismatched "
            f"pairs ({2 * folds * n} lines), the file has {len(lines) - 1}"
        )
    pairs = []
    for i, parts in enumerate(lines[1:]):
        fold, same = i // (2 * n), i % (2 * n) < n
        try:
            if same and len(parts) == 3:
                pairs.append(Pair(fold, (parts[0], int(parts[1])), (parts[0], int(parts[2])), True))
            elif not same and len(parts) == 4:
                pairs.append(
                    Pair(fold, (parts[0], int(parts[1])), (parts[2], int(parts[3])), False)
                )
            else:
                raise ValueError
        except ValueError:
            want = "name i j" if same else "name1 i name2 j"
            raise DataError(f"{path}, line {i + 2}: expected '{want}', got {parts}") from None
    return pairs


def pairs_file(images_dir: Path, name: str = "pairs.txt") -> Path | None:
    """``pairs.txt`` (or another pairs file) beside the image folder, in ``lfw-py/``; None when
    absent."""
    path = images_dir.parent / name
    return path if path.is_file() else None
