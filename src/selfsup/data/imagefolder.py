"""Your own images: a folder of class sub-folders (labelled) or of loose images (unlabeled).

Layout of ``imagefolder:PATH``::

    PATH/train/<class>/*.jpg   (or PATH/<class>/*.jpg: PATH itself is the train split, and
                                its test/ or val/ folder is the test split, not a class)
    PATH/test/<class>/*.jpg    (or PATH/val/...)

Sorted class-folder names are the classes (class folders are searched recursively; ones without
images, and hidden entries, are ignored); a split folder with only loose images is unlabeled
(labels -1); a folder with both is an error rather than a guess. The train split's classes
are every split's: the test split is labelled by them (an empty ``test/a`` changes nothing), and
a test class the train split has no images of is a :class:`DataError`.

Every image, whatever its mode or size, becomes RGB, its shorter side resized to
``image_size`` and centre-cropped square, so the whole split is one uint8 (N, 3, S, S) array.

Decoding is slow, so the result is cached under ``<data root>/cache/`` as a ``.npy`` that later
loads memory-map (see :mod:`selfsup.data.cache`), plus a JSON sidecar with labels and classes. The
cache name hashes the folder's absolute path, ``image_size`` and every file's relative path, size
and mtime: adding, removing or editing an image rebuilds it.

Bad files never reach training: every image is decoded once, when the cache is built, and one
that cannot be used (empty, truncated or corrupt, not an image despite its extension, unreadable,
over PIL's decompression-bomb limit, a symbolic link leading outside the folder) is, with
``on_bad_image="skip"`` (the default, config key ``data.on_bad_image``), left out and listed with
its reason in the report ``<cache>.bad.json`` next to the cache (and named on stderr at every
load); with ``on_bad_image="fail"`` the first one is a :class:`DataError` before any training.
Symbolic links are only read when they lead to a file inside the split folder; linked folders
are never descended into.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from selfsup.atomic import write_json_atomic
from selfsup.data.array import ImageArray
from selfsup.data.cache import (
    cache_key,
    open_npy,
    remove_stale,
    write_npy_atomic,
)
from selfsup.errors import DataError, WriteError
from selfsup.fields import check_choice

BAD_IMAGE = ("skip", "fail")
"""What ``on_bad_image`` may be: leave bad files out (and report them), or stop at the first."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
_SPLIT_DIRS = {"train": ("train",), "test": ("test", "val")}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


Skipped = list[tuple[Path, str]]
"""Files left out, with the reason, in the order they were met."""


def _link_problem(path: Path, root: Path) -> str | None:
    """Why the symbolic link ``path`` is not read (None: it leads to a file inside ``root``).

    ``root`` is resolved. Links to folders are never followed (no loops, no images twice)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        return f"broken symbolic link (to {os.readlink(path)!s}): skipped"
    if target.is_dir():
        where = "inside" if target.is_relative_to(root) else "outside"
        return f"symbolic link to the folder {target}, {where} the image folder: not followed"
    if not target.is_relative_to(root):
        return f"symbolic link to {target}, outside the image folder: not followed"
    return None


def _images_under(folder: Path, root: Path, skipped: Skipped) -> list[Path]:
    """All image files below ``folder`` (recursively, hidden entries skipped), sorted.

    Symbolic links that do not lead to a file inside ``root`` and folders that cannot be listed
    are appended to ``skipped``."""
    found = []

    def unlistable(err: OSError) -> None:
        skipped.append((Path(err.filename or folder), f"cannot list this folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if Path(dirpath, d).is_symlink():
                skipped.append((Path(dirpath, d), _link_problem(Path(dirpath, d), root) or ""))
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            file = Path(dirpath, name)
            if not _is_image(file):
                continue
            problem = _link_problem(file, root) if file.is_symlink() else None
            if problem:
                skipped.append((file, problem))
            else:
                found.append(file)
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


def other_splits(path: Path, folder: Path) -> frozenset[str]:
    """The sub-folders of the train split ``folder`` that are no classes of it: the test
    split's folders when the train split is the image folder ``path`` itself (``PATH/<class>``
    beside ``PATH/test/<class>``)."""
    if folder != path:
        return frozenset()
    return frozenset(sub for sub in _SPLIT_DIRS["test"] if (path / sub).is_dir())


def scan(
    folder: Path, exclude: frozenset[str] = frozenset()
) -> tuple[list[Path], list[int], list[str], Skipped]:
    """Files, labels and classes of one split folder (labels -1 and no classes when flat), and
    the entries skipped while looking (symbolic links not followed, unlistable folders); the
    entries named in ``exclude`` (another split's folders) are not looked at."""
    root = folder.resolve()
    skipped: Skipped = []
    try:
        entries = sorted(
            p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in exclude
        )
    except OSError as e:
        raise DataError(f"cannot list the image folder {folder}: {e.strerror or e}") from e
    loose, subdirs = [], []
    for p in entries:
        if p.is_symlink() and (p.is_dir() or _is_image(p)):
            problem = _link_problem(p, root)  # always one for a linked folder
            if problem:
                skipped.append((p, problem))
                continue
        if p.is_dir():
            subdirs.append(p)
        elif _is_image(p):
            loose.append(p)
    per_class = [(d.name, _images_under(d, root, skipped)) for d in subdirs]
    per_class = [(name, files) for name, files in per_class if files]
    if per_class and loose:
        raise DataError(
            f"{folder} mixes class sub-folders ({', '.join(n for n, _ in per_class)}) with "
            f"{len(loose)} loose images such as {loose[0].name}: move them into a class folder, "
            "or into a folder of their own"
        )
    if not per_class and not loose:
        also = ""
        if skipped:
            also = f"; skipped {len(skipped)} entries, the first {skipped[0][0]}: {skipped[0][1]}"
        raise DataError(
            f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), neither loose "
            f"nor in class sub-folders{also}"
        )
    if loose:
        return loose, [-1] * len(loose), [], skipped
    files = [f for _, fs in per_class for f in fs]
    labels = [i for i, (_, fs) in enumerate(per_class) for _ in fs]
    return files, labels, [name for name, _ in per_class], skipped


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
    applied first so photos come out the way viewers show them. An image over PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) raises, whether PIL would raise or
    only warn.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
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


