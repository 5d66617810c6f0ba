"""Readers for the published on-disk formats of Fashion-MNIST, CIFAR-10/100 and STL-10.

These parse the files exactly as their authors distribute them (and as torchvision downloads
them), with numpy only, so that a copy installed by a system package or unpacked by hand works
without torchvision. Every malformed file raises a :class:`DataError` naming that file.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from selfsup.data.cache import cache_key, file_signature, open_npy, remove_stale, write_npy_atomic
from selfsup.errors import DataError
from selfsup.progress import progress

IDX_IMAGES_MAGIC = 0x00000803
"""IDX magic of a uint8 3-d array (N, rows, cols): 0x00 0x00, type 0x08 (ubyte), 3 dims."""
IDX_LABELS_MAGIC = 0x00000801
"""IDX magic of a uint8 1-d array (N,)."""

_FIX = "re-download it or replace the file"
_DELETE = "delete the file and re-download it (data.download=true) or replace it"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file (raw, or gzipped when the name ends in ``.gz``) as a uint8 array.

    IDX (the MNIST format): a big-endian uint32 magic number whose low byte is the number of
    dimensions, one big-endian uint32 per dimension, then the uint8 values in C order.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; {_FIX}") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        what = "empty" if not data else f"truncated ({len(data)} bytes)"
        raise DataError(f"{path} is {what}, not an IDX file; {_DELETE}")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(
            f"{path} is not an IDX file of the expected kind (magic number 0x{got:08x}, "
            f"expected 0x{magic:08x}); {_FIX}"
        )
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete); {_FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)  # Python ints: garbage dimensions cannot overflow
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what} ({len(data)} bytes, expected {expected} for shape {dims}); {_FIX}"
        )
    try:  # (0, 3e9, 3e9) holds no value, yet numpy cannot index that shape
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
    except ValueError as e:
        raise DataError(f"{path} has dimensions {dims} numpy cannot hold ({e}); {_FIX}") from e


# What the real CIFAR "python version" pickles hold besides dicts, lists, bytes and ints:
# numpy arrays (pickled through ndarray's reduce) and nothing else. Any other global a pickle
# names is refused by name, so a crafted batch file cannot run code.
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes as Python 3 writes them at protocol 2 (latin-1 text)
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR file never holds (only dicts, lists, "
                "bytes and numpy arrays are read; selfsup never runs code from a data file)"
            )
        return super().find_class(module, name)


def read_pickle_dict(path: Path) -> dict[str, object]:
    """Read one CIFAR batch/meta file (a Python 2 pickle of a dict), with its keys as ``str``.

    ``encoding="bytes"`` loads the str keys of these Python 2 pickles as ``bytes``
    (``b"data"``), so keys of either type are normalised to ``str``. The unpickler admits only
    the globals a real file holds (numpy's array reconstruction); anything else, such as a
    callable that would run code, is refused with a :class:`DataError` before it is called.
    """
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any failure to unpickle means the file is bad
        raise DataError(f"cannot read {path} as a CIFAR file: {e}; {_FIX}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict; {_FIX}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _field(d: dict[str, object], key: str, path: Path) -> object:
    if key not in d:
        raise DataError(f"{path} has no {key!r} entry (found {sorted(d)}); {_FIX}")
    return d[key]


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR batch file.

    ``data`` is (N, 3072) uint8: per image the 1024 red values, then green, then blue, each
    plane row-major, so a plain reshape to (N, 3, 32, 32) gives channels-first RGB.
    """
    d = read_pickle_dict(path)
    data = _as_array(_field(d, "data", path), "data", path)
    labels = _as_array(_field(d, label_key, path), label_key, path)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072); {_DELETE}"
        )
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"{path}: {label_key!r} is {labels.dtype} {labels.shape}, expected a list of "
            f"integer class indices; {_DELETE}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images; {_DELETE}")
    return data.reshape(-1, 3, 32, 32).copy(), labels.astype(np.int64)


