"""Prepared caches: an image folder decoded once, with every core, for data bigger than memory.

``selfsup prepare imagefolder:PATH --size S --out CACHE`` decodes each split of the folder (the
same decoding, bad-file handling and ``.npy`` + JSON cache files as ``imagefolder:PATH`` itself,
see :mod:`selfsup.data.imagefolder`, but with a process pool) into::

    CACHE/<split>/images.npy   uint8 (N, 3, S, S), memory-mapped when loaded
    CACHE/<split>/meta.json    labels, class names, the images' relative paths, bad files
    CACHE/<split>/bad.json     the files left out and why (only when there are some)

for ``train`` and, when the folder has one, ``test``. The whole CACHE folder is built in a
hidden temporary folder beside it and renamed onto ``CACHE`` only once complete
(:func:`selfsup.atomic.atomic_folder`): a killed or failed prepare leaves no ``CACHE`` that a
later run would load. ``cache:CACHE`` is then a data source like any other; training reads it
batch by batch (:mod:`selfsup.train.reader`), so it never has to fit in memory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from selfsup.atomic import atomic_folder, recover_folder
from selfsup.data.array import ImageArray
from selfsup.data.imagefolder import (
    BAD_IMAGE,
    Decoder,
    build_cache,
    decode_or_reason,
    decode_serially,
    left_out_notice,
    list_split,
    open_cached,
    split_folder,
)
from selfsup.errors import ConfigError, DataError
from selfsup.fields import MAX_SIDE, check_choice

FORMAT = "selfsup-prepared-v1"
"""The ``format`` tag in every split's ``meta.json``."""

SPLITS = ("train", "test")
CHUNK = 16
"""Files per task sent to a decoding process (amortises the inter-process messages)."""


def default_workers() -> int:
    """The CPU cores this process may use."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _ignore_sigint() -> None:
    """Decoding processes leave Ctrl-C to the parent, which stops the pool and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_task(task: tuple[str, int]) -> np.ndarray | str:
    return decode_or_reason(Path(task[0]), task[1])


@contextmanager
def pool_decoder(workers: int) -> Iterator[Decoder]:
    """A :data:`~selfsup.data.imagefolder.Decoder` that decodes on ``workers`` processes, in
    order; the pool is stopped when the block ends, also on an error. One worker decodes in
    this process."""
    if workers <= 1:
        yield decode_serially
        return
    with multiprocessing.Pool(workers, initializer=_ignore_sigint) as pool:

        def decoder(files: list[Path], size: int) -> Iterator[np.ndarray | str]:
            return pool.imap(_decode_task, [(str(f), size) for f in files], chunksize=CHUNK)

        yield decoder


def prepare_image_folder(
    path: str | Path,
    size: int,
    out: str | Path,
    *,
    workers: int | None = None,
    on_bad_image: str = "skip",
    overwrite: bool = False,
) -> dict[str, int]:
    """Decode the image folder at ``path`` into the prepared cache ``out`` (module docstring).

    Args:
        path: the image folder (``PATH/<class>/*``, ``PATH/train|test/<class>/*`` or flat).
        size: side of the square images (shorter side resized, centre crop).
        out: the cache folder to write.
        workers: decoding processes (default: every core this process may use).
        on_bad_image: ``"skip"`` (leave unusable files out, listed in ``bad.json``) or
            ``"fail"`` (a :class:`DataError` naming the first one; nothing is written).
        overwrite: replace a cache already at ``out``.

    Returns the number of images written per split.
    """
    check_choice("data.on_bad_image", on_bad_image, BAD_IMAGE)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIDE:
        raise ConfigError(
            f"--size must be a number of pixels from 1 to {MAX_SIDE} (selfsup.fields.MAX_SIDE), "
            f"got {size!r}"
        )
    path, out = Path(path).expanduser().absolute(), Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it")
    fail = on_bad_image == "fail"
    counts = {}
    with (
        atomic_folder(out, overwrite=overwrite) as tmp,
        pool_decoder(workers or default_workers()) as decoder,
    ):
        for split in _splits(path):
            counts[split] = _prepare_split(path, split, (tmp, out), size, fail, decoder)
    return counts


