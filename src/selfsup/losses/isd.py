"""ISD loss (Tejankar et al., "ISD: Self-Supervised Learning by Iterative Similarity
Distillation", ICCV 2021).

Follows ``KLD`` and ``ISD.forward`` in UMBCvision/ISD train_isd_plus.py (the two-temperature
version; train_isd.py is the same with one temperature for both sides):

- ``q`` (student prediction) and ``k`` (teacher key) are L2-normalised;
- ``sim_q = q @ queue.T / T_s`` and ``sim_k = k @ queue.T / T_t`` over the K queued keys only:
  the official code adds **no** positive (``q . k``) column, the anchors are the queue alone;
- ``loss = KL(softmax(sim_k) || softmax(sim_q))`` averaged over the batch
  (``F.kl_div(log_softmax(sim_q), softmax(sim_k), reduction='batchmean')``).

Defaults ``T_s=0.1``, ``T_t=0.01`` are the official ``--temp_s`` / ``--temp_t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.precision import full_precision


@full_precision
def isd_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.01,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL divergence from the teacher's to the student's similarity distribution over a queue.

    ``q`` (B, D) student output, ``k`` (B, D) teacher output (both normalised here), ``queue``
    (K, D) of already-normalised teacher keys. The teacher side and the queue are constants
    (detached; the queue is cloned so that it may be updated in place before ``backward``).
    Float32 compute. Parts: ``teacher_entropy`` and ``student_entropy`` (mean entropies of the
    two distributions over the queue; the student's should follow the sharper teacher's).
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    anchors = queue.detach().float().clone()
    log_p_student = F.log_softmax(q @ anchors.T / student_temp, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(k @ anchors.T / teacher_temp, dim=1)  # (B, K)
    loss = F.kl_div(log_p_student, log_p_teacher.exp(), reduction="batchmean")
    with torch.no_grad():
        teacher_entropy = -(log_p_teacher.exp() * log_p_teacher).sum(dim=1).mean()
        student_entropy = -(log_p_student.exp() * log_p_student).sum(dim=1).mean()
    return loss, {"teacher_entropy": teacher_entropy, "student_entropy": student_entropy}
