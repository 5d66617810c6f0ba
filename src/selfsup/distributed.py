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


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes; False (and nothing done) in a plain single
    process or when already joined. Each process uses GPU ``LOCAL_RANK`` where CUDA exists and
    ``device`` (``train.device``) is not "cpu": NCCL then, gloo otherwise (a CPU run on a GPU
    host under torchrun once picked NCCL and failed on its CPU tensors)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device != "cpu" and torch.cuda.is_available():
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


def any_rank(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any: a decision (skip a step, stop on a
    non-finite loss) that every rank must take together, or the others would wait forever at
    their next collective."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over processes (``x`` itself in one process), without gradient."""
    if not is_distributed() or world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def sum_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over processes (``x`` itself in one process), without gradient; no
    host sync (with NCCL the reduction is queued on the GPU like any other op)."""
    if not is_distributed() or world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


SYNCED = "_buffers_synced_by_collectives"


def mark_synced(module: torch.nn.Module, *names: str) -> None:
    """Declare buffers of ``module`` that every rank keeps identical by its own collectives
    (a queue filled with keys gathered from every rank, the DINO centre of the global batch):
    DDP need not broadcast them from rank 0 before every forward (MoCo's queue is 32 MB, ISD's
    with ResNet-50 262 MB)."""
    setattr(module, SYNCED, (*getattr(module, SYNCED, ()), *names))


def synced_buffer_names(root: torch.nn.Module) -> list[str]:
    """Fully qualified names of every buffer under ``root`` declared by :func:`mark_synced`,
    as ``DistributedDataParallel`` takes them to leave out of its buffer broadcast."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in root.named_modules()
        for name in getattr(module, SYNCED, ())
    ]


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
