"""BYOL's loss (Grill et al., "Bootstrap your own latent", NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.precision import full_precision


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)`` (the paper's eq. 2)
    for online predictions ``p`` (B, D) and target projections ``z`` (B, D). ``z`` gets no
    gradient: the target network is moved by the EMA only (the paper's stop-gradient)."""
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


@full_precision
def byol_loss(
    p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BYOL's symmetrised loss ``L + L~`` (section 3.1): the online prediction of each view
    (``p_a``, ``p_b``: (B, D)) regressed onto the target projection of the other (``z_b``,
    ``z_a``: (B, D)), each term :func:`regression_loss`; the sum of the two, as the paper's
    ``L^BYOL`` and solo-learn's ``training_step`` (solo/methods/byol.py @e384184:186-190, with
    ``byol_loss_func``, solo/losses/byol.py @e384184) compute it. In [0, 8].

    No cross-process gathering: each term is a per-image mean, so DDP's gradient average over
    ranks equals the single-process gradient of the concatenated batch.

    Parts: ``cos_ab`` and ``cos_ba``, the mean cosine of each direction."""
    loss_ab = regression_loss(p_a, z_b)
    loss_ba = regression_loss(p_b, z_a)
    parts = {"cos_ab": (1 - loss_ab / 2).detach(), "cos_ba": (1 - loss_ba / 2).detach()}
    return loss_ab + loss_ba, parts
