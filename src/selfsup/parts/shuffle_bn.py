"""Shuffle-BN for MoCo-style key encoders, in one process and across processes.

MoCo (He et al. 2020, sec. 3.3) found that batch norm lets the query and its key "cheat": both
see statistics of the same samples, so the model can match the statistics rather than learn a
representation. The official code (facebookresearch/moco builder.py ``_batch_shuffle_ddp`` /
``_batch_unshuffle_ddp``) keeps BN per GPU and shuffles the key encoder's input across GPUs, so
the keys' BN statistics come from other samples than their queries'. With one GPU, MoCo's CIFAR
demo (facebookresearch/moco ``colab/moco_cifar10_demo.ipynb``) simulates 8 GPUs with a
``SplitBatchNorm`` (each eighth of the batch normalised with its own statistics, in both
encoders; ``--bn-splits 8``) and shuffles the key batch in the process
(``_batch_shuffle_single_gpu``); without shuffle-BN it loses about 4 points at 800 epochs.
ISD's train_isd_plus.py shuffles the teacher's input the same way (``get_shuffle_ids``).

Here: :func:`convert_split_batchnorm` turns a module's BatchNorm layers into split ones (same
parameters, buffers and state-dict keys, so checkpoints and exports are unchanged), and
:func:`shuffled_forward` runs the key encoder on a shuffled batch and puts its output back in
order. Under torchrun the shuffle spans every process, as the official code does, and each
process normalises its own share (no SyncBatchNorm, which would undo shuffle-BN).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.distributed import is_distributed, rank, world_size


def _split_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm with the statistics of each of ``bn.num_splits`` consecutive slices of the
    batch apart; the running statistics move by the slices' mean, as the demo's
    ``SplitBatchNorm`` does. (The demo groups samples ``i % splits``; both are random subsets,
    since the batches are shuffled and the key batch is shuffled again. Slices of the batch
    keep a channels-last layout, where regrouping would copy it to NCHW and back.) Eval mode
    is the plain layer."""
    if not bn.training or bn.num_splits == 1:
        return bn._plain_forward(x)
    splits = _groups(x.shape[0], bn.num_splits)
    if splits == 1:
        return bn._plain_forward(x)
    momentum = 0.1 if bn.momentum is None else bn.momentum
    means, variances, outs = [], [], []
    for part in x.chunk(splits):
        mean, var = bn.running_mean.clone(), bn.running_var.clone()
        outs.append(F.batch_norm(part, mean, var, bn.weight, bn.bias, True, momentum, bn.eps))
        means.append(mean)
        variances.append(var)
    with torch.no_grad():
        bn.running_mean.copy_(torch.stack(means).mean(0))
        bn.running_var.copy_(torch.stack(variances).mean(0))
        bn.num_batches_tracked += 1
    return torch.cat(outs)


def _groups(n: int, splits: int) -> int:
    """The most groups, up to ``splits``, that divide ``n`` samples into groups of >= 2 (a
    batch the splits do not divide is split fewer ways rather than unevenly)."""
    return max((d for d in range(1, splits + 1) if n % d == 0 and n // d >= 2), default=1)


class SplitBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are per group of samples."""

    num_splits: int = 1
    _plain_forward = nn.BatchNorm1d.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _split_forward(self, x)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are per group of samples."""

    num_splits: int = 1
    _plain_forward = nn.BatchNorm2d.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _split_forward(self, x)


_SPLIT = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d}


def convert_split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """In place: every ``BatchNorm1d`` / ``BatchNorm2d`` in ``module`` normalises ``splits``
    groups of its batch apart (their class changes; parameters, buffers and keys stay)."""
    for m in module.modules():
        cls = _SPLIT.get(type(m)) or (type(m) if type(m) in _SPLIT.values() else None)
        if cls is not None:
            m.__class__ = cls
            m.num_splits = splits
    return module


def splits_per_process(splits: int) -> int:
    """The demo's ``bn_splits`` counts simulated GPUs: with N processes each splits its own
    share ``splits // N`` ways (1 with 8 GPUs and 8 splits: the official per-GPU BN)."""
    return max(1, splits // world_size())


def _gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def shuffled_forward(
    encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``encoder(x)`` computed on a random permutation of the batch, returned in ``x``'s order.

    In one process the permutation is of the local batch (``_batch_shuffle_single_gpu``); under
    torchrun of the global batch, drawn on rank 0 and broadcast, each process encoding one
    share (``_batch_shuffle_ddp``). No gradient flows: the key encoder is an EMA copy."""
    if not is_distributed() or world_size() == 1:
        perm = torch.randperm(x.shape[0], device=x.device)
        out = encoder(x[perm])
        return out[torch.argsort(perm)]
    every = _gather(x)
    perm = torch.randperm(every.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    share = perm.view(world_size(), -1)[rank()]
    keys = _gather(encoder(every[share]))
    unshuffle = torch.argsort(perm).view(world_size(), -1)[rank()]
    return keys[unshuffle]
