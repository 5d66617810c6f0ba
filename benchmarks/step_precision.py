"""Training-step throughput of VICReg's small ResNet under fp32 / bf16 autocast / channels_last
/ ``torch.compile``.

Random 28-px grayscale uint8 images, batch 256: views + forward + backward + optimizer step,
4 timed steps (``--steps``) after 2 warm-up steps (which include any compilation: their wall
time is printed); images/s of the views alone, the model alone and both. The first rows use
SGD and narrower projectors; the ``demo`` rows are ``configs/demo.yaml`` itself (LARS,
projector 1024-1024-1024). This is the probe behind ``train.precision=auto`` choosing bf16 on
CPUs with AVX-512 BF16, ``train.channels_last`` on the CPU and ``train.compile`` staying off
(benchmarks/RESULTS.md, "Choosing the CPU recipe" and "The CPU step").

Usage: ``python benchmarks/step_precision.py [--threads 2] [--steps 4] [--only-demo]``
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
from selfsup.train.optim import build_optimizer

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
CASES = [  # widths, projector, bf16, channels_last, compile, optimizer
    ([16, 32, 64], "512-512-512", False, False, False, "sgd"),
    ([16, 32, 64], "512-512-512", True, False, False, "sgd"),
    ([16, 32, 64], "512-512-512", False, True, False, "sgd"),
    ([16, 32, 64], "512-512-512", True, True, False, "sgd"),
    ([32, 64, 128], "1024-1024-1024", False, False, False, "sgd"),
    ([32, 64, 128], "1024-1024-1024", True, True, False, "sgd"),
]
DEMO_CASES = [  # configs/demo.yaml as it trains (LARS, projector 1024-1024-1024)
    ([16, 32, 64], "1024-1024-1024", False, False, False, "demo"),
    ([16, 32, 64], "1024-1024-1024", True, True, False, "demo"),
    ([16, 32, 64], "1024-1024-1024", True, True, True, "demo"),
]


def probe(
    widths: list[int],
    projector: str,
    bf16: bool,
    channels_last: bool,
    compiled: bool,
    optimizer: str,
    steps: int = 4,
) -> str:
    cfg = load_config(DEMO, [f"backbone.widths={widths}", f"method.projector={projector}"])
    method = build_method(cfg, in_channels=1, image_size=28, mean=[0.28], std=[0.35])
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    if optimizer == "demo":  # the demo's LARS with its groups (no decay / trust ratio on biases)
        tc = cfg.train
        groups = method.param_groups(tc.weight_decay)
        opt = build_optimizer(groups, tc, tc.lr * tc.batch_size / 256)
    else:
        opt = torch.optim.SGD(method.parameters(), lr=0.01)
    model = torch.compile(method) if compiled else method
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (2048, 1, 28, 28), dtype=torch.uint8, generator=g)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t_views = t_model = 0.0
    start = time.perf_counter()
    for i in range(2 + steps):
        if i == 2:
            warm = time.perf_counter() - start
        t0 = time.perf_counter()
        batch = images[torch.randint(0, len(images), (256,), generator=g)]
        with torch.no_grad():
            views = make_views(batch, method.view_specs, g)
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        t1 = time.perf_counter()
        with autocast:
            out = model(views)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i >= 2:
            t_views, t_model = t_views + t1 - t0, t_model + t2 - t1
    n = steps * 256
    return (
        f"| {widths} | {projector} | {optimizer} | {bf16} | {channels_last} | {compiled} | "
        f"{n / t_views:,.0f} | {n / t_model:,.0f} | {n / (t_views + t_model):,.0f} | "
        f"{warm:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case")
    parser.add_argument("--only-demo", action="store_true", help="the demo rows only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(
        "| widths | projector | optimizer | bf16 | channels_last | compiled | views img/s | "
        "model img/s | step img/s | warm-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in ([] if args.only_demo else CASES) + DEMO_CASES:
        print(probe(*case, steps=args.steps), flush=True)


if __name__ == "__main__":
    main()
