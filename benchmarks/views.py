"""Throughput of the batched views vs torchvision's per-image v2 pipeline in a DataLoader.

Both paths make the same two VICReg views (:func:`selfsup.data.vicreg_views`) of random uint8
RGB images and are counted in images per second (two views each), after a warm-up, in one run:

- ``batched``: ``make_views(images, vicreg_views(size, ...), gen)`` on whole batches on the
  chosen device (all CPU cores via ``torch.set_num_threads``; on CUDA timed with events),
  eager and with ``compile=True`` (``torch.compile``; compilation happens in the untimed warm-up
  and its wall time is printed beside the figure);
- ``torchvision``: a Dataset of uint8 CHW tensors whose ``__getitem__`` applies the two v2
  pipelines with identical settings, in ``DataLoader(batch_size, num_workers=os.cpu_count())``
  (a warm-up epoch with persistent workers, then a timed epoch).

Usage: ``python benchmarks/views.py [--batches 8] [--sizes 32,96] [--device auto|cpu|cuda]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from selfsup.data.views import ViewSpec, make_views, vicreg_views

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def torchvision_pipeline(spec: ViewSpec) -> v2.Compose:
    """The per-image torchvision v2 equivalent of ``spec`` (uint8 CHW in, float CHW out)."""
    interp = v2.InterpolationMode(spec.interpolation)
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                spec.size, spec.crop_scale, spec.crop_ratio, interpolation=interp, antialias=True
            ),
            v2.RandomHorizontalFlip(spec.hflip_p),
            v2.RandomApply(
                [v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)],
                p=spec.jitter_p,
            ),
            v2.RandomGrayscale(spec.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, spec.blur_sigma)], p=spec.blur_p),
            v2.RandomSolarize(spec.solarize_threshold * 255, p=spec.solarize_p),  # on uint8
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(spec.mean), list(spec.std)),
        ]
    )


class TwoViews(Dataset):
    """uint8 images (N, C, H, W); item i -> (view_1, view_2) by the torchvision pipelines."""

    def __init__(self, images: torch.Tensor, specs: list[ViewSpec]) -> None:
        self.images = images
        self.pipelines = [torchvision_pipeline(s) for s in specs]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(p(self.images[i]) for p in self.pipelines)


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
        TwoViews(images, specs),
        batch_size=batch,
        num_workers=os.cpu_count() or 1,
        persistent_workers=True,
    )
    for _ in loader:  # warm-up epoch: worker start-up, first-call overheads
        pass
    t0 = time.perf_counter()
    n = sum(len(v1) for v1, _ in loader)
    seconds = time.perf_counter() - t0
    del loader
    return n / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per path and size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sizes", default="32,96", help="comma-separated image sides")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    hw = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(
        f"torch {torch.__version__}; batched on {device} ({hw}), {torch.get_num_threads()} threads;"
        f" torchvision DataLoader with {threads} workers; batch {args.batch_size},"
        f" {args.batches} timed batches\n"
    )
    print("| path | size | images/s (2 views) | speed-up |")
    print("|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for size in (int(s) for s in args.sizes.split(",")):
        specs = vicreg_views(size, MEAN, STD)
        n = args.batches * args.batch_size
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
        tv = bench_torchvision(images, specs, args.batch_size)
        tv_path = f"torchvision v2 per image, DataLoader({threads} workers)"
        print(f"| {tv_path} | {size} | {tv:,.0f} | 1.0x |", flush=True)
        for compile in (False, True):
            t0 = time.perf_counter()
            ours = bench_batched(images.to(device), specs, args.batch_size, compile)
            name = "compiled (views.compile=true)" if compile else "eager"
            note = f", incl. {time.perf_counter() - t0:.0f} s to compile" if compile else ""
            print(
                f"| batched make_views, {name} ({device}{note}) | {size} | {ours:,.0f} "
                f"| {ours / tv:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