def _why_bad(error: BaseException) -> str:
    """A short reason why decoding an image failed, for the report and the error message."""
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large (over PIL.Image.MAX_IMAGE_PIXELS, the decompression-bomb limit): {error}"
    if isinstance(error, PermissionError):
        return "permission denied: cannot open the file"
    if isinstance(error, UnidentifiedImageError):
        return "not an image PIL can read (corrupt, or another kind of file with an image name)"
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return f"truncated or corrupt: {error}"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot read the file: {error.strerror}"
    return f"corrupt or unsupported image: {type(error).__name__}: {error}"


Decoder = Callable[[list[Path], int], Iterator["np.ndarray | str"]]
"""Decodes files at a size, in order: each as uint8 (3, S, S), or the reason it is unusable."""


_KINDS = {
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISDIR: "a folder",
}


def not_a_regular_file(mode: int) -> str | None:
    """Why a file of ``mode`` (``os.stat``'s) is never opened, or None for a regular file:
    opening a named pipe waits for a writer, forever; a device or socket is no image."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS.items() if test(mode)), "a special file")
    return f"not a regular file ({kind}): never opened"


def decode_or_reason(path: Path, size: int) -> np.ndarray | str:
    """:func:`decode`, or why ``path`` cannot be used (a string) when it fails. Only a regular
    file is opened (checked again here: it may have been replaced since it was listed)."""
    try:
        irregular = not_a_regular_file(os.stat(path).st_mode)
        return irregular if irregular else decode(path, size)
    except Exception as e:  # any failure to decode means this file is unusable
        return _why_bad(e)


def decode_serially(files: list[Path], size: int) -> Iterator[np.ndarray | str]:
    """The default :data:`Decoder`: one file after the other, in this process."""
    return (decode_or_reason(f, size) for f in files)


def bad_image_error(path: Path | str, reason: str) -> DataError:
    return DataError(
        f"bad image {path}: {reason}. With data.on_bad_image=fail the first bad image stops "
        "the run: remove or replace this file, or set data.on_bad_image=skip to leave bad "
        "images out (they are then listed in a .bad.json report next to the cache)"
    )


def left_out_notice(bad: list[dict], fail: bool, what: str, report: Path) -> None:
    """Bad files left out of a cache: with ``fail`` the first one's error, else one line on
    stderr naming the first and where all are listed."""
    if not bad:
        return
    first = bad[0]
    if fail:
        raise bad_image_error(first["path"], first["reason"])
    print(
        f"selfsup: {what} (the first {first['path']}: {first['reason']}); all are listed in "
        f"{report}",
        file=sys.stderr,
    )


@dataclass
class Listing:
    """One split folder's image files, ready to decode: what :func:`list_split` found."""

    folder: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]
    listing: list[list[object]]  # [relative path, size, mtime_ns] per file: the cache key
    skipped: Skipped  # left out while looking (links not followed, unreadable files)


