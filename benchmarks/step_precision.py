"""Training-step throughput of VICReg's small ResNet under fp32 / bf16 autocast / channels_last.

Random 28-px grayscale uint8 images, batch 256: views + forward + backward + SGD step, 4 timed
steps after 2 warm-up steps; images/s of the views alone, the model alone and both. This is the
probe behind ``train.precision=auto`` choosing bf16 on CPUs with AVX-512 BF16 and
``train.channels_last`` on the CPU (benchmarks/RESULTS.md, "Choosing the CPU recipe").

Usage: ``python benchmarks/step_precision.py [--threads 2]``
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

from selfsup.config import load_config
from selfsup.data.views import make_views
from selfsup.methods import build_method

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
CASES = [  # widths, projector, bf16, channels_last
    ([16, 32, 64], "512-512-512", False, False),
    ([16, 32, 64], "512-512-512", True, False),
    ([16, 32, 64], "512-512-512", False, True),
    ([16, 32, 64], "512-512-512", True, True),
    ([32, 64, 128], "1024-1024-1024", False, False),
    ([32, 64, 128], "1024-1024-1024", True, True),
]


def probe(widths: list[int], projector: str, bf16: bool, channels_last: bool) -> str:
    cfg = load_config(DEMO, [f"backbone.widths={widths}", f"method.projector={projector}"])
    method = build_method(cfg, in_channels=1, image_size=28, mean=[0.28], std=[0.35])
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(method.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (2048, 1, 28, 28), dtype=torch.uint8, generator=g)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t_views = t_model = 0.0
    for i in range(6):
        t0 = time.perf_counter()
        batch = images[torch.randint(0, len(images), (256,), generator=g)]
        with torch.no_grad():
            views = make_views(batch, method.view_specs, g)
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        t1 = time.perf_counter()
        with autocast:
            out = method(views)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i >= 2:
            t_views, t_model = t_views + t1 - t0, t_model + t2 - t1
    n = 4 * 256
    return (
        f"| {widths} | {projector} | {bf16} | {channels_last} | {n / t_views:,.0f} | "
        f"{n / t_model:,.0f} | {n / (t_views + t_model):,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| widths | projector | bf16 | channels_last | views img/s | model img/s | step img/s |")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        print(probe(*case), flush=True)


if __name__ == "__main__":
    main()
