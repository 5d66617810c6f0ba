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
