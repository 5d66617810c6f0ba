"""Backbones: a registry of builders sharing one contract.

Every backbone is an ``nn.Module`` with ``num_features`` (int) and ``forward(x) -> (B, D)``
pooled features, D == num_features, for x (B, C, H, W) float images. ViTs (``vit_tiny_p4``,
``vit_small_p4``) also have ``forward_tokens`` and ``last_attention`` for attention maps.
"""

from __future__ import annotations

from torch import nn

from selfsup.backbones import vit as _vit  # noqa: F401  (registers the ViTs)
from selfsup.backbones.config import BackboneConfig
from selfsup.backbones.resnet import BACKBONES


def build_backbone(cfg: BackboneConfig, *, in_channels: int, image_size: int) -> nn.Module:
    """Build the backbone named ``cfg.name`` for images of ``in_channels`` x ``image_size`` px."""
    return BACKBONES.get(cfg.name)(cfg, in_channels=in_channels, image_size=image_size)


def backbone_names() -> list[str]:
    return BACKBONES.names()


__all__ = ["BACKBONES", "backbone_names", "build_backbone"]
