"""DINO loss and centre update (Caron et al., ICCV 2021).

Follows ``DINOLoss`` in facebookresearch/dino main_dino.py (``forward`` and ``update_center``).
The official loss takes the concatenated crops and ``chunk``s them; here the crops come as lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfsup.distributed import is_distributed, world_size
from selfsup.losses.precision import full_precision


@full_precision
def dino_loss(
    student_logits: Sequence[torch.Tensor],
    teacher_logits: Sequence[torch.Tensor],
    center: torch.Tensor,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy between the centred, sharpened teacher and the student over crop pairs.

    ``student_logits``: one (B, K) tensor per student crop, the global crops first (the same
    crops, in the same order, as the teacher's); ``teacher_logits``: one (B, K) tensor per
    global crop; ``center``: (1, K). Teacher targets are
    ``softmax((t - center) / teacher_temp)`` (detached), student log-probabilities
    ``log_softmax(s / student_temp)``. For every teacher crop ``iq`` and student crop ``v`` with
    ``v != iq`` (a crop is never its own target) the batch mean of ``sum_k -p_t log p_s`` is
    added, and the sum is divided by the number of such pairs. Defaults are main_dino.py's
    argparse defaults, ``student_temp=0.1`` and ``--teacher_temp 0.04``; ``DINOConfig`` (what a
    run uses) warms 0.04 up to 0.07 over 30 epochs instead, the DINO README's recipe for longer
    ViT runs (configs/fashion-mnist/dino.yaml sets 0.04). Float32 compute.

    Parts: ``cross_entropy`` (the loss) and ``teacher_entropy`` (mean entropy of the teacher
    distributions; near 0 means one-hot collapse, near log K uniform collapse).
    """
    if len(student_logits) < len(teacher_logits):
        raise ValueError(
            f"need at least as many student crops ({len(student_logits)}) as teacher crops "
            f"({len(teacher_logits)}); the first student crops are the teacher's global crops"
        )
    center = center.detach().float()
    teacher_logp = [
        F.log_softmax((t.detach().float() - center) / teacher_temp, dim=-1) for t in teacher_logits
    ]
    teacher_p = [lp.exp() for lp in teacher_logp]
    student_logp = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_logits]
    total = student_logp[0].new_zeros(())
    n_pairs = 0
    for iq, p in enumerate(teacher_p):
        for v, logp in enumerate(student_logp):
            if v == iq:
                continue
            total = total + torch.sum(-p * logp, dim=-1).mean()
            n_pairs += 1
    if n_pairs == 0:
        raise ValueError("DINO needs at least one (teacher, other student crop) pair")
    loss = total / n_pairs
    with torch.no_grad():
        entropy = torch.stack(
            [-(p * lp).sum(dim=-1).mean() for p, lp in zip(teacher_p, teacher_logp, strict=True)]
        )
    return loss, {"cross_entropy": loss.detach(), "teacher_entropy": entropy.mean()}


@torch.no_grad()
def dino_center_update(
    center: torch.Tensor,
    teacher_logits: torch.Tensor | Sequence[torch.Tensor],
    momentum: float = 0.9,
) -> torch.Tensor:
    """The new centre ``center * momentum + batch_mean * (1 - momentum)``, shape (1, K).

    ``batch_mean`` is the mean teacher output over every global crop of every process: the
    official ``update_center`` sums the (n, K) teacher output, ``all_reduce``s it and divides by
    ``n * world_size`` (so ranks must hold equal numbers of rows). ``teacher_logits`` is the
    (n, K) concatenation or a list of (B, K) crops; the official ``center_momentum`` is 0.9.
    Pure: ``center`` is not modified.
    """
    t = (
        teacher_logits
        if isinstance(teacher_logits, torch.Tensor)
        else torch.cat(list(teacher_logits))
    )
    batch_sum = t.detach().float().sum(dim=0, keepdim=True)
    if is_distributed():
        dist.all_reduce(batch_sum)
    batch_mean = batch_sum / (t.shape[0] * world_size())
    return center * momentum + batch_mean.to(center.dtype) * (1.0 - momentum)
