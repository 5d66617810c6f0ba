"""On-disk uint8 array caches that later loads memory-map instead of decoding again.

Datasets that are expensive to decode (a folder of JPEGs) or too large for RAM (STL-10's 100,000
unlabeled images, 2.7 GB) are written once, in their final (N, C, H, W) uint8 layout, as a ``.npy``
file under ``<data root>/cache/``. Later loads open it with ``np.load(mmap_mode="c")``:

* nothing is read until it is used, so a 2.7 GB split costs no RAM up front;
* ``"c"`` (copy-on-write) gives a *writable* array, so ``torch.from_numpy`` shares it without the
  non-writable-array warning and without a copy, while any in-place write lands in private memory
  and never reaches the cache file.

Cache files are written atomically: into a temporary file in the same folder, renamed over the
final name only once complete (``os.replace``), so an interrupted build never leaves a truncated
cache that a later run would trust. Each cache name carries a hash of what it was built from
(:func:`cache_key`), so a changed source gets a new file and the stale one is removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch

from selfsup.atomic import atomic_path, remove_leftovers


def cache_key(parts: object) -> str:
    """A short stable hash of ``parts`` (anything JSON can encode)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_signature(path: Path) -> list[object]:
    """``[absolute path, size, mtime_ns]``: changes when the file is replaced or edited."""
    stat = path.stat()
    return [str(path.absolute()), stat.st_size, stat.st_mtime_ns]


def write_npy_atomic(
    path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]
) -> None:
    """Create a uint8 ``.npy`` of ``shape`` at ``path``; ``fill(array)`` writes its contents.

    ``fill`` gets a writable memmap of the temporary file, so the array is never held in RAM
    whole; if ``fill`` raises, no file appears at ``path``.
    """
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(out)
        out.flush()
        del out


def open_npy(path: Path, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    """The uint8 ``.npy`` at ``path`` as a tensor over a copy-on-write memmap.

    Returns None when the file is missing, unreadable, or not uint8 of ``shape`` (when given),
    so the caller rebuilds it.
    """
    try:
        array = np.load(path, mmap_mode="c")
    except (OSError, ValueError, EOFError):
        return None
    if array.dtype != np.uint8 or (shape is not None and array.shape != tuple(shape)):
        return None
    return torch.from_numpy(array)


def remove_stale(directory: Path, pattern: str, keep: set[Path]) -> None:
    """Delete the files in ``directory`` matching ``pattern`` other than ``keep``, and the
    temporaries of files matching it that a killed build left (:func:`remove_leftovers`).

    Best effort: a file that cannot be removed (another process, permissions) is left.
    """
    remove_leftovers(directory, pattern)
    for path in directory.glob(pattern):
        if path not in keep:
            with suppress(OSError):
                path.unlink()
