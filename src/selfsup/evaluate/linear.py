"""Linear probe on precomputed frozen features: L2-regularised multinomial logistic regression.

The standard probe of the SimCLR (Chen et al. 2020, appendix B.6) and CLIP (Radford et al.
2021, appendix A.3) papers: standardised features (mean / std of the fitting set), full-batch
L-BFGS on the mean cross-entropy plus ``l2 / 2 * ||W||^2`` (the bias is not penalised). That is
scikit-learn's ``LogisticRegression(C=1 / (l2 * n))`` (``tests/test_evaluate.py`` checks the
two agree). The penalty is swept over a wide log-spaced range, chosen on a validation split
carved from the training split, and the probe is refitted on the whole training split with it;
the test split is touched once, to report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def standardise(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``features`` (N, D) for standardising. A feature (nearly) constant on
    the fitting set is centred but not scaled, as scikit-learn's StandardScaler does: dividing
    by a clamped ~0 std would multiply any test-time shift by 1e6."""
    mean = features.mean(0)
    std = features.std(0)
    std = torch.where(std < 1e-6 * mean.abs().clamp_min(1.0), torch.ones_like(std), std)
    return mean, std


def fit_linear(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    l2: float,
    max_iter: int = 1000,
    init: nn.Linear | None = None,
) -> LinearProbe:
    """Fit the probe on features (N, D) with integer labels (N,) by full-batch L-BFGS (strong
    Wolfe line search) on ``mean cross-entropy + l2 / 2 * ||W||^2``, from zero weights or from
    ``init`` (a warm start: the previous penalty's solution in a sweep)."""
    features = features.float()
    mean, std = standardise(features)
    x = (features - mean) / std
    y = labels.to(x.device).long()
    layer = nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():
        if init is None:  # logistic regression starts at 0: directions the data never spans
            layer.weight.zero_()  # (a constant feature) keep a zero weight
            layer.bias.zero_()
        else:
            layer.load_state_dict(init.state_dict())
    opt = torch.optim.LBFGS(
        layer.parameters(),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(layer(x), y) + 0.5 * l2 * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, layer.eval())


def epochs_for(steps_per_epoch: int, epochs: int, min_steps: int) -> int:
    """``epochs``, raised so that training takes at least ``min_steps`` optimizer steps."""
    return max(epochs, math.ceil(min_steps / max(1, steps_per_epoch)))


def select_and_fit_linear(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    l2s: Sequence[float],
    val_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 1000,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[LinearProbe, dict]:
    """Pick the L2 penalty with the best accuracy on a validation split carved from the given
    (training) features, or on ``val`` (features, labels of other held-out training images)
    when given, then refit on all the given features. The sweep runs from the strongest
    penalty down, each fit warm-started from the previous one; a tie keeps the stronger
    penalty. Returns the probe and the choice: ``l2``, its ``val_top1`` and ``val_sweep``
    (validation top-1 per penalty), all None when there was nothing to choose, and ``n_val``,
    how many labelled images chose it (0: none)."""
    order = sorted(set(l2s), reverse=True)
    best_l2, best_acc, sweep, n_val = order[0], None, None, 0
    if len(order) > 1:
        if val is None:
            train_idx, val_idx = carve_validation(len(features), val_fraction, seed)
            fit_x, fit_y = features[train_idx], labels[train_idx]
            val_x, val_y = features[val_idx], labels[val_idx]
        else:
            (fit_x, fit_y), (val_x, val_y) = (features, labels), val
        n_val = len(val_y)
        previous, sweep = None, {}
        for l2 in order:
            probe = fit_linear(fit_x, fit_y, num_classes, l2=l2, max_iter=max_iter, init=previous)
            previous = probe.layer
            pred = probe.predict(val_x).argmax(1).cpu()
            acc = sweep[l2] = float((pred == val_y.cpu()).float().mean())
            if best_acc is None or acc > best_acc:
                best_l2, best_acc = l2, acc
    probe = fit_linear(features, labels, num_classes, l2=best_l2, max_iter=max_iter)
    return probe, {"l2": best_l2, "val_top1": best_acc, "val_sweep": sweep, "n_val": n_val}


def carve_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (fit, validation) index tensors."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    n_val = max(1, round(n * fraction))
    return perm[n_val:], perm[:n_val]
