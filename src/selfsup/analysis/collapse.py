"""Collapse monitors: is the representation spreading out or falling onto a point / a line?

Two numbers per set of features (N, D), logged by the online monitor each epoch:

- ``feature_std``: the mean over dimensions of the per-dimension std of the L2-normalised
  features, divided by ``1 / sqrt(D)`` (the value of features spread evenly on the sphere), so
  1 is healthy and 0 is complete collapse (SimSiam, Chen & He 2021, section 4.1 / Fig. 2).
- ``effective_rank``: ``exp(entropy(s / sum(s)))`` of the singular values ``s`` of the centred
  features (RankMe, Garrido et al. 2023, eq. 1): between 1 (every feature on one line) and D.

:func:`collapse_warning` turns them into a message when either falls towards collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STD_FLOOR = 0.1  # feature_std below this (10% of evenly spread features) is collapsing
RANK_FLOOR = 2.0  # an effective rank below 2 is (nearly) a single direction


@torch.no_grad()
def collapse_stats(features: torch.Tensor) -> dict[str, float]:
    """``feature_std`` (relative to 1 / sqrt(D)) and ``effective_rank`` of features (N, D)."""
    z = features.float()
    d = z.shape[1]
    std = F.normalize(z, dim=1).std(dim=0).mean().item() * math.sqrt(d)
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum().item()
    return {"feature_std": std, "effective_rank": math.exp(entropy)}


def collapse_warning(stats: dict[str, float], dim: int) -> str | None:
    """A warning when the features fall towards collapse, else None."""
    std, rank = stats["feature_std"], stats["effective_rank"]
    if std >= STD_FLOOR and rank >= RANK_FLOOR:
        return None
    return (
        f"the features are collapsing: feature std {std:.3f} of an evenly spread 1 "
        f"(warn below {STD_FLOOR}), effective rank {rank:.2f} of {dim} (warn below "
        f"{RANK_FLOOR}). Check the loss weights and lr, or stop and change the recipe."
    )
