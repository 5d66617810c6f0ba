"""``selfsup export RUN_DIR``: a run's backbone weights and what a user needs to load them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a run's backbone weights for sharing (safetensors: no code can hide in it)",
    )
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("--format", choices=["safetensors", "torch"], default="safetensors")
    ex.add_argument("--out", type=Path, help="file (default: RUN_DIR/export/backbone.FORMAT)")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.run.lock import run_lock, writes_into

    suffix = "safetensors" if args.format == "safetensors" else "pt"
    out = args.out or args.run_dir / "export" / f"backbone.{suffix}"
    with run_lock(args.run_dir, enabled=writes_into(args.run_dir, out)):
        n = _write_export(args.run_dir, out, args.format)
    print(f"wrote {out} ({n} tensors); start a run from it with backbone.weights={out}")
    return 0


def _write_export(run_dir: Path, out: Path, fmt: str) -> int:
    """The run's backbone weights and what a user needs to load them, into ``out``; returns
    the number of tensors."""
    from selfsup.backbones.weights import backbone_state, export_backbone
    from selfsup.rundir import load_run_config
    from selfsup.train.checkpoint import load_checkpoint

    cfg = load_run_config(run_dir)
    state = backbone_state(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    meta = {
        "format": "selfsup-backbone-v1",
        "method": cfg.method.name,
        "backbone": dataclasses.asdict(cfg.backbone),
        "image_size": cfg.views.size,
        "mean": cfg.data.mean,
        "std": cfg.data.std,
    }
    export_backbone(state, out, fmt, meta)
    return len(state)
