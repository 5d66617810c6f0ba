"""Fashion-MNIST kNN-20 accuracy against training wall-clock: selfsup's loop against the same
method, optimizer, schedule and precision fed by torchvision's per-image pipeline in a
multi-worker DataLoader (``benchmarks/reference.py``), and the same reference once more with
PyTorch's defaults for the step (fp32, NCHW), one after the other in one run.

Both train ``configs/demo.yaml`` (VICReg, small ResNet, LARS, bf16 where native) for the demo's
budget of 702 steps of 256 images, here as 18 epochs of a seeded 10,000-image subset so that the
accuracy is measured 18 times along the way. After each epoch, outside the timed region, kNN-20
(k=20, DINO's weighted vote) classifies a fixed subset of test images from the features of the
10,000 training images: the test images are only scored, never fitted or selected on. The script
prints the curves, the time each first reaches ``--target`` and the ratio, the end-to-end
images/s of each and their ratios to selfsup, writes the curves as JSON and draws them into one PNG.

Usage: ``python benchmarks/time_to_accuracy.py [--target 0.80] [--epochs 18] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from reference import hardware, pytorch_default_step, reference_fit
from selfsup.analysis.plots import pyplot, save_figure
from selfsup.config import config_to_dict, load_config
from selfsup.data.array import ImageArray, seeded_subset
from selfsup.data.sources import load_dataset
from selfsup.evaluate.knn import knn_predict
from selfsup.features import extract_features
from selfsup.pipeline import resolve
from selfsup.rundir import make_method
from selfsup.train.loop import fit, resolve_device

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def knn_curve(cfg, bank: ImageArray, test: ImageArray, device: torch.device, curve: list):
    """An epoch hook appending (epoch, train_seconds, kNN-20 top-1 on ``test``) to ``curve``."""
    kw = dict(
        size=cfg.views.size,
        mean=cfg.data.mean,
        std=cfg.data.std,
        device=device,
        precision=cfg.train.precision,
    )

    def score(backbone: torch.nn.Module, epoch: int, seconds: float) -> None:
        fb = extract_features(backbone, bank.images, **kw)
        ft = extract_features(backbone, test.images, **kw)
        pred = knn_predict(fb, bank.labels, ft, k=20, num_classes=len(bank.classes)).argmax(1)
        top1 = (pred == test.labels).float().mean().item()
        curve.append({"epoch": epoch, "seconds": seconds, "knn_top1": top1})
        print(f"  epoch {epoch:2d}  {seconds:7.1f} s  kNN-20 {100 * top1:.1f}%", flush=True)

    return score


def run_selfsup(cfg, bank: ImageArray, test: ImageArray, device: torch.device) -> list[dict]:
    """selfsup's own loop (:func:`selfsup.train.loop.fit`); ``train_seconds`` excludes the
    hook, as the reference's seconds do."""
    curve: list[dict] = []
    score = knn_curve(cfg, bank, test, device, curve)
    start = time.perf_counter()
    spent = [0.0]  # seconds inside the hook

    def hook(backbone: torch.nn.Module, epoch: int) -> dict:
        t0 = time.perf_counter()
        score(backbone, epoch, t0 - start - spent[0])
        spent[0] += time.perf_counter() - t0
        return {}

    with tempfile.TemporaryDirectory() as run_dir:
        method = make_method(cfg, bank.channels)
        fit(
            method,
            bank.images,
            cfg.train,
            Path(run_dir),
            seed=cfg.seed,
            identity=config_to_dict(cfg),
            compile_views=cfg.views.compile,
            monitor=hook,
            monitor_every=1,
        )
    return curve


def run_reference(cfg, bank: ImageArray, test: ImageArray, device: torch.device) -> list[dict]:
    curve: list[dict] = []
    score = knn_curve(cfg, bank, test, device, curve)
    method = make_method(cfg, bank.channels)
    reference_fit(
        method,
        bank.images,
        cfg.train,
        device,
        seed=cfg.seed,
        on_epoch=lambda m, e, s: score(m.backbone, e, s),
    )
    return curve


def run_reference_defaults(cfg, bank: ImageArray, test: ImageArray, device: torch.device):
    """The reference pipeline training as PyTorch does unless told otherwise: fp32, NCHW (no
    bf16 autocast, no channels_last), which is what a plain torchvision + DataLoader loop gets."""
    plain = replace(cfg, train=pytorch_default_step(cfg.train))
    return run_reference(plain, bank, test, device)


