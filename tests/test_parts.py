"""Stateful parts: feature queue, EMA teacher, momentum and temperature schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.parts.ema import cosine_momentum, ema_update_, frozen_copy
from selfsup.parts.queue import FeatureQueue
from selfsup.parts.schedules import linear_warmup


def test_feature_queue_fifo_wraparound_and_state_dict() -> None:
    fq = FeatureQueue(5, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fq.queue.norm(dim=1), torch.ones(5))
    init = fq.queue.clone()
    keys = torch.arange(14.0).view(7, 2)  # key i = [2i, 2i + 1]
    fq.enqueue(keys[:2])
    fq.enqueue(keys[2:4])
    assert fq.ptr.item() == 4
    torch.testing.assert_close(fq.queue[:4], keys[:4])
    torch.testing.assert_close(fq.queue[4], init[4])
    fq.enqueue(keys[4:6])  # 4 -> slot 4, 5 wraps to slot 0
    assert fq.ptr.item() == 1
    torch.testing.assert_close(fq.queue, keys[[5, 1, 2, 3, 4]])
    fq.enqueue(keys)  # more keys than slots: the last five, each where sequential writes put it
    assert fq.ptr.item() == (1 + 7) % 5
    torch.testing.assert_close(fq.queue, keys[[4, 5, 6, 2, 3]])

    other = FeatureQueue(5, 2)
    other.load_state_dict(fq.state_dict())
    assert set(fq.state_dict()) == {"queue", "ptr"}
    torch.testing.assert_close(other.queue, fq.queue)
    assert other.ptr.item() == fq.ptr.item()


def test_ema_update_follows_formula_and_copies_buffers() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.randn(8, 3))  # moves BN running stats
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s.detach())
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        assert torch.equal(tb, sb)
    kept = [b.clone() for b in teacher.buffers()]
    student(torch.randn(8, 3))
    ema_update_(teacher, student, 0.9, buffers="keep")
    assert all(torch.equal(a, b) for a, b in zip(kept, teacher.buffers(), strict=True))


def test_momentum_and_temperature_schedules() -> None:
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(150, 100, 0.996) == pytest.approx(1.0)
    # np.linspace(0.04, 0.07, 4) then 0.07
    expected = [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
    assert [linear_warmup(s, 4, 0.04, 0.07) for s in range(6)] == pytest.approx(expected)
    assert linear_warmup(0, 0, 0.04, 0.07) == pytest.approx(0.07)
