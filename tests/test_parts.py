"""Stateful parts: feature queue, EMA teacher, momentum and temperature schedules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfsup.parts.ema import cosine_momentum, ema_update_, frozen_copy
from selfsup.parts.queue import FeatureQueue
from selfsup.parts.schedules import linear_warmup
from selfsup.parts.shuffle_bn import convert_split_batchnorm, shuffled_forward


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


@pytest.mark.parametrize(
    ("cls", "shape"), [(nn.BatchNorm2d, (16, 3, 4, 4)), (nn.BatchNorm1d, (16, 5))]
)
def test_split_batchnorm_normalises_each_group_apart(cls, shape) -> None:
    """MoCo's CIFAR demo SplitBatchNorm: each quarter of the batch is normalised with its own
    statistics; running stats move by the groups' mean."""
    torch.manual_seed(0)
    reference = cls(shape[1])
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    split = convert_split_batchnorm(copy.deepcopy(nn.Sequential(reference)), 4)[0]
    assert isinstance(split, cls) and split.num_splits == 4
    x = torch.randn(shape) * 3 + 1
    out = split(x)
    means, variances = [], []
    for g in range(4):
        one = copy.deepcopy(reference)
        rows = slice(g * 4, (g + 1) * 4)
        torch.testing.assert_close(out[rows], one(x[rows]), atol=1e-5, rtol=1e-5)
        means.append(one.running_mean)
        variances.append(one.running_var)
    torch.testing.assert_close(split.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack(variances).mean(0))
    assert not torch.allclose(out, reference(x), atol=1e-3)  # differs from whole-batch BN
    plain = copy.deepcopy(split)
    plain.__class__ = cls  # the same parameters and running stats in a plain layer
    split.eval(), plain.eval()
    torch.testing.assert_close(split(x), plain(x))  # eval mode: the running statistics
    assert set(split.state_dict()) == set(reference.state_dict())


def test_split_batchnorm_splits_fewer_ways_when_the_batch_is_small() -> None:
    bn = convert_split_batchnorm(nn.Sequential(nn.BatchNorm1d(3)), 8)[0]
    out = bn(torch.randn(6, 3))  # 8 splits of 6 samples: 3 groups of 2
    assert out.shape == (6, 3) and torch.isfinite(out).all()


def test_shuffled_forward_encodes_a_permutation_and_restores_the_order() -> None:
    torch.manual_seed(0)
    x = torch.arange(16.0).view(16, 1)
    seen: list[torch.Tensor] = []
    out = shuffled_forward(lambda t: seen.append(t.clone()) or t * 2, x)
    torch.testing.assert_close(out, 2 * x)
    assert not torch.equal(seen[0], x) and sorted(seen[0].flatten().tolist()) == list(range(16))
