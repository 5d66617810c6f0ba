"""Build the method a config names: its backbone (with ``backbone.weights``), its views and its
heads, wrapped for joint training when ``joint.enabled``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights
from selfsup.errors import ConfigError
from selfsup.methods.base import Method
from selfsup.methods.joint import Joint
from selfsup.methods.registry import METHODS


def build_method(
    cfg: Any, *, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Method:
    """Build ``cfg.method.name`` (``cfg``: the run's :class:`selfsup.config.Config`) on its
    backbone for images of the given channels and size; with ``joint.enabled`` it is wrapped
    with a classifier head for joint training."""
    spec = METHODS.get(cfg.method.name)
    size = cfg.views.size or image_size
    backbone = build_backbone(cfg.backbone, in_channels=in_channels, image_size=size)
    if cfg.backbone.weights:  # here, not in build_backbone: random-init twins stay random
        load_backbone_weights(backbone, cfg.backbone.weights)
    method = spec.build(cfg, backbone, spec.views(cfg, size, mean, std))
    if cfg.joint.enabled:
        if cfg.method.name == "supervised":
            raise ConfigError("joint.enabled needs an SSL method, not method.name=supervised")
        if cfg.joint.num_classes < 1:
            raise ConfigError("joint.num_classes must be set (pretrain sets it from the data)")
        method = Joint(method, cfg.joint.num_classes, cfg.joint.ssl_weight)
    return method
