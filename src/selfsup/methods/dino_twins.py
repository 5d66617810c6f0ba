"""DINO-Twins: DINO plus a Barlow Twins term on a separate projector of the student backbone
features, averaged over every pair of distinct student crops (the model is
:class:`~selfsup.methods.dino.DINO`, which adds the term when its config has ``bt_projector``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.data.views import ViewSpec
from selfsup.fields import NON_NEGATIVE, setting
from selfsup.methods.base import Method
from selfsup.methods.dino import DINO, DINO_GLOBAL_SCALE, DINOConfig, dino_views
from selfsup.methods.registry import register


@dataclass
class DINOTwinsConfig(DINOConfig):
    """DINO plus a Barlow Twins term on a separate projector of the student backbone features,
    averaged over every pair of distinct student crops. selfsup's own variant: no paper
    defines it; the nearest published source (Podsiadly & Lay, "DinoTwins", arXiv:2508.17509)
    is not followed. The separate 2048-2048-2048 projector, Barlow Twins over all crop pairs
    (local-local included) and the weight set at step 0 to half the DINO term are our choices."""

    name: str = "dino_twins"
    bt_projector: str = setting("2048-2048-2048", mlp=True, arch=True)
    bt_lambd: float = setting(0.0051, valid=NON_NEGATIVE, what="the off-diagonal weight")
    # None: set at the first step so the term is half of DINO's
    bt_weight: float | None = setting(
        None, valid=NON_NEGATIVE, what="null sets it at the first step"
    )


@register("dino_twins", DINOTwinsConfig, crop_scale=DINO_GLOBAL_SCALE, views=dino_views)
def build_dino_twins(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    return DINO(backbone, specs, cfg.method)