def _align_to_train(
    path: Path, folder: Path, labels: list[int], classes: list[str]
) -> tuple[list[int], list[str]]:
    """A test split's ``labels`` and ``classes`` (its own class folders) relabelled by the
    train split's classes, so that label i names one class in both splits (evaluation fits
    on train and scores test with the same labels). A test class the train split has no
    images of is a :class:`DataError`; an unlabeled test split is returned as it is."""
    if not classes:
        return labels, classes
    train_folder = split_folder(path, "train")
    train = scan(train_folder, other_splits(path, train_folder))[2]
    missing = [name for name in classes if name not in train]
    if missing:
        raise DataError(
            f"{folder} holds images of the class {missing[0]!r}, but the train split "
            f"{train_folder} has no images of it (its classes: "
            f"{', '.join(train) or 'none, its images are loose'}); a label must name the same "
            "class in both splits: add that class to the train split or take it out of the "
            "test split"
        )
    index = {name: i for i, name in enumerate(train)}
    return [index[classes[label]] for label in labels], train


def list_split(path: Path, split: str, fail: bool) -> Listing:
    """Find ``split`` of the image folder at ``path`` and stat every image in it; with ``fail``
    the first file that cannot be used is a :class:`DataError`. The test split's labels are
    the train split's classes (:func:`_align_to_train`)."""
    path = path.expanduser().absolute()
    folder = split_folder(path, split)
    exclude = other_splits(path, folder) if split == "train" else frozenset()
    candidates, candidate_labels, classes, skipped = scan(folder, exclude)
    if split == "test":
        candidate_labels, classes = _align_to_train(path, folder, candidate_labels, classes)
    if fail and skipped:
        raise bad_image_error(*skipped[0])
    files, labels, listing = [], [], []
    for f, label in zip(candidates, candidate_labels, strict=True):
        try:
            info = f.stat()
        except OSError as e:
            if fail:
                raise bad_image_error(f, f"cannot read the file: {e.strerror or e}") from e
            skipped.append((f, f"cannot read the file: {e.strerror or e}"))
            continue
        irregular = not_a_regular_file(info.st_mode)
        if irregular:
            if fail:
                raise bad_image_error(f, irregular)
            skipped.append((f, irregular))
            continue
        files.append(f)
        labels.append(label)
        listing.append([f.relative_to(folder).as_posix(), info.st_size, info.st_mtime_ns])
    return Listing(folder, files, labels, classes, listing, skipped)


