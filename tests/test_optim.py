from __future__ import annotations

import itertools
import math

import torch

from selfsup.parts.schedules import warmup_cosine
from selfsup.train.optim import LARS


def test_lars_step_matches_formula() -> None:
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # norm 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.1, "exclude": False},
            {"params": [b], "weight_decay": 0.0, "exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        eta=0.001,
    )
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    dp = torch.tensor([[1.0, 0.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    q = 0.001 * 5.0 / dp.norm()
    torch.testing.assert_close(w.data, torch.tensor([[3.0, 4.0]]) - 0.5 * q * dp)
    torch.testing.assert_close(b.data, torch.tensor([1.0 - 0.5 * 2.0]))  # no decay, no trust ratio
    # momentum: a second identical gradient adds mu = 0.9 * mu + dp
    b.grad = torch.tensor([2.0])
    opt.step()
    torch.testing.assert_close(b.data, torch.tensor([0.0 - 0.5 * (0.9 * 2.0 + 2.0)]))


def test_lars_state_dict_round_trip() -> None:
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "exclude": False}], lr=0.1)
    p.grad = torch.ones(2, 2)
    opt.step()
    opt2 = LARS([{"params": [p], "weight_decay": 0.0, "exclude": False}], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    torch.testing.assert_close(opt2.state[p]["mu"], opt.state[p]["mu"])


def test_warmup_cosine() -> None:
    kw = dict(base=1.0, warmup_steps=10, final=0.01)
    assert warmup_cosine(0, 100, **kw) == 0.0
    assert math.isclose(warmup_cosine(5, 100, **kw), 0.5)
    assert math.isclose(warmup_cosine(10, 100, **kw), 1.0)
    assert math.isclose(warmup_cosine(55, 100, **kw), 0.505)  # half-way down the cosine
    assert math.isclose(warmup_cosine(100, 100, **kw), 0.01)
    values = [warmup_cosine(s, 100, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
