"""Explicit cross-process helpers; each is a no-op when torch.distributed is not initialised.

``torchrun --nproc_per_node N -m selfsup pretrain ...`` (and ``--nnodes`` for several machines)
describes the processes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` / ``MASTER_PORT``); :func:`init_from_env` joins that group: NCCL with one GPU per
process where CUDA exists, gloo on CPUs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 in one process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env() -> bool:
    """Join the process group torchrun describes; False (and nothing done) in a plain single
    process or when already joined. Each process uses GPU ``LOCAL_RANK`` where CUDA exists."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)  # env:// rendezvous, as torchrun sets it up
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (after training: evaluation runs in rank 0 alone)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and keeps the local slice.

    This is ``FullGatherLayer`` of facebookresearch/vicreg main_vicreg.py: each rank computes the
    same loss on the gathered batch, so the gradient reaching the local slice is the sum over
    ranks; DDP's gradient averaging then makes the step equal to the single-process one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, with gradients to the local
    part; returns ``x`` itself in a single process."""
    if not is_distributed() or world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)
