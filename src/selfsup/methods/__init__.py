"""SSL methods and their builder registry.

A builder turns the config into a method on its backbone for images of the given channels and
size: the method's views (its recipe in :mod:`selfsup.data.recipes`, with ``views.crop_scale``
or the method's own default scale), its heads and its loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights
from selfsup.config import (
    METHOD_CONFIGS,
    BarlowTwinsConfig,
    Config,
    DINOConfig,
    DINOTwinsConfig,
    ISDConfig,
    MethodConfig,
    MoCoConfig,
    SimCLRConfig,
    SupervisedConfig,
    VICRegConfig,
)
from selfsup.data import recipes
from selfsup.data.views import ViewSpec, vicreg_views
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

Views = Callable[[Config, int, Sequence[float], Sequence[float]], list[ViewSpec]]
Build = Callable[[Config, nn.Module, list[ViewSpec]], Method]


@dataclass(frozen=True)
class MethodSpec:
    """Everything selfsup needs to know about a method, registered once with
    :func:`register_method`: its name, its config class (a :class:`MethodConfig` dataclass with
    its own defaults), its default crop scale, its views (``views(cfg, size, mean, std)`` ->
    the :class:`ViewSpec` list its ``forward`` expects; ``views.crop_scale`` or
    ``crop_scale``) and its builder (``build(cfg, backbone, specs)`` -> the method)."""

    name: str
    config: type
    crop_scale: tuple[float, float]
    views: Views
    build: Build

    def scale(self, cfg: Config) -> tuple[float, float]:
        """The global crop scale: ``views.crop_scale`` when set, else the method's own."""
        return tuple(cfg.views.crop_scale or self.crop_scale)  # type: ignore[return-value]


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a method in one call; every other part (config parsing, views, the builder,
    the CLI's choices) reads this: the config class is registered with :mod:`selfsup.config`
    for parsing. A missing or wrong piece fails here, at import, with a message."""
    if not (isinstance(spec.config, type) and issubclass(spec.config, MethodConfig)):
        raise TypeError(f"method {spec.name!r}: config must be a MethodConfig dataclass")
    if len(spec.crop_scale) != 2 or not 0 < spec.crop_scale[0] <= spec.crop_scale[1] <= 1:
        raise TypeError(f"method {spec.name!r}: crop_scale must be (lo, hi) in (0, 1]")
    if spec.config().name != spec.name:
        raise TypeError(
            f"method {spec.name!r}: its config class's default name is "
            f"{spec.config().name!r}; set name: str = {spec.name!r}"
        )
    if not (callable(spec.views) and callable(spec.build)):
        raise TypeError(f"method {spec.name!r}: views and build must be callables")
    if spec.name in METHODS:
        raise TypeError(f"method {spec.name!r} is registered twice")
    METHOD_CONFIGS.register(spec.name)(spec.config)
    return METHODS.register(spec.name)(spec)


def pair(recipe: Callable[..., list[ViewSpec]]) -> Views:
    """Views from a two-view recipe of :mod:`selfsup.data.recipes` ``(size, mean, std,
    scale)``, at the method's crop scale."""

    def views(cfg: Config, size: int, mean: Sequence[float], std: Sequence[float]):
        return recipe(size, mean, std, METHODS.get(cfg.method.name).scale(cfg))

    return views


def dino_views(cfg: Config, size: int, mean: Sequence[float], std: Sequence[float]):
    """DINO's multi-crop: on a convnet the official README's ResNet scales, on a ViT the
    ``main_dino.py`` defaults (unless ``views.crop_scale`` / ``method.local_scale`` are set)."""
    m = cfg.method
    own, own_local = recipes.dino_scales(cfg.backbone.name)
    return recipes.multi_crop_views(
        size,
        mean,
        std,
        tuple(cfg.views.crop_scale or own),
        local_crops=m.local_crops,
        local_size=m.local_size or 4 * max(2, size // 8),  # ~half, ViT-p4-able
        local_scale=m.local_scale or own_local,
    )


vicreg_views_of = pair(vicreg_views)  # Barlow Twins too: its official code uses BYOL's pair


def supervised_views(cfg: Config, size: int, mean: Sequence[float], std: Sequence[float]):
    return [recipes.crop_flip_view(size, mean, std, METHODS.get("supervised").scale(cfg))]


def build_vicreg(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=False)
    weights = dict(sim_weight=m.sim_weight, var_weight=m.var_weight, cov_weight=m.cov_weight)
    return Siamese(backbone, specs, projector, vicreg_loss, **weights)


def build_barlow_twins(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, hidden_bias=False, last_bias=False)
    return Siamese(backbone, specs, projector, barlow_twins_loss, lambd=m.lambd, scale=m.scale_loss)


def build_simclr(cfg: Config, backbone, specs) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=True)
    return Siamese(backbone, specs, projector, nt_xent_loss, temperature=m.temperature)


def build_moco(cfg: Config, backbone, specs) -> Method:
    return MoCo(backbone, specs, cfg.method)


def build_isd(cfg: Config, backbone, specs) -> Method:
    return ISD(backbone, specs, cfg.method)


def build_supervised(cfg: Config, backbone, specs) -> Method:
    if cfg.method.num_classes < 1:
        raise ConfigError("method.num_classes must be set (pretrain sets it from the data)")
    return Classifier(backbone, specs, cfg.method.num_classes, dropout=cfg.backbone.dropout)


def build_dino(cfg: Config, backbone, specs) -> Method:
    return DINO(backbone, specs, cfg.method)  # DINO-Twins: the same class, with its config


# crop scales: facebookresearch/vicreg augmentations.py; facebookresearch/barlowtwins main.py;
# SimCLR appendix A; facebookresearch/moco --aug-plus; UMBCvision/ISD; facebookresearch/dino
# --global_crops_scale (ViTs; convnets: dino_views); torchvision's RandomResizedCrop default
for _spec in (
    MethodSpec("vicreg", VICRegConfig, (0.08, 1.0), vicreg_views_of, build_vicreg),
    MethodSpec("barlow_twins", BarlowTwinsConfig, (0.08, 1.0), vicreg_views_of, build_barlow_twins),
    MethodSpec("simclr", SimCLRConfig, (0.08, 1.0), pair(recipes.simclr_views), build_simclr),
    MethodSpec("moco", MoCoConfig, (0.2, 1.0), pair(recipes.moco_views), build_moco),
    MethodSpec("isd", ISDConfig, (0.2, 1.0), pair(recipes.isd_views), build_isd),
    MethodSpec("dino", DINOConfig, recipes.DINO_GLOBAL_SCALE, dino_views, build_dino),
    MethodSpec("dino_twins", DINOTwinsConfig, recipes.DINO_GLOBAL_SCALE, dino_views, build_dino),
    MethodSpec("supervised", SupervisedConfig, (0.08, 1.0), supervised_views, build_supervised),
):
    register_method(_spec)


def build_method(
    cfg: Config, *, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Method:
    """Build ``cfg.method.name`` on its backbone for images of the given channels and size;
    with ``joint.enabled`` it is wrapped with a classifier head for joint training."""
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


__all__ = ["METHODS", "Method", "MethodSpec", "StepOutput", "build_method", "register_method"]
