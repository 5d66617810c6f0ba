"""Losses and stateful parts against plain, formula-by-formula Python references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.losses import (
    barlow_twins_loss,
    dino_center_update,
    dino_loss,
    infonce_loss,
    isd_loss,
    multi_crop_nt_xent_loss,
    nt_xent_loss,
    vicreg_loss,
)

Rows = list[list[float]]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def _close(t: torch.Tensor, x: float, rel: float = 1e-5) -> None:
    assert math.isclose(t.item(), x, rel_tol=rel, abs_tol=1e-7), (t.item(), x)


# ---- Barlow Twins ------------------------------------------------------------------------------


def reference_barlow(a: Rows, b: Rows, lambd: float, eps: float = 1e-5) -> tuple[float, float]:
    n, d = len(a), len(a[0])

    def standardise(z: Rows) -> Rows:
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            mean = sum(z[i][j] for i in range(n)) / n
            var = sum((z[i][j] - mean) ** 2 for i in range(n)) / n  # biased, as BatchNorm
            for i in range(n):
                out[i][j] = (z[i][j] - mean) / math.sqrt(var + eps)
        return out

    sa, sb = standardise(a), standardise(b)
    on = off = 0.0
    for j in range(d):
        for k in range(d):
            c = sum(sa[i][j] * sb[i][k] for i in range(n)) / n
            if j == k:
                on += (c - 1.0) ** 2
            else:
                off += c * c
    return on, off


def test_barlow_twins_matches_loop_reference_and_batchnorm() -> None:
    z_a = _randn(12, 5, seed=0) * torch.linspace(0.5, 3.0, 5)
    z_b = z_a + 0.5 * _randn(12, 5, seed=1)
    loss, parts = barlow_twins_loss(z_a, z_b, lambd=0.0051)
    on, off = reference_barlow(z_a.tolist(), z_b.tolist(), 0.0051)
    _close(parts["on_diag"], on)
    _close(parts["off_diag"], off)
    _close(loss, on + 0.0051 * off)
    # the official formulation: BatchNorm1d(affine=False) in training mode
    bn = nn.BatchNorm1d(5, affine=False).train()
    c = bn(z_a.float()).T @ bn(z_b.float()) / 12
    official = (torch.diagonal(c) - 1).pow(2).sum() + 0.0051 * (
        c.pow(2).sum() - c.diag().pow(2).sum()
    )
    torch.testing.assert_close(loss, official, rtol=1e-5, atol=1e-6)


# ---- NT-Xent and InfoNCE -----------------------------------------------------------------------


def reference_nt_xent(a: Rows, b: Rows, t: float) -> tuple[float, float, float]:
    n = len(a)
    views = [_unit(v) for v in a] + [_unit(v) for v in b]
    total = pos_total = neg_total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(_dot(views[i], views[j]) / t) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(_dot(views[i], views[pos]) / t) / denom)
        pos_total += _dot(views[i], views[pos])
        neg_total += sum(_dot(views[i], views[j]) for j in range(2 * n) if j not in (i, pos))
    return total / (2 * n), pos_total / (2 * n), neg_total / (2 * n * (2 * n - 2))


def test_nt_xent_matches_loop_reference() -> None:
    z_a, z_b = _randn(6, 4, seed=2), _randn(6, 4, seed=3)
    z_b = z_a + 0.7 * z_b
    loss, parts = nt_xent_loss(z_a, z_b, temperature=0.5)
    ref, pos, neg = reference_nt_xent(z_a.tolist(), z_b.tolist(), 0.5)
    _close(loss, ref)
    _close(parts["pos_sim"], pos)
    _close(parts["neg_sim"], neg)


def reference_multi_crop_nt_xent(crops: list[Rows], t: float) -> float:
    """solo-learn's ``simclr_loss_func``, anchor by anchor: positives are the other crops of
    the anchor's image, the denominator every crop but the anchor itself."""
    n = len(crops[0])
    z = [(c, i, _unit(row)) for c, rows in enumerate(crops) for i, row in enumerate(rows)]
    total = 0.0
    for c, i, u in z:
        pos = sum(math.exp(_dot(u, w) / t) for d, j, w in z if j == i and d != c)
        rest = sum(math.exp(_dot(u, w) / t) for d, j, w in z if (d, j) != (c, i))
        total += -math.log(pos / rest)
    return total / (len(crops) * n)


