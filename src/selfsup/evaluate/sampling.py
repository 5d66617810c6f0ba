"""Label fractions: class-balanced subsets of a labelled split, the same for every method."""

from __future__ import annotations

import torch

from selfsup.errors import ConfigError


def class_balanced_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a ``fraction`` of the labelled images (labels >= 0), drawn per class:
    ``max(1, round(fraction * n_c))`` of the ``n_c`` images of each class c, uniformly with a
    generator seeded by ``seed`` alone, so every method (and every run) fine-tuned with the same
    seed sees exactly the same images. ``fraction=1`` returns every labelled image."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"a label fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in labels[labels >= 0].unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        take = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=g)[:take]])
    if not chosen:
        raise ConfigError("a label fraction needs labelled images; this split has none")
    return torch.cat(chosen).sort().values


def complement(n: int, index: torch.Tensor) -> torch.Tensor:
    """The sorted indices of range(n) not in ``index``."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return keep.nonzero().squeeze(1)