def build_cache(
    found: Listing,
    npy: Path,
    sidecar: Path,
    report: Path,
    image_size: int,
    fail: bool,
    decoder: Decoder | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Decode ``found`` into the cache ``npy`` (atomically), then its ``sidecar`` (labels,
    classes, relative paths, bad files, and ``extra``); bad files also go to ``report``.

    ``decoder`` turns the files into images in order (default: one by one in this process;
    :mod:`selfsup.data.prepare` passes a process pool's)."""
    good, bad = _build(
        npy,
        found.files,
        found.listing,
        image_size,
        found.folder,
        fail,
        found.skipped,
        report,
        decoder or decode_serially,
    )
    meta = {
        "folder": str(found.folder),
        "labels": [found.labels[i] for i in good],
        "classes": found.classes,
        "paths": [found.listing[i][0] for i in good],
        "bad": [{"path": str(p), "reason": r} for p, r in bad],
        **(extra or {}),
    }
    if bad:
        write_json_atomic(report, _report(found.folder, len(good), bad))
    write_json_atomic(sidecar, meta)


def load_image_folder(
    path: Path, split: str, image_size: int, cache_dir: Path, on_bad_image: str = "skip"
) -> ImageArray:
    """Load ``split`` of the image folder at ``path`` (see the module docstring).

    ``on_bad_image``: ``"skip"`` leaves unusable files out and lists them in the cache's
    ``.bad.json`` report; ``"fail"`` raises a :class:`DataError` naming the first one.
    """
    check_choice("data.on_bad_image", on_bad_image, BAD_IMAGE)
    fail = on_bad_image == "fail"
    found = list_split(path, split, fail)
    folder, classes = found.folder, found.classes
    skipped_key = [[str(p), reason] for p, reason in found.skipped]
    folder_key = cache_key(["imagefolder", str(folder), image_size])
    key = cache_key(
        ["imagefolder", 3, str(folder), image_size, found.listing, skipped_key, classes]
    )  # the classes too: a test split's labels change with the train split's classes
    npy = cache_dir / f"imagefolder-{folder_key}-{key}.npy"
    sidecar = npy.with_suffix(".json")
    report = npy.with_suffix(".bad.json")

    cached = open_cached(npy, sidecar, image_size)
    if cached is None:
        build_cache(found, npy, sidecar, report, image_size, fail)
        keep = {npy, sidecar} | ({report} if report.exists() else set())
        remove_stale(cache_dir, f"imagefolder-{folder_key}-*", keep)
        cached = open_cached(npy, sidecar, image_size)
        if cached is None:
            raise DataError(f"cannot read back the cache {npy} just written; delete it and retry")
    images, good_labels, bad_list = cached
    left_out_notice(
        bad_list,
        fail,
        f"{folder}: skipped {len(bad_list)} bad image file(s) of {len(bad_list) + images.shape[0]}",
        report,
    )
    left_out = {b["path"] for b in bad_list}  # the cache holds the other files, in order
    kept = [f.relative_to(folder).as_posix() for f in found.files if str(f) not in left_out]
    if len(kept) != images.shape[0]:
        raise DataError(f"the cache {npy} does not match {folder}; delete it and retry")
    return ImageArray(images, torch.tensor(good_labels, dtype=torch.int64), classes, files=kept)


def _report(folder: Path, loaded: int, bad: Skipped) -> dict[str, object]:
    return {
        "folder": str(folder),
        "loaded": loaded,
        "skipped": [{"path": str(p), "reason": r} for p, r in bad],
        "note": "these files were left out (data.on_bad_image=skip); fix or remove them, or "
        "set data.on_bad_image=fail to stop at the first",
    }


def _build(
    npy: Path,
    files: list[Path],
    listing: list[list[object]],
    image_size: int,
    folder: Path,
    fail: bool,
    skipped: Skipped,
    report: Path,
    decoder: Decoder,
) -> tuple[list[int], Skipped]:
    """Decode ``files`` into the cache ``npy``: the indices of the good ones, and all the files
    left out (``skipped`` from the scan, then the ones that do not decode)."""
    shape = (len(files), 3, image_size, image_size)
    good: list[int] = []
    bad: Skipped = list(skipped)

    def fill(out: np.ndarray) -> None:
        results = decoder(files, image_size)
        bar = tqdm(results, total=len(files), desc=f"decoding {folder.name}", unit="img")
        for i, result in enumerate(bar):
            reason = "empty file (0 bytes)" if listing[i][1] == 0 else result
            if isinstance(reason, str):  # any failure to decode means this file is unusable
                if fail:
                    raise bad_image_error(files[i], reason)
                bad.append((files[i], reason))
                continue
            out[len(good)] = result
            good.append(i)
        if not good:
            write_json_atomic(report, _report(folder, 0, bad))
            raise DataError(
                f"none of the {len(files)} image files in {folder} could be used (the first, "
                f"{bad[0][0]}: {bad[0][1]}); every file and its reason is listed in {report}"
            )

    # decoded into a scratch cache first: only once every file is decoded is it known how many
    # images the cache holds (a left-out file means copying the good ones into a smaller one)
    scratch = npy.with_name(f"{npy.stem}.decoding.npy")
    try:
        write_npy_atomic(scratch, shape, fill)
        if len(good) == len(files):
            try:
                os.replace(scratch, npy)
            except OSError as e:
                raise WriteError(f"could not write {npy} ({e.strerror or e})") from e
        else:
            decoded = np.load(scratch, mmap_mode="r")
            n = len(good)

            def compact(out: np.ndarray) -> None:
                for start in range(0, n, 1024):
                    out[start : start + 1024] = decoded[start : min(start + 1024, n)]

            write_npy_atomic(npy, (n, *shape[1:]), compact)
            del decoded
    finally:
        scratch.unlink(missing_ok=True)
    return good, bad


def open_cached(
    npy: Path, sidecar: Path, image_size: int
) -> tuple[torch.Tensor, list[int], list[dict[str, str]]] | None:
    """The cached images, their labels and the bad-file list, when both files are present and
    agree; None means rebuild."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        return None
    if not all(isinstance(label, int) for label in meta["labels"]):
        return None
    bad = meta.get("bad", [])
    if not isinstance(bad, list) or not all(
        isinstance(b, dict) and {"path", "reason"} <= set(b) for b in bad
    ):
        return None
    images = open_npy(npy, (len(meta["labels"]), 3, image_size, image_size))
    if images is None:
        return None
    return images, meta["labels"], bad
