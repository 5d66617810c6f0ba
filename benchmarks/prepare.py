"""Data bigger than memory: is reading a prepared cache ever the bottleneck?

1. Writes ``--images`` JPEGs (``--source-size`` px square, quality 90, 10 class folders, smooth
   random content so they compress like photos) into ``--folder`` (kept for reruns).
2. Times ``selfsup prepare`` on them at ``--size`` px: with one process, and with every core.
3. Times the training read path on the prepared memmap: :class:`selfsup.train.reader.Batches`
   over one epoch of :class:`~selfsup.train.loop.BatchStream` batches of ``--batch`` images
   (sorted reads, un-permuted into reusable buffers, on a background thread), against plain
   ``images[idx]`` on the same memmap. The page cache holds the file (it was just written), as
   after the first epoch of a dataset that fits in RAM; a colder cache reads from disk.
4. Times the real training step it has to keep up with: VICReg (the CIFAR-10 recipe) on a
   ResNet-18 at ``--size`` px, batch ``--step-batch`` (``benchmarks/throughput.py``'s cell:
   views + forward + backward + optimizer), on the CPU.

Usage: ``nice -n 5 python benchmarks/prepare.py [--images 20000] [--size 96]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reference import hardware
from selfsup.data.prepare import default_workers, load_prepared, prepare_image_folder
from selfsup.train.loop import BatchStream
from selfsup.train.reader import Batches
from throughput import run_cell

CLASSES = 10


def _write_one(task: tuple[Path, int, int]) -> None:
    path, side, seed = task
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # smooth colour fields + noise
    image = Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)
    noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (side, side, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_folder(folder: Path, n: int, side: int) -> None:
    """``n`` JPEGs of ``side`` px in ``folder/class{k}/``; skipped when already there."""
    paths = [folder / f"class{i % CLASSES}" / f"{i:06d}.jpg" for i in range(n)]
    if folder.is_dir() and len(list(folder.rglob("*.jpg"))) == n and paths[-1].is_file():
        return
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(default_workers()) as pool:
        pool.map(_write_one, [(p, side, i) for i, p in enumerate(paths)], chunksize=256)


def time_prepare(folder: Path, size: int, out: Path, workers: int) -> float:
    start = time.perf_counter()
    counts = prepare_image_folder(folder, size, out, workers=workers, overwrite=True)
    return counts["train"] / (time.perf_counter() - start)


def time_reads(cache: Path, batch: int) -> dict[str, float]:
    images = load_prepared(cache, "train").images
    batches = list(BatchStream(len(images), batch, seed=0).epoch(0))
    n = batch * len(batches)
    start = time.perf_counter()
    for idx in batches:
        _ = images[idx]  # the read is the work
    direct = n / (time.perf_counter() - start)
    start = time.perf_counter()
    with Batches(images, batches, "cpu") as reader:
        for _ in reader:
            pass
    return {"direct": direct, "batches": n / (time.perf_counter() - start)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--source-size", type=int, default=96, help="side of the JPEGs written")
    p.add_argument("--size", type=int, default=96, help="prepared side, and the step's")
    p.add_argument("--batch", type=int, default=256, help="batch of the read benchmark")
    p.add_argument("--step-batch", type=int, default=64, help="batch of the training step")
    p.add_argument("--steps", type=int, default=3, help="timed training steps")
    p.add_argument("--folder", type=Path, default=Path("/tmp/selfsup-bench-prepare"))
    args = p.parse_args()
    images, cache = args.folder / "images", args.folder / "cache"
    load = os.getloadavg()
    start = time.perf_counter()
    write_folder(images, args.images, args.source_size)
    print(f"{args.images} JPEGs in {images} ({time.perf_counter() - start:.0f} s)", flush=True)
    workers = default_workers()
    one = time_prepare(images, args.size, cache, 1)
    every = time_prepare(images, args.size, cache, workers)
    reads = time_reads(cache, args.batch)
    step = run_cell(
        "vicreg", "resnet18", args.size, "eager", "selfsup", args.steps, "cpu", args.step_batch
    )["images_per_s"]
    rows = {
        "prepare, 1 process": one,
        f"prepare, {workers} processes": every,
        f"memmap images[idx], batch {args.batch}": reads["direct"],
        f"memmap Batches (reader thread), batch {args.batch}": reads["batches"],
        f"VICReg ResNet-18 {args.size} px step, batch {args.step_batch}": step,
    }
    print(f"\n{hardware(torch.device('cpu'))}; load average before {load}, after {os.getloadavg()}")
    print("| what | images/s |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:,.0f} |" if value >= 100 else f"| {name} | {value:.2f} |")
    print(f"\nreading is {reads['batches'] / step:,.0f}x faster than the step it feeds")
    print(json.dumps({"rows": rows, "load_before": load, "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
