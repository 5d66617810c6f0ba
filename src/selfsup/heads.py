"""Projector / predictor heads."""

from __future__ import annotations

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
    in_dim: int, spec: str, *, last_bias: bool = False, hidden_bias: bool = True
) -> nn.Sequential:
    """Linear-BN-ReLU blocks for every width of ``spec`` but the last, then a last Linear.

    This is the projector of facebookresearch/vicreg (``Projector`` in main_vicreg.py: the last
    Linear has no bias) and of facebookresearch/barlowtwins (where every Linear is bias-free).

    Shapes: (B, in_dim) -> (B, widths[-1]).
    """
    widths = [in_dim, *parse_mlp_spec(spec)]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 2):
        a, b = widths[i], widths[i + 1]
        layers += [nn.Linear(a, b, bias=hidden_bias), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(widths[-2], widths[-1], bias=last_bias))
    return nn.Sequential(*layers)
