"""Schedules: pure functions of (step, total_steps), applied by the training loop each step."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, *, base: float, warmup_steps: int, final: float
) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_steps``, then cosine from ``base`` to
    ``final`` at ``total_steps`` (``adjust_learning_rate`` of facebookresearch/vicreg)."""
    if step < warmup_steps:
        return base * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(epochs: float, steps_per_epoch: int, total_steps: int, min_steps: int) -> int:
    """The warm-up length in steps, for a recipe written in epochs at any data size.

    A recipe's ``warmup_epochs`` assumes hundreds of steps an epoch; what keeps the first steps
    stable is their number, not the epochs they span (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD", sec. 2.2: the warm-up covers the early phase in which the network changes
    rapidly). So the asked warm-up is (1) capped at half the run, so that a shortened run
    (``train.epochs`` below the recipe's warm-up) still warms up and then decays, and (2) never
    shorter than ``min_steps``, which wins over the cap: a run shorter than ``min_steps`` ends
    while still warming up, below the peak lr, rather than diverge (measured in
    benchmarks/RESULTS.md, "Recipes at any size"). ``epochs`` 0 turns warm-up off."""
    if epochs <= 0:
        return 0
    asked = min(round(epochs * steps_per_epoch), total_steps // 2)
    return max(asked, min_steps)


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` to ``end`` over ``warmup_steps``, then constant ``end``.

    DINO's teacher-temperature schedule (``DINOLoss.teacher_temp_schedule`` in
    facebookresearch/dino main_dino.py): ``np.linspace(start, end, warmup)`` followed by
    ``end``, so ``end`` is already reached at step ``warmup_steps - 1``.
    """
    if step >= warmup_steps:
        return end
    if warmup_steps == 1:
        return start
    return start + (end - start) * step / (warmup_steps - 1)
