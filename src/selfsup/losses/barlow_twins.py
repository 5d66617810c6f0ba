"""Barlow Twins loss (Zbontar et al., ICML 2021).

Follows ``BarlowTwins.forward`` in facebookresearch/barlowtwins main.py:

- each embedding is standardised per dimension by ``BatchNorm1d(affine=False)`` in training
  mode, i.e. with the batch mean and the *biased* batch variance, ``eps=1e-5``; the official
  model is converted to SyncBatchNorm, so the statistics are those of the global batch;
- the cross-correlation is ``c = bn(z_a).T @ bn(z_b) / N`` with N the global batch size
  (officially each rank divides its partial product by the global batch size and
  ``all_reduce`` sums it);
- ``loss = sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2``, default ``lambd = 0.0051``.

Here the batch is gathered with :func:`selfsup.distributed.gather_cat`, so every rank computes
the global ``c`` and the same loss value as a single process on the concatenated batch, and the
gradient after DDP averaging equals the single-process one. (In the official code the plain
``all_reduce`` carries no gradient, so each rank back-propagates only its own share and DDP's
averaging leaves the gradient ``1 / world_size`` of the single-process one; LARS's trust ratio
largely absorbs that scale.)
"""

from __future__ import annotations

import torch

from selfsup.distributed import gather_cat
from selfsup.losses.precision import full_precision
from selfsup.losses.vicreg import off_diagonal


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """What ``BatchNorm1d(affine=False)`` does in training mode: (N, D) -> (N, D) with each
    column centred and divided by ``sqrt(biased variance + eps)``."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, correction=0)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Empirical cross-correlation (D, D) of two batches (N, D) standardised per dimension."""
    n = z_a.shape[0]
    return batch_standardise(z_a, eps).T @ batch_standardise(z_b, eps) / n


@full_precision
def barlow_twins_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambd: float = 0.0051,
    eps: float = 1e-5,
    scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow Twins loss of two projector outputs (B, D) of the same images.

    Returns ``scale * (on_diag + lambd * off_diag)`` (``scale`` is solo-learn's ``scale_loss``,
    ``barlow_loss_func`` in solo/losses/barlow.py; 1 in the official code) and the unweighted
    parts ``on_diag``
    (sum of ``(c_ii - 1)^2``) and ``off_diag`` (sum of ``c_ij^2``, i != j). Computed in float32
    whatever the input dtype; under torchrun the standardisation and ``c`` use the batch of
    every process (gathered with gradients).
    """
    x = gather_cat(z_a.float())
    y = gather_cat(z_b.float())
    c = cross_correlation(x, y, eps)
    on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    loss = scale * (on_diag + lambd * off_diag)
    return loss, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}
