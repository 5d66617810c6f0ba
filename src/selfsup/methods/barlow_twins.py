"""Barlow Twins (Zbontar et al., ICML 2021): a :class:`~selfsup.methods.siamese.Siamese` with a
bias-free projector and the cross-correlation loss, on BYOL's asymmetric pair of views (as
facebookresearch/barlowtwins main.py ``Transform``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.data.recipes import byol_pair
from selfsup.data.views import ViewSpec
from selfsup.fields import NON_NEGATIVE, POSITIVE, setting
from selfsup.heads import mlp
from selfsup.losses import barlow_twins_loss
from selfsup.methods.base import Method
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.siamese import Siamese


@dataclass
class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins (Zbontar et al., ICML 2021): defaults of facebookresearch/barlowtwins."""

    name: str = "barlow_twins"
    # --projector; every Linear bias-free
    projector: str = setting("8192-8192-8192", mlp=True, arch=True)
    # --lambd, weight of the off-diagonal term
    lambd: float = setting(0.0051, valid=NON_NEGATIVE, what="the off-diagonal weight")
    # the loss is multiplied by this: solo-learn's scale_loss (0.1 in its CIFAR recipe); the
    # official code keeps 1 and gives biases a 0.024x lr instead (train.bias_lr_scale)
    scale_loss: float = setting(1.0, valid=POSITIVE, what="the loss multiplier")


# crop scale: facebookresearch/barlowtwins main.py (RandomResizedCrop's default)
@register("barlow_twins", BarlowTwinsConfig, crop_scale=(0.08, 1.0), views=pair(byol_pair))
def build_barlow_twins(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, hidden_bias=False, last_bias=False)
    return Siamese(backbone, specs, projector, barlow_twins_loss, lambd=m.lambd, scale=m.scale_loss)
