"""Contrastive losses: SimCLR's NT-Xent (two views or multi-crop) and MoCo's InfoNCE against a
queue of keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.distributed import gather_cat
from selfsup.losses.precision import full_precision


@full_precision
def nt_xent_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, *, temperature: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimCLR's NT-Xent loss (Chen et al., ICML 2020) of two projections (B, D) of a batch.

    Follows ``add_contrastive_loss`` in google-research/simclr objective.py (tf2/objective.py):
    embeddings are L2-normalised; each of the 2N views is an anchor whose positive is the other
    view of its image and whose negatives are the other 2N - 2 views (its own similarity is
    masked out, the official ``LARGE_NUM`` trick); cross-entropy over the 2N - 1 candidates with
    logits ``cos / temperature`` (official flag default 0.1).

    Reduction: the mean over the 2N anchors, the paper's formula. The official code returns
    ``loss_a + loss_b``, the sum of the two per-view means, i.e. twice this value.

    Under torchrun both views are gathered from every process with gradients
    (:func:`selfsup.distributed.gather_cat`) and every rank computes the global loss over the
    N = world_size * B images; the value then equals the single-process one on the concatenated
    batch, and DDP's gradient averaging gives the single-process gradient.

    Parts: ``pos_sim`` (mean positive cosine) and ``neg_sim`` (mean cosine over negative pairs).
    """
    a = gather_cat(F.normalize(z_a.float(), dim=1))
    b = gather_cat(F.normalize(z_b.float(), dim=1))
    n = a.shape[0]
    z = torch.cat([a, b], dim=0)  # (2N, D): all first views, then all second views
    cos = z @ z.T  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (cos / temperature).masked_fill(self_mask, float("-inf"))
    targets = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        pos = cos[torch.arange(2 * n, device=z.device), targets]
        neg_total = cos.sum() - cos.diagonal().sum() - pos.sum()
        neg_sim = neg_total / (2 * n * (2 * n - 2)) if n > 1 else torch.zeros_like(neg_total)
    return loss, {"pos_sim": pos.mean(), "neg_sim": neg_sim}


@full_precision
def multi_crop_nt_xent_loss(
    views: list[torch.Tensor], *, temperature: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimCLR's NT-Xent over V >= 2 crops of each image (V projections (B, D), globals first):
    ``simclr_loss_func`` of vturrisi/solo-learn solo/losses/simclr.py @9187ea3 (:25-59), as its
    SimCLR trains with small crops (solo/methods/simclr.py ``training_step``, :117-147: every
    crop of an image shares its index). Each of the V*N crops is an anchor; its positives are
    the V - 1 other crops of its image and its negatives the crops of every other image; the
    anchor's loss is
    ``-log(sum_pos exp(cos / t) / sum_{all but itself} exp(cos / t))``, averaged over anchors.
    With V = 2 it is :func:`nt_xent_loss`. Under torchrun every view is gathered from every
    process, as there.

    Parts: ``pos_sim`` (mean cosine over positive pairs) and ``neg_sim`` (over negative pairs).
    """
    if len(views) < 2:
        raise ValueError(f"multi-crop NT-Xent takes at least two views, got {len(views)}")
    z = torch.cat([gather_cat(F.normalize(v.float(), dim=1)) for v in views])  # (V*N, D)
    v, n = len(views), z.shape[0] // len(views)
    image = torch.arange(n, device=z.device).repeat(v)
    same = image[:, None] == image[None, :]
    self_mask = torch.eye(v * n, dtype=torch.bool, device=z.device)
    cos = z @ z.T
    logits = (cos / temperature).masked_fill(self_mask, float("-inf"))
    positives = logits.masked_fill(~same, float("-inf"))
    loss = (logits.logsumexp(dim=1) - positives.logsumexp(dim=1)).mean()
    with torch.no_grad():
        pos_mask, neg_mask = same & ~self_mask, ~same
        pos_sim = cos[pos_mask].mean()
        neg_sim = cos[neg_mask].mean() if n > 1 else torch.zeros_like(pos_sim)
    return loss, {"pos_sim": pos_sim, "neg_sim": neg_sim}


@full_precision
def infonce_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, *, temperature: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MoCo's InfoNCE loss (He et al., CVPR 2020) of queries against keys and a queue.

    Follows ``MoCo.forward`` in facebookresearch/moco moco/builder.py: ``q`` (B, D) and ``k``
    (B, D) are L2-normalised here (the official normalises both encoder outputs before the
    loss); ``queue`` (K, D) holds already-normalised keys (the official stores it as (D, K)).
    Logits are ``[q . k, q @ queue.T] / temperature`` (B, 1 + K) with the positive at index 0,
    and the loss is the mean cross-entropy towards index 0. ``k`` and ``queue`` are constants
    (detached); the queue is cloned, as the official ``queue.clone().detach()``, so that it may
    be updated in place before ``backward``. Temperature default 0.2 is MoCo v2's recipe
    (``--moco-t 0.2``; the v1 default is 0.07).

    Parts: ``pos_sim`` (mean q . k), ``neg_sim`` (mean q . queue) and ``accuracy`` (share of
    queries whose largest logit is the positive).
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    negatives = queue.detach().float().clone()
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    l_neg = q @ negatives.T  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == 0).float().mean()
    parts = {"pos_sim": l_pos.detach().mean(), "neg_sim": l_neg.detach().mean()}
    parts["accuracy"] = accuracy
    return loss, parts
