"""Where datasets come from: one entry point, :func:`load_dataset`, for every source.

Names, their splits, and where their files are looked for (``root`` is the data root):

* ``fashion-mnist`` (train, test): IDX files, raw or ``.gz``, in each of
  ``FASHION_MNIST_SYSTEM_DIRS`` (Debian's ``dataset-fashion-mnist`` package installs them in
  /usr/share/datasets/fashion-mnist), then ``root/fashion-mnist/``, then torchvision's
  ``root/FashionMNIST/raw/``.
* ``cifar10``, ``cifar100`` (train, test): the "python version" pickles in
  ``root/cifar-10-batches-py/`` and ``root/cifar-100-python/``.
* ``stl10`` (train, test, unlabeled, train+unlabeled): the binaries in ``root/stl10_binary/``.
* ``imagefolder:PATH`` (train, test): your own images, see :mod:`selfsup.data.imagefolder`.
* ``cache:PATH`` (train, test): an image folder decoded once by ``selfsup prepare``, read
  memory-mapped (data bigger than memory), see :mod:`selfsup.data.prepare`.
* ``lfw`` / ``lfw:MIN`` (train, test): LFW faces in torchvision's ``root/lfw-py/`` layout, the
  people with at least MIN (default 20) images as classes, a seeded split by image; see
  :mod:`selfsup.data.lfw`.
* ``synthetic`` (train, test): generated, nothing on disk, see :mod:`selfsup.data.synthetic`.

Files are read in their published formats (see :mod:`selfsup.data.formats`); ``download=True``
fetches a missing dataset through torchvision, which writes exactly the layouts above. Large or
slow-to-decode splits are cached under ``root/cache/`` and memory-mapped (see
:mod:`selfsup.data.cache`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.data import formats
from selfsup.data.array import ImageArray
from selfsup.data.imagefolder import BAD_IMAGE, load_image_folder
from selfsup.data.lfw import DEFAULT_MIN_IMAGES, LFW_TEST_FRACTION, load_lfw
from selfsup.data.prepare import load_prepared
from selfsup.data.synthetic import make_synthetic
from selfsup.errors import ConfigError, DataError, WriteError
from selfsup.fields import check_choice
from selfsup.registry import Registry

FASHION_MNIST_SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]
"""System folders searched first for the Fashion-MNIST IDX files (module-level so tests and
unusual installs can change it)."""

FASHION_MNIST_CLASSES = [
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
STL10_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]
"""Used when ``stl10_binary/class_names.txt`` is absent."""

DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "cache:PATH": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "imagefolder:PATH": ("train", "test"),
    "lfw": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "synthetic": ("train", "test"),
}
"""The valid splits of each dataset name in :func:`dataset_names`."""

_WITH_PATH = ("imagefolder:", "cache:")  # names that carry a path: PREFIX + PATH
_LFW = "lfw:"
_GET_IT = (
    "add data.download=true (a key=value argument of selfsup pretrain, supervised, joint and "
    "eval) to fetch it through torchvision into {root}"
)


@dataclass(frozen=True)
class _Request:
    split: str
    root: Path
    download: bool
    image_size: int | None
    path: str | None  # the PATH of imagefolder:PATH or cache:PATH
    on_bad_image: str = "skip"  # imagefolder: skip (and report) or fail on unusable files


_DATASETS: Registry[Callable[[_Request], ImageArray]] = Registry("dataset")


def default_data_root() -> Path:
    """``$SELFSUP_DATA`` when set, else ``~/.cache/selfsup``: where datasets and caches live."""
    env = os.environ.get("SELFSUP_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "selfsup"


def dataset_names() -> list[str]:
    """The valid dataset names (``imagefolder:PATH`` stands for any folder path)."""
    return _DATASETS.names()


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    on_bad_image: str = "skip",
) -> ImageArray:
    """Load ``split`` of dataset ``name`` as uint8 (N, C, H, W) images and int64 labels.

    Args:
        name: one of :func:`dataset_names`, e.g. ``"cifar10"`` or ``"imagefolder:~/photos"``.
        split: one of ``DATASET_SPLITS[name]``.
        root: the data folder (default :func:`default_data_root`).
        download: fetch a missing dataset through torchvision (needs internet).
        image_size: side of the square images of ``imagefolder`` (default 64) and ``synthetic``
            (default 32); ``cache`` has the size it was prepared at (another is an error);
            the other datasets keep their native size.
        on_bad_image: ``imagefolder`` only: ``"skip"`` leaves files that cannot be used out and
            lists them in a report next to the cache; ``"fail"`` raises a :class:`DataError`
            naming the first (see :mod:`selfsup.data.imagefolder`).

    Raises:
        ConfigError: unknown name or split, or a bad ``image_size``.
        DataError: the data is missing (the message says where it looked and how to get it)
            or corrupt (the message names the file).
    """
    key, path = name, None
    for prefix in _WITH_PATH:
        if name.startswith(prefix):
            key, path = f"{prefix}PATH", name[len(prefix) :]
            if not path:
                raise ConfigError(f"dataset {prefix!r} needs a folder: write {prefix}PATH")
    if name.startswith(_LFW):
        key, path = "lfw", name[len(_LFW) :]
    loader = _DATASETS.get(key)
    if split not in DATASET_SPLITS[key]:
        raise ConfigError(
            f"dataset {name!r} has no split {split!r}; valid splits: "
            f"{', '.join(DATASET_SPLITS[key])}"
        )
    if image_size is not None and (
        not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    check_choice("data.on_bad_image", on_bad_image, BAD_IMAGE)
    data_root = default_data_root() if root is None else Path(root).expanduser()
    try:
        array = loader(_Request(split, data_root, download, image_size, path, on_bad_image))
    except WriteError as err:  # a decoded cache (image folder, STL-10 unlabeled, LFW)
        raise WriteError(
            f"{err}. Datasets and their caches live in the data root {data_root}: set "
            "data.root (or $SELFSUP_DATA) to a writable folder"
        ) from err
    array.name, array.split = name, split
    return array


# --- locating files ------------------------------------------------------------------------


def _locate(dirs: list[Path], needed: dict[str, tuple[str, ...]]) -> dict[str, Path] | None:
    """The files of the first folder in ``dirs`` holding all of ``needed``.

    ``needed`` maps a key to the accepted file names, in order of preference.
    """
    for d in dirs:
        found = {}
        for key, names in needed.items():
            hit = next((d / n for n in names if (d / n).is_file()), None)
            if hit is None:
                break
            found[key] = hit
        else:
            return found
    return None


def _not_found(
    dataset: str, split: str, dirs: list[Path], needed: dict[str, tuple[str, ...]], how: str
) -> DataError:
    lines = []
    for d in dirs:
        if not d.is_dir():
            lines.append(f"  {d}  (no such folder)")
            continue
        missing = [
            " or ".join(names)
            for names in needed.values()
            if not any((d / n).is_file() for n in names)
        ]
        lines.append(f"  {d}  (missing {', '.join(missing)})")
    files = ", ".join(" or ".join(names) for names in needed.values())
    return DataError(
        f"dataset {dataset!r} (split {split!r}) not found: looked for {files} in:\n"
        + "\n".join(lines)
        + f"\nTo get it: {how}."
    )


def _find(
    dataset: str,
    req: _Request,
    dirs: list[Path],
    needed: dict[str, tuple[str, ...]],
    fetch: Callable[[], object],
    how: str,
) -> dict[str, Path]:
    """Locate ``needed`` in ``dirs``; if absent and ``req.download``, ``fetch()`` and retry."""
    found = _locate(dirs, needed)
    if found is None and req.download:
        req.root.mkdir(parents=True, exist_ok=True)
        try:
            fetch()
        except (OSError, RuntimeError, ValueError) as e:
            raise DataError(
                f"downloading {dataset!r} through torchvision into {req.root} failed: {e}"
            ) from e
        found = _locate(dirs, needed)
    if found is None:
        raise _not_found(dataset, req.split, dirs, needed, how)
    return found


def _array(images: np.ndarray | torch.Tensor, labels: np.ndarray, classes: list[str]) -> ImageArray:
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
    return ImageArray(tensor, torch.from_numpy(np.asarray(labels, dtype=np.int64)), classes)


# --- the datasets --------------------------------------------------------------------------


@_DATASETS.register("fashion-mnist")
def _fashion_mnist(req: _Request) -> ImageArray:
    """IDX files, raw or gzipped, from the system folders, root/fashion-mnist or torchvision's."""
    prefix = "train" if req.split == "train" else "t10k"
    needed = {
        kind: (f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}-idx{n}-ubyte.gz")
        for kind, n in (("images", 3), ("labels", 1))
    }
    dirs = [*FASHION_MNIST_SYSTEM_DIRS, req.root / "fashion-mnist"]
    dirs.append(req.root / "FashionMNIST" / "raw")  # torchvision's layout

    def fetch() -> object:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST(str(req.root), train=req.split == "train", download=True)

    how = _GET_IT.format(root=req.root) + ", or `apt-get install dataset-fashion-mnist`"
    found = _find("fashion-mnist", req, dirs, needed, fetch, how)
    images = formats.read_idx(found["images"], formats.IDX_IMAGES_MAGIC)
    labels = formats.read_idx(found["labels"], formats.IDX_LABELS_MAGIC)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{found['labels']} has {labels.shape[0]} labels for the {images.shape[0]} images "
            f"of {found['images']}; re-download them"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{found['labels']} has labels outside 0..9; re-download it")
    return _array(images[:, None], labels, list(FASHION_MNIST_CLASSES))


