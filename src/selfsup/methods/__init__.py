"""SSL methods and their builder registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from selfsup.backbones import build_backbone
from selfsup.config import Config
from selfsup.data.views import ViewSpec, vicreg_views
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.vicreg import VICReg
from selfsup.registry import Registry

METHODS: Registry[Callable[..., Method]] = Registry("method")


def _views(cfg: Config, specs: list[ViewSpec]) -> list[ViewSpec]:
    scale = tuple(cfg.views.crop_scale)
    return [dataclasses.replace(s, crop_scale=scale) for s in specs]


@METHODS.register("vicreg")
def build_vicreg(
    cfg: Config, *, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Method:
    backbone = build_backbone(cfg.backbone, in_channels=in_channels, image_size=image_size)
    size = cfg.views.size or image_size
    return VICReg(backbone, _views(cfg, vicreg_views(size, mean, std)), cfg.method)


def build_method(
    cfg: Config, *, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Method:
    """Build ``cfg.method.name`` on its backbone for images of the given channels and size."""
    builder = METHODS.get(cfg.method.name)
    return builder(cfg, in_channels=in_channels, image_size=image_size, mean=mean, std=std)


__all__ = ["METHODS", "Method", "StepOutput", "build_method"]
