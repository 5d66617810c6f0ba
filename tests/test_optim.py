from __future__ import annotations

import itertools
import math

import pytest
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


def _plain_lars(p, g, mu, *, lr, wd, m, eta, clip, exclude, eps=1e-8):
    """One LARS update of one tensor written from the published rules, as plain lists.

    official (facebookresearch/vicreg main_vicreg.py): u = g + wd p, q = eta |p| / |u|.
    solo-learn (solo/utils/lars.py, clip_lr): u = g + wd p, q = eta |p| / (|g| + wd |p| + eps),
    q = min(q / lr, 1). Both: mu = m mu + q u, p = p - lr mu. Excluded tensors: q = 1, wd = 0.
    """
    norm = lambda v: math.sqrt(sum(x * x for x in v))  # noqa: E731
    if exclude:
        u, q = list(g), 1.0
    else:
        u = [gi + wd * pi for gi, pi in zip(g, p, strict=True)]
        if clip:
            q = eta * norm(p) / (norm(g) + wd * norm(p) + eps)
            q = min(q / lr, 1.0)
        else:
            q = eta * norm(p) / norm(u)
    mu = [m * a + q * b for a, b in zip(mu, u, strict=True)]
    return [pi - lr * a for pi, a in zip(p, mu, strict=True)], mu


@pytest.mark.parametrize("clip,eta", [(False, 0.001), (True, 0.02), (True, 1e-5)])
def test_lars_both_rules_match_plain_implementation(clip: bool, eta: float) -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(4))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 1e-4, "exclude": False},
            {"params": [b], "weight_decay": 0.0, "exclude": True},
        ],
        lr=0.3,
        momentum=0.9,
        eta=eta,
        clip=clip,
    )
    ref = {
        "w": (w.detach().flatten().tolist(), [0.0] * 12),
        "b": (b.detach().tolist(), [0.0] * 4),
    }
    for _ in range(3):  # three steps: the momentum buffer is exercised
        gw, gb = torch.randn(4, 3) * 0.1, torch.randn(4)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        ref["w"] = _plain_lars(
            *ref["w"][:1],
            gw.flatten().tolist(),
            ref["w"][1],
            lr=0.3,
            wd=1e-4,
            m=0.9,
            eta=eta,
            clip=clip,
            exclude=False,
        )
        ref["b"] = _plain_lars(
            *ref["b"][:1],
            gb.tolist(),
            ref["b"][1],
            lr=0.3,
            wd=0.0,
            m=0.9,
            eta=eta,
            clip=clip,
            exclude=True,
        )
        torch.testing.assert_close(w.detach().flatten(), torch.tensor(ref["w"][0]))
        torch.testing.assert_close(b.detach(), torch.tensor(ref["b"][0]))


def test_lars_clip_caps_the_step_at_plain_sgd() -> None:
    """With a huge eta the clipped rule is SGD (lr * u); the unclipped one is not."""
    p0 = torch.tensor([[3.0, 4.0]])
    grad = torch.tensor([[0.01, 0.0]])
    steps = {}
    for clip in (True, False):
        w = torch.nn.Parameter(p0.clone())
        opt = LARS(
            [{"params": [w], "weight_decay": 0.0, "exclude": False}], lr=0.5, eta=10.0, clip=clip
        )
        w.grad = grad.clone()
        opt.step()
        steps[clip] = (p0 - w.detach()).norm().item()
    assert math.isclose(steps[True], 0.5 * 0.01, rel_tol=1e-4)
    assert math.isclose(steps[False], 0.5 * 10.0 * 5.0, rel_tol=1e-5)


def test_warmup_steps_hold_at_any_data_size_and_run_length() -> None:
    """Issue #21: a recipe's warm-up in epochs is capped at half the run (a shortened recipe
    still warms up and decays) and never below the floor in steps (8-step epochs of 2,048
    images warmed up in 4 steps and diverged)."""
    from selfsup.parts.schedules import warmup_steps

    assert warmup_steps(0.5, 234, 702, 100) == 117  # the demo on 60k images: as written
    assert warmup_steps(0.5, 8, 24, 100) == 100  # 2,048 images: the floor, past the run's end
    assert warmup_steps(2, 234, 234, 100) == 117  # vicreg.yaml shortened to 1 epoch: half
    assert warmup_steps(10, 1000, 100_000, 100) == 10_000  # long runs: unchanged
    assert warmup_steps(0, 8, 24, 100) == 0  # off stays off
    lrs = [warmup_cosine(s, 24, base=0.3, warmup_steps=100, final=0.0) for s in range(24)]
    assert max(lrs) < 0.3 * 24 / 100 + 1e-12  # a run shorter than the floor stays below peak
