"""Every SSL method on Fashion-MNIST with one small backbone and one budget: kNN top-1 of the
pretrained backbone next to a randomly initialised one of the same architecture.

Each method runs ``selfsup.pipeline.pretrain`` from ``configs/demo.yaml`` (a 3-stage small
ResNet, AdamW lr 2e-3, weight decay 0.05, batch 256) with the method's own paper defaults except
what a few-epoch CPU budget forces, listed in ``SMALL_BUDGET`` (narrow heads, short queues,
faster teachers, 2 local crops). Hyper-parameters are not tuned per method, so the table ranks
the methods at this budget only, not in general.

The kNN (k = 20, DINO's weighted vote) bank is ``--train-limit`` training images, the figures
are on ``--test-limit`` test images; nothing is chosen on the test split.

Usage: ``python benchmarks/methods.py [--epochs 3] [--limit 10000] [--methods vicreg,dino]
[--device auto] [--out runs/bench-methods]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from selfsup.config import load_config
from selfsup.methods import METHODS
from selfsup.pipeline import pretrain

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
DINO_SMALL = [
    "method.out_dim=1024",
    "method.hidden_dim=512",
    "method.bottleneck_dim=128",
    "method.local_crops=2",
    "method.momentum_teacher=0.99",
    "method.warmup_teacher_temp_epochs=1",
    "method.freeze_last_layer=0",
]
SMALL_BUDGET = {
    "vicreg": ["method.projector=512-512-512"],
    "barlow_twins": ["method.projector=512-512-512"],
    "simclr": ["method.projector=512-128"],
    "moco": [
        "method.projector=512-128",
        "method.queue_size=4096",
        "method.momentum=0.99",
        "method.momentum_final=0.99",
        "method.symmetric=true",
    ],
    "isd": ["method.queue_size=4096"],
    "dino": DINO_SMALL,
    "dino_twins": [*DINO_SMALL, "method.bt_projector=512-512-512"],
}


def run(method: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / method
    if out.exists():
        shutil.rmtree(out)
    cfg = load_config(
        DEMO,
        [
            *SMALL_BUDGET[method],
            f"train.epochs={args.epochs}",
            f"data.limit={args.limit}",
            f"train.device={args.device}",
            f"seed={args.seed}",
            "eval.protocols=[knn]",
            "eval.knn.k=[20]",
            f"eval.train_limit={args.train_limit}",
            f"eval.test_limit={args.test_limit}",
            "train.progress=false",
        ],
        method={"name": method},  # the method's own defaults, not the demo's VICReg section
    )
    t0 = time.perf_counter()
    results = pretrain(cfg, out)
    seconds = time.perf_counter() - t0
    top1 = {r["init"]: r["top1"] for r in results["evals"] if r["protocol"] == "knn"}
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in losses if "loss" in r]
    return {
        "method": method,
        "pretrained": top1["pretrained"],
        "random": top1["random"],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SMALL_BUDGET), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=10000, help="pretraining images")
    parser.add_argument("--train-limit", type=int, default=10000, help="kNN bank images")
    parser.add_argument("--test-limit", type=int, default=5000, help="test images reported on")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-methods")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    for m in methods:
        METHODS.get(m)  # fail at once on a typo, listing the valid names
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    hw = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(
        f"torch {torch.__version__} on {device} ({hw}, {torch.get_num_threads()} threads); "
        f"Fashion-MNIST, {args.limit} images x {args.epochs} epochs, small_resnet [1,1,1] "
        f"16-32-64; kNN-20 on {args.test_limit} test images, bank {args.train_limit}\n"
    )
    rows = []
    for m in methods:
        rows.append(run(m, args))
        r = rows[-1]
        print(f"  {m}: {100 * r['pretrained']:.1f}% ({r['seconds']:.0f} s)", flush=True)
    print("\n| method | kNN-20 top-1 pretrained | random init | loss first -> last | time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {100 * r['pretrained']:.1f}% | {100 * r['random']:.1f}% | "
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['seconds']:.0f} s |"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
