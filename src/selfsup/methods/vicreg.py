"""VICReg: backbone + MLP projector + :func:`selfsup.losses.vicreg_loss` on two views.

Follows facebookresearch/vicreg main_vicreg.py: each view goes through the backbone and the
projector separately (so batch-norm statistics are per view, as in the official code).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.config import VICRegConfig
from selfsup.data.views import ViewSpec
from selfsup.heads import mlp
from selfsup.losses.vicreg import vicreg_loss
from selfsup.methods.base import Method, StepOutput


class VICReg(Method):
    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: VICRegConfig):
        super().__init__(backbone, view_specs)
        if len(view_specs) != 2:
            raise ValueError(f"VICReg takes exactly two views, got {len(view_specs)}")
        self.cfg = cfg
        self.projector = mlp(backbone.num_features, cfg.projector, last_bias=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])
        loss, parts = vicreg_loss(
            z_a,
            z_b,
            sim_weight=self.cfg.sim_weight,
            var_weight=self.cfg.var_weight,
            cov_weight=self.cfg.cov_weight,
        )
        return StepOutput(loss, parts)