def _splits(path: Path) -> list[str]:
    """``train``, and ``test`` when the folder has one."""
    try:
        split_folder(path, "test")
    except DataError:
        if not path.is_dir():
            raise
        return ["train"]
    return ["train", "test"]


def _prepare_split(
    path: Path, split: str, folders: tuple[Path, Path], size: int, fail: bool, decoder: Decoder
) -> int:
    """Decode one split into ``<tmp>/<split>/`` (``folders``: the temporary folder and the
    cache's final path, for the message); the number of images written, and a line on stderr
    when bad files were left out."""
    tmp, out = folders
    found = list_split(path, split, fail)
    where = tmp / split
    where.mkdir()
    source = f"imagefolder:{path}"
    extra = {"format": FORMAT, "source": source, "split": split, "image_size": size}
    build_cache(
        found,
        where / "images.npy",
        where / "meta.json",
        where / "bad.json",
        size,
        fail,
        decoder,
        extra,
    )
    written = len(json.loads((where / "meta.json").read_text())["labels"])
    skipped = len(found.files) + len(found.skipped) - written
    if skipped:
        print(
            f"selfsup: {split}: skipped {skipped} bad image file(s); they are listed in "
            f"{out / split / 'bad.json'}",
            file=sys.stderr,
        )
    return written


def load_prepared(
    path: str | Path, split: str, image_size: int | None = None, on_bad_image: str = "skip"
) -> ImageArray:
    """``split`` of the prepared cache at ``path``: uint8 images memory-mapped (nothing is read
    until used), labels and class names. ``image_size``, when given, must be the cache's. Files
    left out when it was prepared are named on stderr, or with ``on_bad_image="fail"`` the
    first is a :class:`DataError` (as for ``imagefolder:PATH``)."""
    root = Path(path).expanduser()
    recover_folder(root)  # a prepare --overwrite killed between its two renames
    how = f"create it with: selfsup prepare imagefolder:FOLDER --size S --out {root}"
    if not root.is_dir():
        raise DataError(f"no prepared cache at {root}; {how}")
    where = root / split
    if not (where / "meta.json").is_file():
        have = [s for s in SPLITS if (root / s / "meta.json").is_file()]
        if not have:
            raise DataError(f"{root} is not a prepared cache (no */meta.json); {how}")
        raise DataError(
            f"the prepared cache {root} has no split {split!r}; it has: {', '.join(have)}"
        )
    try:
        meta = json.loads((where / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {where / 'meta.json'} ({e}); prepare it again") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(
            f"{where / 'meta.json'} is not a {FORMAT} cache (format {meta.get('format')!r}); "
            "prepare it again with --overwrite"
        )
    size = meta.get("image_size")
    if image_size is not None and image_size != size:
        raise ConfigError(
            f"the prepared cache {root} holds {size}-px images, but data.image_size="
            f"{image_size}; set data.image_size={size} (or null), or prepare it again at "
            f"--size {image_size}"
        )
    cached = open_cached(where / "images.npy", where / "meta.json", int(size))
    if cached is None:
        raise DataError(
            f"the prepared cache {where} is damaged (images.npy missing or not the "
            f"{len(meta.get('labels', []))} x 3 x {size} x {size} uint8 meta.json describes); "
            "prepare it again with --overwrite"
        )
    images, labels, bad = cached
    what = f"{where}: {len(bad)} bad image file(s) were left out when it was prepared"
    left_out_notice(bad, on_bad_image == "fail", what, where / "bad.json")
    paths = meta.get("paths")
    if not isinstance(paths, list) or len(paths) != len(labels):
        raise DataError(f"{where / 'meta.json'} does not list a path per image; prepare it again")
    labels_t = torch.tensor(labels, dtype=torch.int64)
    return ImageArray(images, labels_t, list(meta["classes"]), files=[str(p) for p in paths])