def test_multi_crop_nt_xent_matches_loop_reference_and_is_nt_xent_at_two_crops() -> None:
    base = _randn(5, 4, seed=4)
    crops = [base + 0.6 * _randn(5, 4, seed=10 + c) for c in range(4)]
    loss, parts = multi_crop_nt_xent_loss(crops, temperature=0.3)
    _close(loss, reference_multi_crop_nt_xent([c.tolist() for c in crops], 0.3))
    pairs = [(c, d) for c in range(4) for d in range(4) if c != d]
    pos = sum(torch.cosine_similarity(crops[c], crops[d]).mean().item() for c, d in pairs)
    _close(parts["pos_sim"], pos / len(pairs))
    a, b = crops[:2]
    two, two_parts = multi_crop_nt_xent_loss([a, b], temperature=0.3)
    pair, pair_parts = nt_xent_loss(a, b, temperature=0.3)
    _close(two, pair.item())
    _close(two_parts["neg_sim"], pair_parts["neg_sim"].item())
    with pytest.raises(ValueError, match="at least two views"):
        multi_crop_nt_xent_loss([a], temperature=0.3)


def reference_infonce(q: Rows, k: Rows, queue: Rows, t: float) -> tuple[float, float]:
    total = correct = 0.0
    for qi, ki in zip(q, k, strict=True):
        qi, ki = _unit(qi), _unit(ki)
        logits = [_dot(qi, ki) / t] + [_dot(qi, neg) / t for neg in queue]
        total += -math.log(_softmax(logits)[0])
        correct += float(max(range(len(logits)), key=logits.__getitem__) == 0)
    return total / len(q), correct / len(q)


def test_infonce_matches_loop_reference_and_treats_keys_as_constants() -> None:
    q = _randn(5, 4, seed=4).requires_grad_(True)
    k = (q.detach() + 0.5 * _randn(5, 4, seed=5)).requires_grad_(True)
    queue = nn.functional.normalize(_randn(7, 4, seed=6), dim=1)
    loss, parts = infonce_loss(q, k, queue, temperature=0.2)
    ref, acc = reference_infonce(q.tolist(), k.tolist(), queue.tolist(), 0.2)
    _close(loss, ref)
    _close(parts["accuracy"], acc)
    queue.add_(1.0)  # updating the queue in place before backward must be allowed (it is cloned)
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert k.grad is None


# ---- DINO --------------------------------------------------------------------------------------


def reference_dino(students: list[Rows], teachers: list[Rows], center: list[float], ts, tt):
    total, pairs = 0.0, 0
    for iq, teacher in enumerate(teachers):
        for v, student in enumerate(students):
            if v == iq:
                continue
            term = 0.0
            for t_row, s_row in zip(teacher, student, strict=True):
                p = _softmax([(x - c) / tt for x, c in zip(t_row, center, strict=True)])
                logq = [math.log(x) for x in _softmax([x / ts for x in s_row])]
                term += -sum(pi * li for pi, li in zip(p, logq, strict=True))
            total += term / len(teacher)
            pairs += 1
    return total / pairs, pairs


def test_dino_loss_matches_loop_reference() -> None:
    teachers = [_randn(3, 6, seed=10 + i) for i in range(2)]
    students = [_randn(3, 6, seed=20 + i) for i in range(4)]
    center = 0.1 * _randn(1, 6, seed=30)
    loss, parts = dino_loss(students, teachers, center, student_temp=0.1, teacher_temp=0.04)
    ref, pairs = reference_dino(
        [s.tolist() for s in students],
        [t.tolist() for t in teachers],
        center[0].tolist(),
        0.1,
        0.04,
    )
    assert pairs == 2 * 4 - 2
    _close(loss, ref)
    _close(parts["cross_entropy"], ref)
    assert 0.0 <= parts["teacher_entropy"].item() <= math.log(6)


def test_dino_loss_skips_same_view_pairs_and_detaches_teacher() -> None:
    teachers = [_randn(3, 6, seed=40 + i).requires_grad_(True) for i in range(2)]
    center = torch.zeros(1, 6, dtype=torch.float64)

    def grad_of_first_student(t0: torch.Tensor) -> torch.Tensor:
        students = [_randn(3, 6, seed=50 + i).requires_grad_(True) for i in range(3)]
        loss, _ = dino_loss(students, [t0, teachers[1]], center)
        loss.backward()
        assert students[0].grad is not None and torch.isfinite(students[0].grad).all()
        return students[0].grad

    # student crop 0 is teacher crop 0: its gradient must not depend on teacher crop 0 at all
    g1 = grad_of_first_student(teachers[0])
    g2 = grad_of_first_student(_randn(3, 6, seed=99))
    torch.testing.assert_close(g1, g2)
    assert teachers[0].grad is None and teachers[1].grad is None