def _as_array(value: object, key: str, path: Path) -> np.ndarray:
    """``np.asarray(value)``, any failure (ragged lists, huge ints) a DataError naming ``key``."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"{path}: {key!r} is not an array ({e}); {_DELETE}") from e
    # integers only (not str, object, float); an empty list loads as float64 and is let through
    if array.dtype.kind not in "biu" and (array.size or array.ndim != 1):
        raise DataError(f"{path}: {key!r} holds {array.dtype} values, not integers; {_DELETE}")
    return array


def read_cifar_names(path: Path, key: str) -> list[str]:
    """The class names stored under ``key`` in a CIFAR meta file (bytes or str)."""
    names = _field(read_pickle_dict(path), key, path)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: {key!r} is not a non-empty list of class names; {_DELETE}")
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {key!r} holds a name that is not text ({e}); {_DELETE}") from e


STL_SIZE = 96
_STL_IMAGE_BYTES = 3 * STL_SIZE * STL_SIZE


def stl_count(path: Path) -> int:
    """The number of images in an STL-10 ``*_X.bin`` file (checked to be a whole number)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; {_FIX}") from e
    if size == 0:
        raise DataError(f"{path} is empty (0 bytes); {_DELETE}")
    if size % _STL_IMAGE_BYTES:
        raise DataError(
            f"{path} is truncated: {size} bytes is not a multiple of {_STL_IMAGE_BYTES} "
            f"(one 3x96x96 image); {_FIX}"
        )
    return size // _STL_IMAGE_BYTES


def _stl_source(path: Path) -> np.ndarray:
    """The raw file as a read-only (N, 3, 96, 96) memmap, still column-major per image."""
    n = stl_count(path)
    try:
        return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, STL_SIZE, STL_SIZE))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; {_FIX}") from e


def read_stl_images(path: Path) -> np.ndarray:
    """All images of an STL-10 ``*_X.bin`` file, upright, as an in-RAM (N, 3, 96, 96) array.

    The binary holds uint8 images one after another, each 3 channel planes (R, G, B) of 96x96
    stored column-major (Matlab order); transposing the last two axes turns them upright.
    """
    return np.ascontiguousarray(_stl_source(path).transpose(0, 1, 3, 2))


def read_stl_labels(path: Path, n: int) -> np.ndarray:
    """The labels of an STL-10 ``*_y.bin`` file: one uint8 per image, 1..10, returned as 0..9."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; {_FIX}") from e
    if raw.shape != (n,):
        raise DataError(f"{path} has {raw.size} labels for {n} images; {_FIX}")
    if n and (raw.min() < 1 or raw.max() > 10):
        raise DataError(f"{path} has labels outside 1..10; {_FIX}")
    return raw.astype(np.int64) - 1


def stl_images_memmap(sources: list[Path], cache_dir: Path, tag: str) -> torch.Tensor:
    """The upright images of ``sources`` (concatenated) as a tensor over an on-disk cache.

    For the splits too large for RAM: the first call streams the files, chunk by chunk, into
    ``cache_dir/stl10-<tag>-<hash>.npy`` in (N, 3, 96, 96) order; later calls only memmap it.
    The hash covers the sources' paths, sizes and mtimes, so a replaced file rebuilds the cache.
    """
    counts = [stl_count(p) for p in sources]
    shape = (sum(counts), 3, STL_SIZE, STL_SIZE)
    key = cache_key(["stl10", tag, 1, [file_signature(p) for p in sources]])
    path = cache_dir / f"stl10-{tag}-{key}.npy"
    images = open_npy(path, shape)
    if images is not None:
        return images

    def fill(out: np.ndarray) -> None:
        chunk = 2048
        with progress(shape[0], f"caching stl10 {tag}", unit="img") as bar:
            start = 0
            for src_path, n in zip(sources, counts, strict=True):
                src = _stl_source(src_path)
                for i in range(0, n, chunk):
                    j = min(i + chunk, n)
                    out[start + i : start + j] = src[i:j].transpose(0, 1, 3, 2)
                    bar.update(j - i)
                start += n

    write_npy_atomic(path, shape, fill)
    remove_stale(cache_dir, f"stl10-{tag}-*.npy", {path})
    images = open_npy(path, shape)
    if images is None:
        raise DataError(f"cannot read back the cache {path} just written; delete it and retry")
    return images
