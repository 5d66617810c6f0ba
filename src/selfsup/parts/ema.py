"""Momentum (EMA) teacher: creation, in-place update, and DINO's cosine momentum schedule."""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn


def frozen_copy(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with ``requires_grad=False`` on every parameter.

    MoCo (facebookresearch/moco moco/builder.py) copies the query encoder's weights into the key
    encoder and freezes it; DINO (facebookresearch/dino main_dino.py) loads the student's
    state_dict into the teacher and freezes it. Both start teacher == student.
    """
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(
    teacher: nn.Module,
    student: nn.Module,
    momentum: float,
    *,
    buffers: Literal["copy", "keep"] = "copy",
) -> None:
    """In place: ``teacher_param = momentum * teacher_param + (1 - momentum) * student_param``.

    The parameter update is ``_momentum_update_key_encoder`` of facebookresearch/moco
    moco/builder.py and the teacher update in ``train_one_epoch`` of facebookresearch/dino
    main_dino.py. The two modules must have the same parameters in the same order.

    Buffers (BatchNorm running statistics): MoCo and DINO average *parameters only*; the
    teacher's running statistics then come from its own forward passes in training mode, and
    only matter when the teacher is run in eval mode. ``buffers="copy"`` (default) copies the
    student's buffers into the teacher, so a teacher run in eval mode (or evaluated) has
    sensible statistics whatever way the method forwards it; ``buffers="keep"`` leaves them
    untouched, exactly as the official code does.
    """
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(
            f"teacher has {len(t_params)} parameters, student {len(s_params)}; they must match"
        )
    if t_params:
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - momentum)
    if buffers == "copy":
        for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)
    elif buffers != "keep":
        raise ValueError(f"buffers must be 'copy' or 'keep', got {buffers!r}")


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    """Teacher momentum rising from ``base`` at step 0 to ``final`` at ``total`` along a cosine.

    DINO's ``cosine_scheduler(args.momentum_teacher, 1, epochs, niter_per_ep)`` in
    facebookresearch/dino utils.py: ``final + 0.5 * (base - final) * (1 + cos(pi * step /
    total))``; steps past ``total`` stay at ``final``.
    """
    progress = min(1.0, step / max(1, total))
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))