def test_dino_center_update_is_ema_of_batch_mean() -> None:
    center = _randn(1, 4, seed=60)
    crops = [_randn(3, 4, seed=61), _randn(3, 4, seed=62)]
    new = dino_center_update(center, crops, momentum=0.9)
    rows = crops[0].tolist() + crops[1].tolist()
    for j in range(4):
        mean = sum(r[j] for r in rows) / len(rows)
        _close(new[0, j], 0.9 * center[0, j].item() + 0.1 * mean)
    torch.testing.assert_close(new, dino_center_update(center, torch.cat(crops), momentum=0.9))
    assert not torch.equal(new, center)  # pure: returns a new tensor, input untouched


# ---- ISD ---------------------------------------------------------------------------------------


def reference_isd(q: Rows, k: Rows, queue: Rows, ts: float, tt: float) -> float:
    total = 0.0
    for qi, ki in zip(q, k, strict=True):
        qi, ki = _unit(qi), _unit(ki)
        p_s = _softmax([_dot(qi, a) / ts for a in queue])
        p_t = _softmax([_dot(ki, a) / tt for a in queue])
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    return total / len(q)


def test_isd_matches_loop_reference_and_has_gradients() -> None:
    q = _randn(4, 5, seed=70).requires_grad_(True)
    k = (q.detach() + 0.3 * _randn(4, 5, seed=71)).requires_grad_(True)
    queue = nn.functional.normalize(_randn(9, 5, seed=72), dim=1)
    loss, _ = isd_loss(q, k, queue, student_temp=0.1, teacher_temp=0.05)
    _close(loss, reference_isd(q.tolist(), k.tolist(), queue.tolist(), 0.1, 0.05))
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and k.grad is None


@pytest.mark.parametrize("name", ["barlow", "nt_xent", "infonce", "isd", "dino"])
def test_losses_differentiable_float32_from_bfloat16(name: str) -> None:
    a = torch.randn(8, 6, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(8, 6, dtype=torch.bfloat16, requires_grad=True)
    queue = nn.functional.normalize(torch.randn(10, 6), dim=1)
    loss, parts = {
        "barlow": lambda: barlow_twins_loss(a, b),
        "nt_xent": lambda: nt_xent_loss(a, b, temperature=0.1),
        "infonce": lambda: infonce_loss(a, b, queue, temperature=0.2),
        "isd": lambda: isd_loss(a, b, queue),
        "dino": lambda: dino_loss([a, b * 2], [b, a], torch.zeros(1, 6)),
    }[name]()
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert a.grad is not None and torch.isfinite(a.grad.float()).all()
    assert all(not v.requires_grad for v in parts.values())


def _all_losses(g: torch.Generator) -> dict:
    z_a, z_b = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(128, 32, generator=g), dim=1)
    students = [torch.randn(16, 48, generator=g) for _ in range(4)]
    teachers = students[:2]
    center = torch.randn(1, 48, generator=g) * 0.1
    return {
        "vicreg": lambda: vicreg_loss(z_a, z_b),
        "barlow_twins": lambda: barlow_twins_loss(z_a, z_b),
        "nt_xent": lambda: nt_xent_loss(z_a, z_b),
        "infonce": lambda: infonce_loss(z_a, z_b, queue),
        "dino": lambda: dino_loss(students, teachers, center),
        "isd": lambda: isd_loss(z_a, z_b, queue),
    }


def test_every_loss_is_float32_under_bf16_autocast() -> None:
    """Under autocast, matmul runs in bf16 even on float32 inputs; each loss body turns it off
    (losses/precision.py), so its value equals the fp32 one to float32 precision. Without that
    the Barlow Twins / VICReg / ISD values move by 1e-3 relative or more."""
    fp32 = {k: f()[0] for k, f in _all_losses(torch.Generator().manual_seed(0)).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = {k: f()[0] for k, f in _all_losses(torch.Generator().manual_seed(0)).items()}
    for name in fp32:
        assert bf16[name].dtype == torch.float32, name
        torch.testing.assert_close(bf16[name], fp32[name], rtol=1e-6, atol=1e-6, msg=name)


def test_autocast_would_change_the_cross_correlation() -> None:
    """The check above can fail: the same product under autocast, unprotected, is bf16."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unprotected = (a.float().T @ b.float()) / 64
    assert unprotected.dtype == torch.bfloat16
    assert (unprotected.float() - a.T @ b / 64).abs().max() > 1e-4
