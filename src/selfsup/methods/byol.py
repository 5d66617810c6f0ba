"""BYOL (Grill et al., "Bootstrap your own latent", NeurIPS 2020): an online network (backbone,
projector, predictor) regresses its prediction of one view onto the projection of the other
view by a target network, an EMA of the online backbone + projector; no negatives, no queue.

Heads, momentum and views follow solo-learn (solo/methods/byol.py @e384184:50-71, the numbers in
configs/*/byol.yaml) and the paper: projector and predictor are Linear-BN-ReLU-Linear (biases
on, as ``nn.Linear``'s default), the target's momentum rises from ``momentum`` to
``momentum_final`` along a cosine (section 3.3: tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) /
2), the views are the paper's asymmetric pair (appendix B, table 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup.data.recipes import byol_pair
from selfsup.data.views import ViewSpec
from selfsup.errors import ConfigError
from selfsup.fields import EMA, setting
from selfsup.heads import mlp
from selfsup.losses.byol import byol_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.teacher import EMATeacher
from selfsup.parts.ema import cosine_momentum


@dataclass
class BYOLConfig(MethodConfig):
    """BYOL's defaults: the paper's ImageNet setting (section 3.3: projector
    4096-256, predictor 4096-256, tau_base 0.996 -> 1)."""

    name: str = "byol"
    projector: str = setting("4096-256", mlp=True, arch=True)  # hidden-output widths
    predictor: str = setting("4096-256", mlp=True, arch=True)  # ends in the projector's width
    # tau_base, raised to momentum_final along a cosine
    momentum: float = setting(
        0.996, valid=EMA, what="an EMA momentum (0 copies the student, 1 freezes the teacher)"
    )
    momentum_final: float = setting(1.0, valid=EMA, what="an EMA momentum")

    def check(self) -> None:
        """The predictor maps a projection to a projection: its last width is the projector's."""
        if self.predictor.split("-")[-1] != self.projector.split("-")[-1]:
            raise ConfigError(
                f"method.predictor={self.predictor!r} must end in the projector's width "
                f"{self.projector.split('-')[-1]} (method.projector={self.projector!r})"
            )


class BYOL(EMATeacher):
    """Online: backbone -> projector -> predictor; target: the EMA of backbone -> projector
    (no gradient, its own BN statistics), fed both views; loss :func:`byol_loss`."""

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: BYOLConfig) -> None:
        projector = mlp(backbone.num_features, cfg.projector, last_bias=True)
        super().__init__(backbone, view_specs, projector)
        dim = int(cfg.projector.split("-")[-1])
        self.predictor = mlp(dim, cfg.predictor, last_bias=True)
        self.cfg = cfg

    def momentum_at(self, step: int, total_steps: int) -> float:
        return cosine_momentum(step, total_steps, self.cfg.momentum, self.cfg.momentum_final)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        feats = self.backbone(views[0])
        p_a = self.predictor(self.projector(feats))
        p_b = self.predictor(self.projector(self.backbone(views[1])))
        z_a, z_b = self.teacher_embed(views[0]), self.teacher_embed(views[1])
        loss, parts = byol_loss(p_a, p_b, z_a, z_b)
        return StepOutput(loss, parts, feats)


# crop scale: the paper's RandomResizedCrop (appendix B, table 6: 0.08-1)
@register("byol", BYOLConfig, crop_scale=(0.08, 1.0), views=pair(byol_pair))
def build_byol(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    return BYOL(backbone, specs, cfg.method)
