"""Backbone weights in and out: ``selfsup export`` and ``backbone.weights``.

Out: :func:`export_backbone` writes a run's backbone as a safetensors file (tensors and a
string metadata table only: nothing in it can run code when loaded, so it is the format to
share; safetensors comes with timm) or as a plain ``torch`` state dict.
In: :func:`load_backbone_weights` reads a safetensors file, a plain state dict, a selfsup
checkpoint or a selfsup run directory, or a checkpoint in an official format (VICReg, Barlow
Twins, DINO, torchvision: :mod:`selfsup.backbones.official` maps their keys), always without
unpickling code (``weights_only=True``; argparse ``Namespace``, which DINO's full checkpoints
store, is the one class allowed besides tensors and containers), reports the keys it drops
(classifier and projector heads) and loads strictly: a wrong architecture is an error that
names the missing and unexpected keys and says what to set; a tensor of another shape or of
another kind of number (integers or booleans where weights are floating-point) is refused naming
its key, what it is and what ours is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from selfsup.atomic import write_atomic
from selfsup.backbones.official import few, fit_error, to_backbone_state
from selfsup.checkpoint import load_checkpoint
from selfsup.errors import CheckpointError
from selfsup.layout import RunDir

EXPORT_FORMATS = ("safetensors", "torch")


def backbone_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` entries of a method's state dict, prefix removed."""
    return {k[len("backbone.") :]: v for k, v in model_state.items() if k.startswith("backbone.")}


def export_backbone(
    state: dict[str, torch.Tensor], path: Path, fmt: str, metadata: dict[str, Any]
) -> Path:
    """Write ``state`` (a backbone state dict) to ``path`` atomically in ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        meta = {k: json.dumps(v) for k, v in metadata.items()}
        write_atomic(path, lambda f: f.write(save(tensors, metadata=meta)))
    else:
        write_atomic(path, lambda f: torch.save(tensors, f))
    return path


def read_state(path: Path) -> Any:
    """The object stored at ``path`` (a run directory reads its last checkpoint): a selfsup
    checkpoint as its backbone's state dict, anything else as loaded (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint
    if not path.is_file():
        raise CheckpointError(f"backbone.weights: no file at {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(
                f"backbone.weights: {path} is not a valid safetensors file ({err})"
            ) from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"backbone.weights: cannot read {path} as a plain state dict ({type(err).__name__}: "
            f"{err}); selfsup loads tensors only, never pickled code"
        ) from None
    if isinstance(obj, dict) and "model" in obj and "format" in obj:
        return backbone_state(load_checkpoint(path)["model"])
    return obj


IMAGENET_MEAN = [0.485, 0.456, 0.406]  # torchvision's and the official SSL repos' Normalize
IMAGENET_STD = [0.229, 0.224, 0.225]


def weights_normalisation(path: str | Path) -> tuple[list[float], list[float], str] | None:
    """(mean, std, where they come from) of the inputs the weights at ``path`` were trained
    on: a selfsup run directory or checkpoint says it in its config, a selfsup export in its
    metadata; any other file (the official VICReg, Barlow Twins, DINO, torchvision
    checkpoints, all ImageNet-trained) is taken to want ImageNet's statistics. None: a
    safetensors file from elsewhere that records none (then the data's own are used)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        except (KeyError, ValueError, OSError, TypeError):
            return None
        return (list(mean), list(std), f"recorded in {path.name}") if mean and std else None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours to judge here: load_backbone_weights reports a bad file
        obj = None
    data = obj.get("config", {}).get("data", {}) if isinstance(obj, dict) else {}
    if isinstance(data, dict) and data.get("mean") and data.get("std"):
        return list(data["mean"]), list(data["std"]), f"the run's own ({path.name})"
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet's (an external checkpoint, ImageNet-trained)"


def load_backbone_weights(backbone: nn.Module, path: str | Path, *, quiet: bool = False) -> None:
    """Load ``path`` into ``backbone`` strictly, or say which keys do not match and what to do.
    The keys left out (heads) and how the file was read are printed on stderr unless ``quiet``."""
    where = f"backbone.weights={path}"
    target = backbone.state_dict()
    try:
        conv = to_backbone_state(read_state(Path(path)), target)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None
    error = fit_error(where, conv, target)
    if error is not None:
        raise error
    try:
        backbone.load_state_dict(conv.state, strict=True)
    except RuntimeError as err:  # a dtype torch cannot copy into ours (float8 ...)
        raise CheckpointError(
            f"{where}: cannot load its tensors into this backbone: {err}"
        ) from None
    if not quiet:
        dropped = f"; dropped {few(conv.dropped)}" if conv.dropped else ""
        notes = "".join(f"; {n}" for n in conv.notes)
        print(
            f"selfsup: loaded {where} ({len(conv.state)} tensors, {conv.source} keys)"
            f"{dropped}{notes}",
            file=sys.stderr,
        )
