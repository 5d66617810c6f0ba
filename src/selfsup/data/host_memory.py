"""Keep freed host memory in the process, so that large CPU tensors reuse warm pages.

Batched views on the CPU allocate and free many same-sized float batches per step (28 MiB each
for 256 RGB images of 96 px). glibc's malloc serves blocks above ``M_MMAP_THRESHOLD`` with fresh
``mmap`` pages and hands freed heap tops back to the kernel above ``M_TRIM_THRESHOLD``, so each
such tensor costs a page fault per 4 KiB page when first written: on the 2-core benchmark machine
that was about a third of the time of :func:`selfsup.data.views.make_views` at 96 px. Raising
both thresholds (``mallopt``, the same knobs as the ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` environment variables, see ``man 3 mallopt``) keeps the freed blocks
for the next batch; the process then holds on to its peak heap, as PyTorch's CUDA caching
allocator does for the GPU. Without glibc (macOS, Windows, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit): try large, then that
_MMAP_THRESHOLDS = (1 << 30, 32 << 20)
_TRIM_THRESHOLD = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when glibc accepted them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_ok = any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in _MMAP_THRESHOLDS)
    return mmap_ok and mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