def _cifar(req: _Request, *, hundred: bool) -> ImageArray:
    """The CIFAR "python version": pickled dicts of (N, 3072) uint8 rows and label lists."""
    if hundred:
        dataset, folder, meta, label_key, names_key = (
            "cifar100",
            "cifar-100-python",
            "meta",
            "fine_labels",
            "fine_label_names",
        )
        batches = [req.split]
    else:
        dataset, folder, meta, label_key, names_key = (
            "cifar10",
            "cifar-10-batches-py",
            "batches.meta",
            "labels",
            "label_names",
        )
        train = [f"data_batch_{i}" for i in range(1, 6)]
        batches = train if req.split == "train" else ["test_batch"]
    needed = {name: (name,) for name in [*batches, meta]}

    def fetch() -> object:
        from torchvision import datasets

        cls = datasets.CIFAR100 if hundred else datasets.CIFAR10
        return cls(str(req.root), train=req.split == "train", download=True)

    found = _find(dataset, req, [req.root / folder], needed, fetch, _GET_IT.format(root=req.root))
    parts = [formats.read_cifar_batch(found[b], label_key) for b in batches]
    classes = formats.read_cifar_names(found[meta], names_key)
    for b, (_, lab) in zip(batches, parts, strict=True):
        if lab.size and (lab.min() < 0 or lab.max() >= len(classes)):
            raise DataError(
                f"{found[b]} has labels outside 0..{len(classes) - 1} (the classes of "
                f"{found[meta].name}); re-download the dataset or replace the files"
            )
    labels = np.concatenate([lab for _, lab in parts])
    return _array(np.concatenate([im for im, _ in parts]), labels, classes)


