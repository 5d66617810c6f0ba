"""``selfsup prepare``: decode an image folder once into a memory-mapped cache.

selfsup prepare imagefolder:~/photos --size 96 --out ~/caches/photos-96
selfsup pretrain --config configs/... data.dataset=cache:~/caches/photos-96
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfsup.errors import ConfigError

PREFIX = "imagefolder:"
HELP = """A prepared cache is read memory-mapped, batch by batch, by a background thread: the
dataset does not have to fit in RAM or on the GPU. Decoding uses every core once; training then
never decodes. Use it as data.dataset=cache:OUT (data.image_size is the --size it was prepared
at). A killed prepare leaves no OUT behind (it is built in a hidden folder, then renamed)."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="decode an image folder once into a memory-mapped cache (data bigger than memory)",
        description=HELP,
    )
    p.add_argument("source", help="the images to decode: imagefolder:PATH")
    p.add_argument("--size", type=int, required=True, help="side of the square images, pixels")
    p.add_argument("--out", type=Path, required=True, help="the cache folder to write")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: every core this process may use)",
    )
    p.add_argument(
        "--on-bad-image",
        choices=("skip", "fail"),
        default="skip",
        help="skip: leave unusable files out, listed in OUT/<split>/bad.json (default); "
        "fail: stop at the first, naming it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a cache already at --out")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.data.prepare import prepare_image_folder

    if not args.source.startswith(PREFIX) or len(args.source) == len(PREFIX):
        raise ConfigError(
            f"selfsup prepare decodes imagefolder:PATH, got {args.source!r}; the other "
            "datasets are read directly (cifar10, ...) or are already cached (stl10)"
        )
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    start = time.perf_counter()
    counts = prepare_image_folder(
        args.source[len(PREFIX) :],
        args.size,
        args.out,
        workers=args.workers,
        on_bad_image=args.on_bad_image,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    splits = ", ".join(f"{split} {n}" for split, n in counts.items())
    print(
        f"wrote {args.out}: {splits} images of {args.size} px in {seconds:.1f} s "
        f"({total / max(seconds, 1e-9):.0f} images/s); train on it with "
        f"data.dataset=cache:{args.out}"
    )
    return 0
