"""A FIFO queue of features (MoCo's and ISD's memory of past keys), saved in checkpoints."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.distributed import is_distributed, mark_synced, world_size


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``concat_all_gather`` of facebookresearch/moco moco/builder.py: (B, ...) from every
    process concatenated in rank order, without gradients (every rank must hold B rows).
    Returns ``x`` itself in a single process."""
    if not is_distributed() or world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class FeatureQueue(nn.Module):
    """K feature vectors (K, D) written first-in first-out, as MoCo's ``queue``/``queue_ptr``.

    Follows ``_dequeue_and_enqueue`` of facebookresearch/moco moco/builder.py (and
    UMBCvision/ISD train_isd_plus.py), stored (K, D) as ISD does rather than MoCo's (D, K).
    Initialised to random unit vectors; both the features and the write pointer are buffers, so
    they travel with ``state_dict`` and checkpoints. Unlike the official code (which asserts
    ``K % batch == 0``) any batch size is accepted: writes wrap around the end of the queue.
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be positive, got {size} and {dim}")
        init = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("queue", init)
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))
        mark_synced(self, "queue", "ptr")  # every rank enqueues the same gathered keys

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Append ``keys`` (B, D), gathered from every process in rank order, overwriting the
        oldest entries. If more than K keys arrive at once, the last K are kept, each at the
        position it would have had after writing them all one by one."""
        keys = all_gather_no_grad(keys.detach()).to(self.queue.dtype)
        n, k = keys.shape[0], self.size
        skip = max(0, n - k)  # a burst of more than K keys: only the last K can survive
        idx = (self.ptr + skip + torch.arange(n - skip, device=self.queue.device)) % k
        self.queue.index_copy_(0, idx, keys[skip:])
        self.ptr.copy_((self.ptr + n) % k)  # on the device: no host synchronisation per step
