"""Projector / predictor heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError


def parse_mlp_spec(spec: str) -> list[int]:
    """``"8192-8192-8192"`` -> [8192, 8192, 8192]; a clear error for anything else."""
    try:
        widths = [int(part) for part in spec.split("-")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise ConfigError(f"MLP spec {spec!r} must be widths joined by '-', e.g. '2048-2048-2048'")
    return widths


def mlp(
    in_dim: int,
    spec: str,
    *,
    last_bias: bool = False,
    hidden_bias: bool = True,
    batch_norm: bool = True,
) -> nn.Sequential:
    """Linear-BN-ReLU blocks for every width of ``spec`` but the last, then a last Linear.

    This is the projector of facebookresearch/vicreg (``Projector`` in main_vicreg.py: the last
    Linear has no bias), of facebookresearch/barlowtwins (where every Linear is bias-free), of
    SimCLR v2 and of ISD (``get_mlp``); ``batch_norm=False`` gives MoCo v2's Linear-ReLU-Linear.

    Shapes: (B, in_dim) -> (B, widths[-1]).
    """
    widths = [in_dim, *parse_mlp_spec(spec)]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 2):
        a, b = widths[i], widths[i + 1]
        layers.append(nn.Linear(a, b, bias=hidden_bias))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(widths[-2], widths[-1], bias=last_bias))
    return nn.Sequential(*layers)


class WeightNormLinear(nn.Module):
    """Bias-free ``Linear`` with weight normalisation: ``W = g * v / ||v||`` per output row.

    The last layer of DINO's head (``nn.utils.weight_norm(nn.Linear(bottleneck, out_dim,
    bias=False))`` in facebookresearch/dino vision_transformer.py), written out so that nothing
    depends on the deprecated hook. ``norm_last_layer=True`` fixes ``g`` to 1 (no parameter).
    """

    def __init__(self, in_dim: int, out_dim: int, *, learn_norm: bool = False) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.v, std=0.02)
        self.g = nn.Parameter(torch.ones(out_dim, 1)) if learn_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.v, dim=1)
        return F.linear(x, w if self.g is None else w * self.g)


class DINOHead(nn.Module):
    """DINO's projection head (``DINOHead`` of facebookresearch/dino vision_transformer.py):
    Linear-GELU-Linear-GELU-Linear to ``bottleneck_dim``, L2-normalise, weight-normalised last
    layer to ``out_dim`` logits. (B, in_dim) -> (B, out_dim)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