def first_reach(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first measured epoch at or above ``target`` (None: never)."""
    return next((p["seconds"] for p in curve if p["knn_top1"] >= target), None)


def plot(curves: dict[str, list[dict]], target: float, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        ax.plot(
            [p["seconds"] for p in curve],
            [100 * p["knn_top1"] for p in curve],
            "o-",
            ms=3,
            label=name,
        )
    ax.axhline(100 * target, color="grey", lw=0.8, ls="--", label=f"target {100 * target:.0f}%")
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel("kNN-20 top-1 on test (%)")
    ax.set_title("Fashion-MNIST, VICReg demo recipe: time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--limit", type=int, default=10_000, help="training images")
    parser.add_argument("--test-limit", type=int, default=2_000)
    parser.add_argument(
        "--only", choices=["selfsup", "reference", "reference-fp32"], help="run one pipeline only"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/time-to-accuracy"))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.device=cpu")
    args = parser.parse_args(argv)
    demo = load_config(DEMO)
    train = load_dataset("fashion-mnist", "train")
    # the demo's warm-up in steps (0.5 of its 234-step epochs = 117), not in epochs: on the
    # 39-step epochs of the subset 0.5 epochs is 19 steps, and at LARS lr 0.3 that diverged
    demo_steps = len(train.labels) // demo.train.batch_size
    warmup = demo.train.warmup_epochs * demo_steps / (args.limit // demo.train.batch_size)
    overrides = [
        f"train.epochs={args.epochs}",
        f"train.warmup_epochs={warmup:g}",
        "train.progress=false",
        *args.overrides,
    ]
    cfg = load_config(DEMO, overrides)
    bank = seeded_subset(train, args.limit, cfg.seed)
    test = seeded_subset(load_dataset("fashion-mnist", "test"), args.test_limit, cfg.seed + 1)
    cfg = resolve(cfg, bank)
    device = resolve_device(cfg.train.device)
    print(
        f"torch {torch.__version__}, {device} ({hardware(device)}), "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} DataLoader workers; "
        f"{args.limit} images x {args.epochs} epochs, batch {cfg.train.batch_size}, "
        f"warm-up {cfg.train.warmup_epochs:g} epochs"
    )
    runs = {
        "selfsup": run_selfsup,
        "torchvision per-image DataLoader, same step": run_reference,
        "torchvision per-image DataLoader, fp32 NCHW": run_reference_defaults,
    }
    if args.only:  # --only reference named no run before (it matched names by prefix)
        keep = {
            "selfsup": run_selfsup,
            "reference": run_reference,
            "reference-fp32": run_reference_defaults,
        }[args.only]
        runs = {k: v for k, v in runs.items() if v is keep}
    curves = {}
    for name, run in runs.items():
        print(f"{name}:", flush=True)
        curves[name] = run(cfg, bank, test, device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.target, args.out / "time_to_accuracy.png")
    images = args.limit // cfg.train.batch_size * cfg.train.batch_size * args.epochs
    print(
        f"\n| pipeline | reaches {100 * args.target:.0f}% kNN-20 at | final kNN-20 | "
        "training s | images/s |\n|---|---|---|---|---|"
    )
    for name, curve in curves.items():
        hit, last = first_reach(curve, args.target), curve[-1]
        at = (
            f"{hit:.0f} s (epoch {next(p['epoch'] for p in curve if p['seconds'] == hit)})"
            if hit is not None
            else "never"
        )
        print(
            f"| {name} | {at} | {100 * last['knn_top1']:.1f}% | {last['seconds']:.0f} | "
            f"{images / last['seconds']:,.0f} |"
        )
    if "selfsup" in curves:  # each reference against selfsup
        ours = curves["selfsup"]
        for name, curve in curves.items():
            if name == "selfsup":
                continue
            ha, hb = first_reach(ours, args.target), first_reach(curve, args.target)
            if ha and hb:
                print(
                    f"time to {100 * args.target:.0f}%: selfsup is {hb / ha:.2f}x faster "
                    f"than {name}"
                )
            print(
                f"end to end ({images} images): selfsup is "
                f"{curve[-1]['seconds'] / ours[-1]['seconds']:.2f}x faster than {name}"
            )
    print(f"curves: {args.out / 'curves.json'}, plot: {args.out / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()
