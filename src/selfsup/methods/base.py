"""The Method contract shared by every SSL method.

A method is a small ``nn.Module`` assembled from parts (backbone, heads, loss, optional EMA
teacher / queue / centre). The training loop only knows this interface:

- ``view_specs``: the views it wants of each image (see :mod:`selfsup.data.views`);
- ``before_step(step, total_steps, steps_per_epoch)``: before the forward pass (schedules
  such as DINO's teacher temperature or its frozen last layer);
- ``forward(views) -> StepOutput``: the loss of one batch of views;
- ``after_backward()``: between backward and the optimizer step (gradient surgery);
- ``on_step_end(step, total_steps)``: after the optimizer step (EMA, queue, centre updates);
- ``param_groups(weight_decay)``: optimizer groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.data.views import ViewSpec


@dataclass
class StepOutput:
    """The loss of one step, its named, detached parts (scalars) for logging, and the backbone
    features of the first view (B, D), still in the graph: a joint classifier head (or an online
    probe) reads them instead of running the backbone again."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    features: torch.Tensor | None = None


class Method(nn.Module):
    """Base of all methods: holds the backbone and the view specs."""

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec]) -> None:
        super().__init__()
        self.backbone = backbone
        self.view_specs = list(view_specs)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    # the backbone the method's official evaluation uses ("student" or "teacher")
    official_eval = "student"
    # under torchrun on GPUs, BN statistics over the global batch (off with shuffle-BN)
    sync_batchnorm = True

    def eval_backbones(self) -> dict[str, nn.Module]:
        """The backbones that can be evaluated: ``student`` (the trained one) and, for methods
        with an EMA teacher (backbone + head in ``self.teacher``), ``teacher``."""
        out = {"student": self.backbone}
        teacher = getattr(self, "teacher", None)
        if isinstance(teacher, nn.Sequential):
            out["teacher"] = teacher[0]
        return out

    def before_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        """Called before each forward pass; methods without schedules need nothing."""

    def after_backward(self) -> None:
        """Called after backward, before the optimizer step; most methods need nothing."""

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step; methods without teachers need nothing."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Two groups: weights (decayed, LARS-adapted) and biases / norm parameters (neither),
        the split of ``exclude_bias_and_norm`` in facebookresearch/vicreg (p.ndim == 1)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "exclude": False},
            {"params": no_decay, "weight_decay": 0.0, "exclude": True},
        ]
