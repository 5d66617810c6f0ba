"""Atomic checkpoints: a crash while saving never leaves a corrupt or half-written file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from selfsup.atomic import write_atomic
from selfsup.errors import CheckpointError

FORMAT = "selfsup-checkpoint-v1"


def save_checkpoint(path: str | Path, **state: Any) -> None:
    """Write a checkpoint atomically (see :mod:`selfsup.atomic`): a kill or a full disk during
    the write leaves the previous checkpoint whole."""
    write_atomic(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a selfsup checkpoint, or raise a CheckpointError that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the run has not finished an epoch yet")
    try:
        # weights_only: tensors, numbers, strings, lists and dicts only; a pickle that would run
        # code (a crafted or foreign file) is refused instead of executed
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds Python objects beyond tensors and plain data, which "
            f"selfsup does not load (it could run code on this machine): {err}. Only load "
            "checkpoints written by selfsup, or export the weights as a plain state dict"
        ) from None
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is damaged or "
            "not a selfsup checkpoint — start a new run or restore the file"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a selfsup checkpoint (expected format {FORMAT})")
    return ckpt
