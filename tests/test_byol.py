"""BYOL: the loss against the paper's formula written out element by element, the target's
stop-gradient, and the method's config check (its two CPU steps, EMA target and checkpoint are in
tests/test_methods.py's tables)."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.losses.byol import byol_loss

Rows = list[list[float]]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_term(p: Rows, z: Rows) -> float:
    """Grill et al. 2020, eq. 2: the mean over the batch of ||p / |p| - z / |z| ||^2, written
    with Python floats, one coordinate at a time."""
    total = 0.0
    for pi, zi in zip(p, z, strict=True):
        norm_p = math.sqrt(sum(v * v for v in pi))
        norm_z = math.sqrt(sum(v * v for v in zi))
        total += sum((a / norm_p - b / norm_z) ** 2 for a, b in zip(pi, zi, strict=True))
    return total / len(p)


def test_byol_loss_matches_the_papers_formula_written_out() -> None:
    """The symmetrised loss L + L~ (section 3.1): prediction of view a against the target of
    view b, plus the swap."""
    p_a, p_b = _randn(6, 5, seed=0), _randn(6, 5, seed=1)
    z_a, z_b = p_b + 0.5 * _randn(6, 5, seed=2), p_a + 0.3 * _randn(6, 5, seed=3)
    loss, parts = byol_loss(p_a, p_b, z_a, z_b)
    ab = reference_term(p_a.tolist(), z_b.tolist())
    ba = reference_term(p_b.tolist(), z_a.tolist())
    assert loss.item() == pytest.approx(ab + ba, rel=1e-5)
    assert parts["cos_ab"].item() == pytest.approx(1 - ab / 2, rel=1e-5)
    assert parts["cos_ba"].item() == pytest.approx(1 - ba / 2, rel=1e-5)


def test_byol_loss_bounds_and_scale_invariance() -> None:
    p = _randn(4, 3, seed=4)
    zero, _ = byol_loss(p, p, 3.0 * p, 0.5 * p)  # same directions: 0
    worst, _ = byol_loss(p, p, -p, -p)  # opposite directions: 4 per term
    assert zero.item() == pytest.approx(0.0, abs=1e-6)
    assert worst.item() == pytest.approx(8.0, rel=1e-6)


def test_the_target_gets_no_gradient() -> None:
    p_a, p_b = _randn(4, 3, seed=5).requires_grad_(), _randn(4, 3, seed=6).requires_grad_()
    z_a, z_b = _randn(4, 3, seed=7).requires_grad_(), _randn(4, 3, seed=8).requires_grad_()
    byol_loss(p_a, p_b, z_a, z_b)[0].backward()
    assert p_a.grad is not None and p_b.grad is not None
    assert z_a.grad is None and z_b.grad is None


def test_the_predictor_must_end_in_the_projectors_width() -> None:
    cfg = load_config(None, ["method.name=byol"])
    assert (cfg.method.projector, cfg.method.predictor) == ("4096-256", "4096-256")
    assert (cfg.method.momentum, cfg.method.momentum_final) == (0.996, 1.0)
    with pytest.raises(ConfigError, match=r"method\.predictor='64-32' must end in .* 16"):
        load_config(None, ["method.name=byol", "method.projector=32-16", "method.predictor=64-32"])
