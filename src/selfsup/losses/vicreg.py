"""VICReg loss (Bardes, Ponce & LeCun, ICLR 2022).

Follows ``VICReg.forward`` in facebookresearch/vicreg main_vicreg.py term by term:

- invariance: ``F.mse_loss(z_a, z_b)`` on the local batch;
- variance: the batch is gathered from every process, centred, and
  ``mean(relu(1 - sqrt(var + eps)))`` is averaged over the two branches (the official ``/ 2``);
- covariance: ``off_diagonal(z.T @ z / (N - 1)) ** 2`` summed and divided by the dimension D,
  summed over the two branches (N is the global batch).

loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.distributed import gather_cat
from selfsup.losses.precision import full_precision


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix (D, D) as a flat (D * (D - 1),) tensor."""
    n, k = m.shape
    if n != k:
        raise ValueError(f"off_diagonal needs a square matrix, got {tuple(m.shape)}")
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def invariance_term(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two embeddings, (B, D) each -> scalar."""
    return F.mse_loss(z_a, z_b)


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean hinge on the per-dimension std of a centred batch: mean(relu(1 - sqrt(var + eps)))."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension. z: (N, D) centred."""
    n, d = z.shape
    cov = (z.T @ z) / (n - 1)
    return off_diagonal(cov).pow(2).sum() / d


@full_precision
def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg loss of two embedding batches (B, D) of the same images.

    Returns the weighted total and the unweighted parts ``invariance``, ``variance``,
    ``covariance``. Computed in float32 whatever the input dtype. Under torchrun the variance
    and covariance terms see the batch of every process (gathered with gradients).
    """
    z_a, z_b = z_a.float(), z_b.float()
    inv = invariance_term(z_a, z_b)
    x, y = gather_cat(z_a), gather_cat(z_b)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    var = (variance_term(x, eps) + variance_term(y, eps)) / 2
    cov = covariance_term(x) + covariance_term(y)
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
