"""Throughput of the batched views vs torchvision's per-image v2 pipeline in a DataLoader.

Both paths make the same two VICReg views (:func:`selfsup.data.recipes.byol_pair`) of random uint8
RGB images and are counted in images per second (two views each), after a warm-up:

- ``torchvision``: the per-image v2 pipeline of ``benchmarks/reference.py``
  (``torchvision_pipeline``, ``Views``) in ``DataLoader(batch_size, num_workers=os.cpu_count())``
  (a warm-up epoch with persistent workers, then a timed epoch);
- ``batched``: ``make_views(images, byol_pair(size, ...), gen)`` on whole batches on the
  chosen device (all CPU cores via ``torch.set_num_threads``; on CUDA timed with events), eager
  and with ``compile=True`` (compilation happens in the untimed warm-up; its wall time is shown);
  eager once more on 1 thread: a per-core figure, and one that a busy machine disturbs less
  (OpenMP's threads wait for each other at every op when another process holds a core).

The script runs itself ``--runs`` times (3), each a fresh process, and prints one markdown table:
the median and the spread (min-max) over the runs of each path's images/s and of its speed-up
(per-run ratio to that run's torchvision figure), with the 1-minute load average (``uptime``)
read before each measurement. Run it at nice 0 on a machine as quiet as you can get.

Usage: ``python benchmarks/views.py [--runs 3] [--batches 8] [--sizes 32,96] [--device auto]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader

from reference import Views, hardware
from selfsup.data.recipes import byol_pair
from selfsup.data.views import ViewSpec, make_views

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PATHS = ("torchvision", "eager", "eager-1", "compiled")


def bench_batched(
    images: torch.Tensor, specs: list[ViewSpec], batch: int, compile: bool, warmup: int = 2
) -> float:
    """Images/s of :func:`make_views` over consecutive batches of ``images`` (on its device);
    with ``compile`` the warm-up batches include the one-time compilation, which is not timed."""
    gen = torch.Generator(device=images.device).manual_seed(0)
    batches = images.split(batch)
    for b in batches[:warmup]:
        make_views(b, specs, gen, compile=compile)
    cuda = images.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    else:
        t0 = time.perf_counter()
    for b in batches:
        make_views(b, specs, gen, compile=compile)
    if cuda:
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        seconds = time.perf_counter() - t0
    return len(images) / seconds


def bench_torchvision(images: torch.Tensor, specs: list[ViewSpec], batch: int) -> float:
    """Images/s of the per-image torchvision pipelines in a multi-worker DataLoader."""
    loader = DataLoader(
        Views(images, specs),
        batch_size=batch,
        num_workers=os.cpu_count() or 1,
        persistent_workers=True,
    )
    for _ in loader:  # warm-up epoch: worker start-up, first-call overheads
        pass
    t0 = time.perf_counter()
    n = sum(len(views[0]) for views in loader)
    seconds = time.perf_counter() - t0
    del loader
    return n / seconds


def one_run(sizes: list[int], batch: int, batches: int, device: str) -> dict:
    """One measurement of every path and size: {"size": {"path": [images/s, load, extra]}}."""
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(0)
    out: dict = {}
    for size in sizes:
        specs = byol_pair(size, MEAN, STD)
        images = torch.randint(
            0, 256, (batches * batch, 3, size, size), dtype=torch.uint8, generator=gen
        )
        row = out[str(size)] = {}
        load = os.getloadavg()[0]
        row["torchvision"] = [bench_torchvision(images, specs, batch), load, 0.0]
        for path in PATHS[1:]:
            torch.set_num_threads(1 if path == "eager-1" else os.cpu_count() or 1)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            rate = bench_batched(images.to(device), specs, batch, path == "compiled")
            total = time.perf_counter() - t0 - batches * batch / rate  # the untimed warm-up
            row[path] = [rate, load, total]
    return out


def spread(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of ``values``."""
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def table(runs: list[dict], sizes: list[int], device: str) -> str:
    lines = [
        "| path | size | images/s (2 views), median (min-max) | speed-up vs torchvision |"
        " load avg (1 min) |",
        "|---|---|---|---|---|",
    ]
    names = {
        "torchvision": f"torchvision v2 per image, DataLoader({os.cpu_count()} workers)",
        "eager": f"batched make_views, eager ({device})",
        "eager-1": f"batched make_views, eager ({device}), 1 thread",
        "compiled": f"batched make_views, compiled ({device})",
    }
    for size in sizes:
        for path in PATHS:
            cells = [r[str(size)][path] for r in runs]
            rates = [c[0] for c in cells]
            base = [r[str(size)]["torchvision"][0] for r in runs]
            ratios = [c[0] / b for c, b in zip(cells, base, strict=True)]
            loads = [c[1] for c in cells]
            name = names[path]
            if path == "compiled":
                name += f", warm-up incl. compile {statistics.median(c[2] for c in cells):.0f} s"
            lines.append(
                f"| {name} | {size} | {spread(rates, ',.0f')} | {spread(ratios, '.1f')}x |"
                f" {spread(loads, '.2f')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh-process repetitions")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per path and size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sizes", default="32,96", help="comma-separated image sides")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one_run:  # a child: one measurement, as JSON on the last line of stdout
        print(json.dumps(one_run(sizes, args.batch_size, args.batches, device)))
        return
    child = [sys.executable, os.path.abspath(__file__), "--one-run", "--device", device]
    child += ["--batches", str(args.batches), "--batch-size", str(args.batch_size)]
    child += ["--sizes", args.sizes]
    runs = []
    for i in range(args.runs):
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"run {i + 1}/{args.runs} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    hw = hardware(torch.device(device))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {hw}; torch {torch.__version__}; nice"
        f" {os.nice(0)}; {os.cpu_count()} threads (batched) / workers (torchvision); batch"
        f" {args.batch_size}, {args.batches} timed batches; {args.runs} runs (fresh processes)\n"
    )
    print(table(runs, sizes, device))


if __name__ == "__main__":
    main()
