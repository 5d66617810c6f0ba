"""Where training stands (:class:`TrainState`), what a checkpoint stores of it, and whether a
checkpoint may be resumed by a run (:func:`check_compatible`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup.backbones.config import BackboneConfig
from selfsup.errors import CheckpointError
from selfsup.fields import architecture_keys
from selfsup.methods.joint import JointConfig
from selfsup.methods.registry import METHODS
from selfsup.train.heldout import HELD_OUT


@dataclass
class TrainState:
    """The progress a checkpoint stores beside the weights and the optimizer."""

    epoch: int = 0  # the epoch to continue from
    step: int = 0  # optimizer steps taken (skipped ones included)
    epoch_step: int = 0  # batches of ``epoch`` already done (a mid-epoch checkpoint)
    view_state: torch.Tensor | None = None  # the view generator's state there
    view_device: str | None = None  # its device type (None in older checkpoints)
    train_seconds: float = 0.0  # training time, monitors excluded
    skipped: int = 0  # steps skipped for a non-finite loss (train.skip_nonfinite)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        return cls(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            epoch_step=int(ckpt.get("epoch_step", 0)),
            view_state=ckpt.get("view_generator"),
            view_device=ckpt.get("view_generator_device"),
            train_seconds=float(ckpt.get("train_seconds", 0.0)),
            skipped=int(ckpt.get("skipped_nonfinite", 0)),
        )

    def checkpoint_fields(self) -> dict[str, Any]:
        """The checkpoint's fields for this state (the names older checkpoints use)."""
        return {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "view_generator": self.view_state,
            "view_generator_device": self.view_device,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "skipped_nonfinite": self.skipped,
        }


def architecture(identity: dict[str, Any]) -> list[tuple[str, str]]:
    """The (section, key) pairs a resume must keep: those the backbone's, joint training's and
    the method's config declare ``arch=True`` (the method's from its registration), and the
    held-out carve, which decides the training images (:data:`~selfsup.train.heldout.HELD_OUT`)."""
    keys = [("backbone", key) for key in architecture_keys(BackboneConfig)]
    keys += [("joint", key) for key in architecture_keys(JointConfig)]
    keys.append(HELD_OUT)
    name = (identity.get("method") or {}).get("name")
    if isinstance(name, str) and name in METHODS:  # not a trained evaluation's classifier
        keys += [("method", key) for key in METHODS.get(name).architecture()]
    return keys


def check_compatible(ckpt: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint of a different method, backbone or architecture (a
    clear error, not a state_dict size mismatch): the checkpoint's stored identity (a config
    as a dict) against ``identity``. An architecture key (:func:`architecture`) the checkpoint
    lacks (an older checkpoint) or the method does not have is not compared."""
    saved = ckpt.get("config", {})
    names = [("method", "name"), ("backbone", "name"), ("data", "dataset")]
    arch = architecture(identity)
    for section, key in names + arch:
        old, new = saved.get(section, {}), identity.get(section, {})
        if (section, key) in arch and not (key in old and key in new):
            continue
        a, b = old.get(key), new.get(key)
        if a != b:
            raise CheckpointError(
                f"{path} was written with {section}.{key}={a!r} but this run has {b!r}; "
                "resume with the run's own config.yaml, start a new --out directory, or "
                "replace this run with --overwrite instead of --resume"
            )
