"""Linear probe on precomputed frozen features.

A single linear layer is trained with AdamW and a cosine schedule on standardised features
(mean / std of the fitting set). The weight decay is chosen on a validation split carved from
the training split; the probe is then refitted on the whole training split with that choice and
the test split is touched once, to report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LinearProbe:
    """A fitted probe: standardisation statistics and the linear layer."""

    mean: torch.Tensor
    std: torch.Tensor
    layer: nn.Linear

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for features (N, D)."""
        x = (features.to(self.mean.device).float() - self.mean) / self.std
        return self.layer(x)


def fit_linear(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    min_steps: int = 0,
) -> LinearProbe:
    """Train a linear classifier on features (N, D) with integer labels (N,), for ``epochs``
    or more: as many as :func:`epochs_for` needs to take at least ``min_steps`` steps."""
    features = features.float()
    mean = features.mean(0)
    std = features.std(0)
    # a feature (nearly) constant on the fitting set is centred but not scaled, as scikit-learn's
    # StandardScaler does: dividing by a clamped ~0 std would multiply any test-time shift by 1e6
    std = torch.where(std < 1e-6 * mean.abs().clamp_min(1.0), torch.ones_like(std), std)
    x = (features - mean) / std
    y = labels.to(x.device).long()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(layer.weight)  # logistic regression starts at 0: directions the data never
    nn.init.zeros_(layer.bias)  # spans (a constant feature) keep a zero weight
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    epochs = epochs_for(steps_per_epoch, epochs, min_steps)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return LinearProbe(mean, std, layer.eval())


def epochs_for(steps_per_epoch: int, epochs: int, min_steps: int) -> int:
    """``epochs``, raised so that training takes at least ``min_steps`` optimizer steps."""
    return max(epochs, math.ceil(min_steps / max(1, steps_per_epoch)))


def select_and_fit_linear(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    weight_decays: list[float],
    val_fraction: float = 0.1,
    seed: int = 0,
    **kwargs,
) -> tuple[LinearProbe, dict[str, float]]:
    """Pick the weight decay with the best accuracy on a validation split carved from the
    given (training) features, then refit on all of them. Returns the probe and the choice."""
    train_idx, val_idx = carve_validation(len(features), val_fraction, seed)
    best_wd, best_acc = weight_decays[0], -1.0
    if len(weight_decays) > 1:
        for wd in weight_decays:
            probe = fit_linear(
                features[train_idx],
                labels[train_idx],
                num_classes,
                weight_decay=wd,
                seed=seed,
                **kwargs,
            )
            pred = probe.predict(features[val_idx]).argmax(1).cpu()
            acc = float((pred == labels[val_idx].cpu()).float().mean())
            if acc > best_acc:
                best_wd, best_acc = wd, acc
    probe = fit_linear(features, labels, num_classes, weight_decay=best_wd, seed=seed, **kwargs)
    return probe, {"weight_decay": best_wd, "val_top1": best_acc}


def carve_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (fit, validation) index tensors."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    n_val = max(1, round(n * fraction))
    return perm[n_val:], perm[:n_val]
