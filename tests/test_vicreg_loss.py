"""VICReg loss against a plain, loop-based implementation of the paper's formula."""

from __future__ import annotations

import math

import torch

from selfsup.losses import vicreg_loss
from selfsup.losses.vicreg import off_diagonal


def reference_vicreg(a: list[list[float]], b: list[list[float]], eps: float = 1e-4):
    """Term by term with Python loops: invariance (MSE), variance (hinge on std, /2 over
    branches), covariance (squared off-diagonal covariance summed / D, summed over branches)."""
    n, d = len(a), len(a[0])
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def centred(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        return [[z[i][j] - means[j] for j in range(d)] for i in range(n)]

    def variance(z):
        total = 0.0
        for j in range(d):
            var = sum(z[i][j] ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + eps))
        return total / d

    def covariance(z):
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum(z[i][j] * z[i][k] for i in range(n)) / (n - 1)
                    total += c * c
        return total / d

    ca, cb = centred(a), centred(b)
    var = (variance(ca) + variance(cb)) / 2
    cov = covariance(ca) + covariance(cb)
    return inv, var, cov


def test_vicreg_loss_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    # scales below 1 so the variance hinge is active on some dimensions
    z_a = torch.randn(16, 6, generator=g, dtype=torch.float64) * torch.linspace(0.2, 2.0, 6)
    z_b = z_a + 0.3 * torch.randn(16, 6, generator=g, dtype=torch.float64)
    loss, parts = vicreg_loss(z_a, z_b, sim_weight=25.0, var_weight=25.0, cov_weight=1.0)
    inv, var, cov = reference_vicreg(z_a.tolist(), z_b.tolist())
    assert var > 0  # the hinge must be exercised for the test to mean something
    torch.testing.assert_close(parts["invariance"].double(), torch.tensor(inv, dtype=torch.float64))
    torch.testing.assert_close(parts["variance"].double(), torch.tensor(var, dtype=torch.float64))
    torch.testing.assert_close(parts["covariance"].double(), torch.tensor(cov, dtype=torch.float64))
    expected = 25.0 * inv + 25.0 * var + 1.0 * cov
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_vicreg_weights_scale_terms() -> None:
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    loss, parts = vicreg_loss(z_a, z_b, sim_weight=2.0, var_weight=3.0, cov_weight=5.0)
    expected = 2 * parts["invariance"] + 3 * parts["variance"] + 5 * parts["covariance"]
    torch.testing.assert_close(loss, expected)


def test_vicreg_loss_has_gradients_and_float32_output() -> None:
    z_a = torch.randn(8, 4, dtype=torch.bfloat16, requires_grad=True)
    z_b = torch.randn(8, 4, dtype=torch.bfloat16, requires_grad=True)
    loss, _ = vicreg_loss(z_a, z_b)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z_a.grad is not None and torch.isfinite(z_a.grad.float()).all()


def test_off_diagonal() -> None:
    m = torch.arange(9.0).view(3, 3)
    assert off_diagonal(m).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