@_DATASETS.register("cifar10")
def _cifar10(req: _Request) -> ImageArray:
    return _cifar(req, hundred=False)


@_DATASETS.register("cifar100")
def _cifar100(req: _Request) -> ImageArray:
    return _cifar(req, hundred=True)


@_DATASETS.register("stl10")
def _stl10(req: _Request) -> ImageArray:
    """STL-10 binaries; ``unlabeled`` and ``train+unlabeled`` come memory-mapped from a cache."""
    parts = {"train+unlabeled": ["train", "unlabeled"]}.get(req.split, [req.split])
    needed = {f"{p}_X": (f"{p}_X.bin",) for p in parts}
    needed |= {f"{p}_y": (f"{p}_y.bin",) for p in parts if p != "unlabeled"}
    folder = req.root / "stl10_binary"

    def fetch() -> object:
        from torchvision.datasets import STL10

        return STL10(str(req.root), split=req.split, download=True)

    found = _find("stl10", req, [folder], needed, fetch, _GET_IT.format(root=req.root))
    names_file = folder / "class_names.txt"
    classes = list(STL10_CLASSES)
    if names_file.is_file():
        try:
            classes = [s.strip() for s in names_file.read_text().splitlines() if s.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(
                f"cannot read the class names in {names_file}: {e}; delete the file (the "
                "standard STL-10 names are then used) or re-download the dataset"
            ) from e
        if len(classes) != len(STL10_CLASSES):
            raise DataError(
                f"{names_file} names {len(classes)} classes, STL-10 has "
                f"{len(STL10_CLASSES)}; delete the file (the standard names are then used) "
                "or re-download the dataset"
            )
    labels = [
        np.full(formats.stl_count(found["unlabeled_X"]), -1, dtype=np.int64)
        if p == "unlabeled"
        else formats.read_stl_labels(found[f"{p}_y"], formats.stl_count(found[f"{p}_X"]))
        for p in parts
    ]
    if "unlabeled" in parts:
        sources = [found[f"{p}_X"] for p in parts]
        images: np.ndarray | torch.Tensor = formats.stl_images_memmap(
            sources, req.root / "cache", req.split
        )
    else:
        images = formats.read_stl_images(found[f"{req.split}_X"])
    return _array(images, np.concatenate(labels), [] if req.split == "unlabeled" else classes)


@_DATASETS.register("imagefolder:PATH")
def _imagefolder(req: _Request) -> ImageArray:
    assert req.path is not None
    size = 64 if req.image_size is None else req.image_size
    return load_image_folder(
        Path(req.path), req.split, size, req.root / "cache", on_bad_image=req.on_bad_image
    )


@_DATASETS.register("cache:PATH")
def _cache(req: _Request) -> ImageArray:
    assert req.path is not None
    return load_prepared(req.path, req.split, req.image_size, req.on_bad_image)


@_DATASETS.register("lfw")
def _lfw(req: _Request) -> ImageArray:
    """``lfw:MIN``: the people with at least MIN images; the split seed is fixed (0) so every
    run sees the same test images (``selfsup faces`` takes its own seed)."""
    if req.path is not None and not req.path.isdigit():
        raise ConfigError(f"dataset lfw:MIN needs a whole number of images, got lfw:{req.path}")
    min_images = DEFAULT_MIN_IMAGES if req.path is None else int(req.path)
    size = 64 if req.image_size is None else req.image_size
    faces = load_lfw(req.root, min_images=min_images, image_size=size, download=req.download)
    return faces.split(req.split, LFW_TEST_FRACTION, seed=0)


@_DATASETS.register("synthetic")
def _synthetic(req: _Request) -> ImageArray:
    return make_synthetic(req.split, 32 if req.image_size is None else req.image_size)
