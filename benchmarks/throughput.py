"""Pretraining throughput per method x backbone x image size: selfsup's step against the same
model and loss fed by torchvision's per-image pipeline (``benchmarks/reference.py``).

Each cell runs in its own process (so the peak memory is the cell's own) on random uint8 RGB
images with the method's CIFAR-10 recipe (``configs/cifar10/<method>.yaml``: its projector,
views, optimizer, precision) on the chosen backbone; after warm-up steps (which include any
compilation) it times ``--steps`` training steps, split into

- views: selfsup's batched ``make_views`` on the training device; for the reference, the wait
  for the DataLoader's next batch (per-image torchvision v2 transforms in ``os.cpu_count()``
  workers) and its copy to the device;
- forward (under the run's autocast), backward, optimizer (the step and the method's EMA /
  queue / centre updates).

FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward
and backward of the whole method on a batch (a multiply-add counts 2), and divided by the
batch; achieved FLOP/s = FLOPs per step / (forward + backward + optimizer seconds). On CUDA
the table adds MFU against the device's dense bf16 peak when it is known. Peak memory: CUDA's
``max_memory_allocated``; on the CPU the process's peak resident set (``ru_maxrss``).

Every grid starts with the cells ``demo``: ``configs/demo.yaml`` as ``make demo`` trains it
(28-px grey images, batch 256, 20 timed steps): selfsup eager and compiled, the reference, and the
reference with PyTorch's default step (fp32, NCHW: no bf16 autocast, no channels_last).

Usage: ``python benchmarks/throughput.py [--grid default|methods|full] [--steps 3]
[--device auto|cpu|cuda]`` (one cell: ``--cell vicreg,resnet18,32,eager,selfsup``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from reference import hardware, loader, pytorch_default_step
from selfsup.config import load_config
from selfsup.data.views import make_views
from selfsup.precision import amp_dtype, autocast_for
from selfsup.rundir import make_method
from selfsup.train.loop import resolve_device
from selfsup.train.optim import build_optimizer

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "cifar10"
DEMO = CONFIGS.parent / "demo.yaml"  # the cell "demo": make demo's recipe, 28-px grey images
DEMO_STEPS = 20  # the demo's steps are short: time more of them
METHODS = ["vicreg", "barlow_twins", "simclr", "moco", "isd", "dino", "dino_twins"]
BACKBONES = ["small_resnet", "resnet18", "resnet50", "vit_tiny_p4"]
BATCH = {"small_resnet": 256, "resnet18": 128, "resnet50": 64, "vit_tiny_p4": 128}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def grid(name: str) -> list[tuple[str, str, int, str, str]]:
    """(method, backbone, size, eager|compiled, selfsup|reference) cells."""
    demo = [("demo", "small_resnet", 28, "eager", p) for p in ("selfsup", "reference")]
    demo += [
        ("demo", "small_resnet", 28, "eager", "reference-fp32"),
        ("demo", "small_resnet", 28, "compiled", "selfsup"),
    ]
    if name == "quick":  # what a 2-core CPU measures in minutes: VICReg on four backbones
        cells = [("vicreg", b, 32) for b in ("small_resnet", "resnet18", "vit_tiny_p4")]
        cells.append(("vicreg", "resnet18", 96))
        out = [(m, b, s, "eager", p) for m, b, s in cells for p in ("selfsup", "reference")]
        return [*demo, *out, ("vicreg", "small_resnet", 32, "compiled", "selfsup")]
    cells = []
    if name in ("default", "methods", "full"):
        cells += [(m, "small_resnet", 32) for m in METHODS]
    if name in ("default", "full"):
        cells += [("vicreg", b, 32) for b in BACKBONES[1:]]
        cells += [("vicreg", b, 96) for b in BACKBONES[:3]]
    if name == "full":
        cells += [
            (m, b, s)
            for m in METHODS[1:]
            for b in BACKBONES[1:]
            for s in (32, 96)
            if not (b == "vit_tiny_p4" and s == 96)
        ]
    out = [(m, b, s, "eager", p) for m, b, s in cells for p in ("selfsup", "reference")]
    compiled = (
        cells if name == "full" else [("vicreg", "small_resnet", 32), ("vicreg", "resnet18", 32)]
    )
    return demo + out + [(m, b, s, "compiled", "selfsup") for m, b, s in compiled]


def build(method: str, backbone: str, size: int, compiled: bool, device_name: str, batch: int):
    flags = [
        f"train.device={device_name}",
        f"train.compile={str(compiled).lower()}",
        f"views.compile={str(compiled).lower()}",
    ]
    if method == "demo":  # configs/demo.yaml as `make demo` trains it (batch 256, 28 px, grey)
        cfg = load_config(
            DEMO, [*flags, f"views.size={size}", "data.mean=[0.286]", "data.std=[0.353]"]
        )
        return cfg, make_method(cfg, 1)
    cfg = load_config(
        CONFIGS / f"{method}.yaml",
        [
            f"backbone.name={backbone}",
            f"train.batch_size={batch or BATCH[backbone]}",
            f"train.device={device_name}",
            f"views.size={size}",
            f"data.mean={MEAN}",
            f"data.std={STD}",
            f"train.compile={str(compiled).lower()}",
            f"views.compile={str(compiled).lower()}",
        ],
    )
    return cfg, make_method(cfg, 3)


def run_cell(
    method: str,
    backbone: str,
    size: int,
    mode: str,
    pipeline: str,
    steps: int,
    device_name: str,
    batch: int = 0,
) -> dict:
    compiled = mode == "compiled"
    cfg, m = build(method, backbone, size, compiled, device_name, batch)
    if pipeline == "reference-fp32":  # the reference step as PyTorch runs it by default
        cfg.train = pytorch_default_step(cfg.train)
    if method == "demo":
        steps = max(steps, DEMO_STEPS)
    tc, device = cfg.train, resolve_device(device_name)
    m.to(device)
    if tc.channels_last:
        m.to(memory_format=torch.channels_last)
    model = torch.compile(m) if compiled else m
    optimizer = build_optimizer(m.param_groups(tc.weight_decay), tc, tc.lr * tc.batch_size / 256)
    autocast = autocast_for(device, amp_dtype(tc.precision, device))
    warmup = 3 if compiled else 1
    n = tc.batch_size * (warmup + steps + 1)
    gen = torch.Generator().manual_seed(0)
    channels = 1 if method == "demo" else 3
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    if pipeline == "selfsup":
        images = images.to(device)
        view_gen = torch.Generator(device=device).manual_seed(0)
        batches = iter(images.split(tc.batch_size))

        def next_views():
            return make_views(next(batches), m.view_specs, view_gen, compile=cfg.views.compile)
    else:
        batches = iter(loader(images, m.view_specs, tc.batch_size, seed=0))

        def next_views():
            return [v.to(device, non_blocking=True) for v in next(batches)]

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(i: int) -> list[float]:
        t0 = sync()
        with torch.no_grad():
            views = next_views()
        if tc.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        t1 = sync()
        m.before_step(i, 1000, 100)
        with autocast:
            out = model(views)
        t2 = sync()
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        m.after_backward()
        t3 = sync()
        optimizer.step()
        m.on_step_end(i, 1000)
        t4 = sync()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3]

    t_warm = time.perf_counter()
    for i in range(warmup):
        step(i)
    warm_s = time.perf_counter() - t_warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [step(warmup + i) for i in range(steps)]
    parts = [sum(t[j] for t in times) / steps for j in range(4)]
    with torch.no_grad():
        views = next_views()
    counter = FlopCounterMode(display=False)
    with counter, autocast:  # counted on the eager method: compilation does not change FLOPs
        m(views).loss.backward()
    flops_per_step = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    compute_s = parts[1] + parts[2] + parts[3]
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "method": method,
        "backbone": backbone,
        "size": size,
        "mode": mode,
        "pipeline": pipeline,
        "batch": tc.batch_size,
        "steps": steps,
        "images_per_s": tc.batch_size / sum(parts),
        "views_s": parts[0],
        "forward_s": parts[1],
        "backward_s": parts[2],
        "optimizer_s": parts[3],
        "warmup_s": warm_s,
        "gflops_per_image": flops_per_step / tc.batch_size / 1e9,
        "achieved_tflops": flops_per_step / compute_s / 1e12,
        "peak_mib": peak / 2**20,
        "bf16": amp_dtype(tc.precision, device) is torch.bfloat16,
        "device": hardware(device),
    }


def mfu(row: dict) -> str:
    peak = next((v for k, v in PEAK_BF16.items() if k in row["device"]), None)
    return f"{100 * row['achieved_tflops'] * 1e12 / peak:.0f}%" if peak else "n/a"


def table(rows: list[dict]) -> str:
    ref = {
        (r["method"], r["backbone"], r["size"]): r["images_per_s"]
        for r in rows
        if r["pipeline"] == "reference"
    }
    lines = [
        "| method | backbone | px | pipeline | img/s | vs reference | views / fwd / bwd / opt ms "
        "| GFLOP/img | TFLOP/s | MFU | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ref.get((r["method"], r["backbone"], r["size"]))
        name = {
            "reference": "torchvision DataLoader",
            "reference-fp32": "torchvision DataLoader, fp32 NCHW step",
        }.get(r["pipeline"], f"selfsup {r['mode']}")
        ms = " / ".join(
            f"{1000 * r[k]:.0f}" for k in ("views_s", "forward_s", "backward_s", "optimizer_s")
        )
        lines.append(
            f"| {r['method']} | {r['backbone']} | {r['size']} | {name} | {r['images_per_s']:,.0f} "
            f"| {r['images_per_s'] / base:.2f}x | {ms} | {r['gflops_per_image']:.2f} "
            f"| {r['achieved_tflops']:.3f} | {mfu(r)} | {r['peak_mib']:,.0f} |"
            if base
            else f"| {r['method']} | {r['backbone']} | {r['size']} | {name} | "
            f"{r['images_per_s']:,.0f} | n/a | {ms} | {r['gflops_per_image']:.2f} | "
            f"{r['achieved_tflops']:.3f} | {mfu(r)} | {r['peak_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid", default="default", choices=["quick", "default", "methods", "full"]
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="images per step (default: 256 small ResNet / 128 ResNet-18, ViT / 64 ResNet-50 "
        "on a GPU; 64 on the CPU)",
    )
    parser.add_argument("--cell", help="run one cell: METHOD,BACKBONE,SIZE,MODE,PIPELINE")
    parser.add_argument("--out", type=Path, default=Path("runs/throughput.jsonl"))
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 0 if resolve_device(args.device).type == "cuda" else 64
    if args.cell:
        m, b, s, mode, p = args.cell.split(",")
        print(json.dumps(run_cell(m, b, int(s), mode, p, args.steps, args.device, args.batch)))
        return
    cells = grid(args.grid)
    done = {}
    if args.out.exists():  # a rerun skips the cells already measured
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done[(r["method"], r["backbone"], r["size"], r["mode"], r["pipeline"])] = r
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}; {len(cells)} cells, {len(done)} already in {args.out}")
    for i, cell in enumerate(cells, 1):
        if cell in done:
            continue
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--cell",
            ",".join(map(str, cell)),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--batch",
            str(args.batch),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"[{i}/{len(cells)}] {cell}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        done[cell] = row
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"[{i}/{len(cells)}] {cell}: {row['images_per_s']:,.0f} img/s "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    rows = [done[c] for c in cells if c in done]
    print(f"\n{rows[0]['device'] if rows else ''}\n{table(rows)}")


if __name__ == "__main__":
    main()
