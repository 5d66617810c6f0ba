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


def stratified_holdout(
    labels: torch.Tensor, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sorted indices: ``n`` images held out in proportion to each label value's
    share (a label of -1, unlabeled, is a group of its own), the rest kept. Within a group the
    order is a permutation seeded by ``seed`` alone; the ``n`` images of smallest in-group rank /
    group size are held, so every group gives ``round(n * n_c / N)`` images give or take one
    and the total is exactly ``n``. The same seed and labels always hold the same images."""
    labels = labels.cpu()
    if not 0 < n < len(labels):
        raise ConfigError(
            f"cannot hold out {n} of {len(labels)} images: eval.val_images must be in "
            f"[1, {len(labels) - 1}] (or 0 to turn validation curves off)"
        )
    g = torch.Generator().manual_seed(seed)
    key = torch.empty(len(labels), dtype=torch.float64)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        order = members[torch.randperm(len(members), generator=g)]
        key[order] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
    tie_break = torch.rand(len(labels), generator=g, dtype=torch.float64) * 1e-9
    held = torch.argsort(key + tie_break)[:n]
    return complement(len(labels), held), held.sort().values
