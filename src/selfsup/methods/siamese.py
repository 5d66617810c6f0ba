"""Two views, one shared backbone + projector, a loss on the two embeddings: VICReg, Barlow
Twins and SimCLR are this one shape with different projectors, losses and views.

Each view goes through the backbone and projector separately, so batch-norm statistics are per
view, as in facebookresearch/vicreg main_vicreg.py, facebookresearch/barlowtwins main.py and
solo-learn's SimCLR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from selfsup.data.views import ViewSpec
from selfsup.methods.base import Method, StepOutput

PairLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


class Siamese(Method):
    """``loss(projector(backbone(v_a)), projector(backbone(v_b)), **loss_kwargs)``.

    ``loss_kwargs`` is read at every step, so a loss weight can be changed on a live method.
    """

    def __init__(
        self,
        backbone: nn.Module,
        view_specs: list[ViewSpec],
        projector: nn.Module,
        loss: PairLoss,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__(backbone, view_specs)
        if len(view_specs) != 2:
            raise ValueError(f"a two-view method takes exactly two views, got {len(view_specs)}")
        self.projector = projector
        self.loss = loss
        self.loss_kwargs = loss_kwargs

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) projector output."""
        return self.projector(self.backbone(x))

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        feats = self.backbone(views[0])
        z_a, z_b = self.projector(feats), self.embed(views[1])
        loss, parts = self.loss(z_a, z_b, **self.loss_kwargs)
        return StepOutput(loss, parts, feats)
