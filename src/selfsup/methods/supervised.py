"""Supervised training of a backbone with a linear head, through the one training loop.

:class:`Classifier` is a :class:`Method` whose ``forward(views, labels)`` is the cross-entropy of
its logits: the loop trains it like any SSL method (``fit(..., labels=...)``). It serves the
evaluation protocols that train (``linear-aug`` with a frozen backbone, ``finetune``, the
pseudo-label student) and the supervised baseline (``method.name=supervised``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.recipes import crop_flip_view
from selfsup.data.views import ViewSpec
from selfsup.errors import ConfigError
from selfsup.fields import FRACTION, NON_NEGATIVE, setting
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.registry import METHODS, MethodConfig, register


@dataclass
class SupervisedConfig(MethodConfig):
    """The supervised baseline: the same backbone trained from scratch with cross-entropy on a
    class-balanced ``label_fraction`` of the labelled training images (``selfsup supervised``)."""

    name: str = "supervised"
    label_fraction: float = setting(
        1.0, valid=FRACTION, what="the share of training labels; 1 is all of them"
    )
    # 0: from the data (written into the run's config.yaml)
    num_classes: int = setting(0, valid=NON_NEGATIVE, what="0 takes it from the data")


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


def supervised_views(cfg: Any, size: int, mean: Sequence[float], std: Sequence[float]):
    """One crop + flip view (the official repos' supervised training view)."""
    return [crop_flip_view(size, mean, std, METHODS.get("supervised").scale(cfg))]


# torchvision's RandomResizedCrop default scale
@register("supervised", SupervisedConfig, crop_scale=(0.08, 1.0), views=supervised_views)
def build_supervised(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    if cfg.method.num_classes < 1:
        raise ConfigError("method.num_classes must be set (pretrain sets it from the data)")
    return Classifier(backbone, specs, cfg.method.num_classes, dropout=cfg.backbone.dropout)
