"""Backbone weights in and out: ``selfsup export`` and ``backbone.weights``.

Out: :func:`export_backbone` writes a run's backbone as a safetensors file (tensors and a
string metadata table only: nothing in it can run code when loaded, so it is the format to
share; safetensors comes with timm) or as a plain ``torch`` state dict.
In: :func:`load_backbone_weights` reads a safetensors file, a plain state dict, a selfsup
checkpoint or a selfsup run directory, always without unpickling code (``weights_only=True``),
strips the usual prefixes (``backbone.``, ``module.``) and loads strictly: a wrong
architecture is an error that names the missing and unexpected keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from selfsup.atomic import write_atomic
from selfsup.errors import CheckpointError
from selfsup.train.checkpoint import load_checkpoint

EXPORT_FORMATS = ("safetensors", "torch")
PREFIXES = ("module.", "backbone.")


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


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A backbone state dict from any of the accepted sources (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
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
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"backbone.weights: cannot read {path} as a plain state dict ({type(err).__name__}: "
            f"{err}); selfsup loads tensors only, never pickled code"
        ) from None
    if isinstance(obj, dict) and "model" in obj and "format" in obj:
        return backbone_state(load_checkpoint(path)["model"])
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"backbone.weights: {path} does not hold a state dict of tensors")
    return obj


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``backbone`` strictly, or say which keys do not match."""
    state = _strip(read_state(Path(path)))
    missing, unexpected = _mismatch(backbone, state)
    if missing or unexpected:
        raise CheckpointError(
            f"backbone.weights={path} does not fit this backbone: missing {_few(missing)}; "
            f"unexpected {_few(unexpected)}. Check backbone.name / widths / depths / stem."
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:  # same keys, other shapes
        raise CheckpointError(
            f"backbone.weights={path} does not fit this backbone: {err}"
        ) from None


def _mismatch(backbone: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    mine = set(backbone.state_dict())
    return sorted(mine - set(state)), sorted(set(state) - mine)


def _few(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
