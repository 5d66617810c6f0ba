"""Supervised training of a backbone with a linear head, through the one training loop.

:class:`Classifier` is a :class:`Method` whose ``forward(views, labels)`` is the cross-entropy of
its logits: the loop trains it like any SSL method (``fit(..., labels=...)``). It serves the
evaluation protocols that train (``linear-aug`` with a frozen backbone, ``finetune``, the
pseudo-label student) and the supervised baseline (``method.name=supervised``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.views import ViewSpec
from selfsup.methods.base import Method, StepOutput


class Classifier(Method):
    """Backbone + ``Dropout(dropout)`` + ``Linear(num_features, num_classes)``; ``frozen`` keeps
    the backbone fixed (no gradients, batch-norm statistics untouched: it stays in eval mode
    while the head trains). The dropout on the pooled features is active in train mode only
    (torchvision's VGG / AlexNet / EfficientNet classifiers place theirs the same way; 0 is the
    identity)."""

    def __init__(
        self,
        backbone: nn.Module,
        view_specs: list[ViewSpec],
        num_classes: int,
        *,
        frozen: bool = False,
        head_lr_scale: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(backbone, view_specs)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.frozen = frozen
        self.head_lr_scale = head_lr_scale
        if frozen:
            backbone.requires_grad_(False)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The base groups, with the head's parameters in groups of their own at
        ``head_lr_scale`` x the lr: VICReg's evaluate.py gives backbone and head separate lrs
        (``--lr-backbone`` / ``--lr-head``)."""
        if self.head_lr_scale == 1.0:
            return super().param_groups(weight_decay)
        head = {id(p) for p in self.head.parameters()}
        groups = []
        for g in super().param_groups(weight_decay):
            for params, scale in (
                ([p for p in g["params"] if id(p) not in head], 1.0),
                ([p for p in g["params"] if id(p) in head], self.head_lr_scale),
            ):
                if params:
                    groups.append({**g, "params": params, "lr_scale": scale})
        return groups

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.backbone(x)
        return self.head(self.dropout(feats))

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> StepOutput:
        logits = self.logits(views[0]).float()
        loss = F.cross_entropy(logits, labels)
        top1 = (logits.detach().argmax(1) == labels).float().mean()
        return StepOutput(loss, {"cross_entropy": loss.detach(), "train_top1": top1})
