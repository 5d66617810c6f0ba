"""SSL methods and their builder registry.

A builder turns the config into a method on its backbone for images of the given channels and
size: the method's views (its recipe in :mod:`selfsup.data.recipes`, with ``views.crop_scale``
or the method's own default scale), its heads and its loss.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights
from selfsup.config import Config
from selfsup.data import recipes
from selfsup.data.views import vicreg_views
from selfsup.errors import ConfigError
from selfsup.heads import mlp
from selfsup.losses import barlow_twins_loss, nt_xent_loss, vicreg_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.dino import DINO
from selfsup.methods.joint import Joint
from selfsup.methods.momentum import ISD, MoCo
from selfsup.methods.siamese import Siamese
from selfsup.methods.supervised import Classifier
from selfsup.registry import Registry

Builder = Callable[..., Method]
METHODS: Registry[Builder] = Registry("method")

RECIPES = {
    "vicreg": vicreg_views,
    "barlow_twins": vicreg_views,  # facebookresearch/barlowtwins uses BYOL's asymmetric pair
    "simclr": recipes.simclr_views,
    "moco": recipes.moco_views,
    "isd": recipes.isd_views,
    "supervised": lambda size, mean, std, scale: [recipes.crop_flip_view(size, mean, std, scale)],
}


def _method(name: str):
    """Register ``build(cfg, backbone, specs)`` as the builder of ``name``, wrapped so that it
    receives the backbone and the method's views made from the data's channels, size, stats."""

    def register(build: Callable[..., Method]) -> Builder:
        @functools.wraps(build)
        def builder(
            cfg: Config,
            *,
            in_channels: int,
            image_size: int,
            mean: Sequence[float],
            std: Sequence[float],
        ) -> Method:
            size = cfg.views.size or image_size
            backbone = build_backbone(cfg.backbone, in_channels=in_channels, image_size=size)
            if cfg.backbone.weights:  # here, not in build_backbone: random-init twins stay random
                load_backbone_weights(backbone, cfg.backbone.weights)
            own_scale, own_local = recipes.default_scales(name, cfg.backbone.name)
            scale = tuple(cfg.views.crop_scale or own_scale)
            if name in RECIPES:
                specs = RECIPES[name](size, mean, std, scale)
            else:  # multi-crop
                m = cfg.method
                specs = recipes.multi_crop_views(
                    size,
                    mean,
                    std,
                    scale,
                    local_crops=m.local_crops,
                    local_size=m.local_size or 4 * max(2, size // 8),  # ~half, ViT-p4-able
                    local_scale=m.local_scale or own_local,
                )
            return build(cfg, backbone, specs)

        return METHODS.register(name)(builder)

    return register


@_method("vicreg")
def build_vicreg(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=False)
    weights = dict(sim_weight=m.sim_weight, var_weight=m.var_weight, cov_weight=m.cov_weight)
    return Siamese(backbone, specs, projector, vicreg_loss, **weights)


@_method("barlow_twins")
def build_barlow_twins(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, hidden_bias=False, last_bias=False)
    return Siamese(backbone, specs, projector, barlow_twins_loss, lambd=m.lambd, scale=m.scale_loss)


@_method("simclr")
def build_simclr(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=True)
    return Siamese(backbone, specs, projector, nt_xent_loss, temperature=m.temperature)


@_method("moco")
def build_moco(cfg: Config, backbone, specs) -> Method:
    return MoCo(backbone, specs, cfg.method)


@_method("isd")
def build_isd(cfg: Config, backbone, specs) -> Method:
    return ISD(backbone, specs, cfg.method)


@_method("supervised")
def build_supervised(cfg: Config, backbone, specs) -> Method:
    if cfg.method.num_classes < 1:
        raise ConfigError("method.num_classes must be set (pretrain sets it from the data)")
    return Classifier(backbone, specs, cfg.method.num_classes)


def build_dino(cfg: Config, backbone, specs) -> Method:
    return DINO(backbone, specs, cfg.method)  # DINO-Twins: the same class, with its config


_method("dino")(build_dino)
_method("dino_twins")(build_dino)


def build_method(
    cfg: Config, *, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Method:
    """Build ``cfg.method.name`` on its backbone for images of the given channels and size;
    with ``joint.enabled`` it is wrapped with a classifier head for joint training."""
    builder = METHODS.get(cfg.method.name)
    method = builder(cfg, in_channels=in_channels, image_size=image_size, mean=mean, std=std)
    if cfg.joint.enabled:
        if cfg.method.name == "supervised":
            raise ConfigError("joint.enabled needs an SSL method, not method.name=supervised")
        if cfg.joint.num_classes < 1:
            raise ConfigError("joint.num_classes must be set (pretrain sets it from the data)")
        method = Joint(method, cfg.joint.num_classes, cfg.joint.ssl_weight)
    return method


__all__ = ["METHODS", "Method", "StepOutput", "build_method"]
