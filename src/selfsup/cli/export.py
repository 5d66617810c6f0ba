"""``selfsup export RUN_DIR``: a run's backbone weights and what a user needs to load them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from selfsup.layout import RunDir

FORMATS = ("selfsup", "safetensors", "torch", "torchvision", "timm")
SUFFIX = {"selfsup": "safetensors", "safetensors": "safetensors", "torch": "pt"}
SUFFIX.update(torchvision="pth", timm="safetensors")


def add_parsers(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a run's backbone weights for sharing: for selfsup (safetensors: no code can "
        "hide in it), or as a torchvision / timm model's state dict",
    )
    ex.add_argument("run_dir", type=Path)
    ex.add_argument(
        "--format",
        choices=FORMATS,
        default="selfsup",
        help="selfsup (= safetensors, selfsup's keys; torch: the same as a torch file), "
        "torchvision (a .pth that loads strictly into torchvision.models.<name>() with fc = "
        "Identity), timm (a .safetensors for timm.create_model(<name>, num_classes=0))",
    )
    ex.add_argument("--out", type=Path, help="file (default: RUN_DIR/export/backbone[-LIB].EXT)")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.run.lock import run_lock, writes_into

    fmt = args.format
    name = "backbone" if fmt in ("selfsup", "safetensors", "torch") else f"backbone-{fmt}"
    out = args.out or RunDir(args.run_dir).export / f"{name}.{SUFFIX[fmt]}"
    with run_lock(args.run_dir, enabled=writes_into(args.run_dir, out)):
        n, load = _write_export(args.run_dir, out, fmt)
    if load is None:
        print(f"wrote {out} ({n} tensors); start a run from it with backbone.weights={out}")
    else:
        print(f"wrote {out} ({n} tensors), which loads as:")
        print(load.replace("PATH", repr(str(out))))
    return 0


def _write_export(run_dir: Path, out: Path, fmt: str) -> tuple[int, str | None]:
    """The run's backbone weights in ``fmt`` and what a user needs to load them (metadata in a
    safetensors file; beside a torchvision .pth, in OUT.json), into ``out``: the number of
    tensors and, for another library, the snippet that loads them."""
    from selfsup.atomic import write_json_atomic
    from selfsup.backbones import build_backbone
    from selfsup.backbones.export import architecture, to_library
    from selfsup.backbones.weights import backbone_state, export_backbone
    from selfsup.checkpoint import load_checkpoint
    from selfsup.rundir import load_run_config

    cfg = load_run_config(run_dir)
    state = backbone_state(load_checkpoint(RunDir(run_dir).checkpoint)["model"])
    channels, size = len(cfg.data.mean or []), cfg.views.size
    built = build_backbone(cfg.backbone, in_channels=channels, image_size=size)
    meta: dict[str, Any] = {
        "format": "selfsup-backbone-v1",
        "method": cfg.method.name,
        "backbone": dataclasses.asdict(cfg.backbone),
        "architecture": architecture(cfg.backbone, built, channels, size),
        "image_size": size,
        "mean": cfg.data.mean,
        "std": cfg.data.std,
    }
    if fmt in ("selfsup", "safetensors", "torch"):
        export_backbone(state, out, "torch" if fmt == "torch" else "safetensors", meta)
        return len(state), None
    lib = to_library(fmt, cfg.backbone, state, in_channels=channels, image_size=size)
    meta.update(format=f"{fmt}-state-dict", model=lib.model, load=lib.load)
    if fmt == "torchvision":  # a .pth holds tensors only: the metadata goes beside it
        export_backbone(lib.state, out, "torch", meta)
        write_json_atomic(out.with_name(out.name + ".json"), meta)
    else:
        export_backbone(lib.state, out, "safetensors", meta)
    return len(lib.state), lib.load
