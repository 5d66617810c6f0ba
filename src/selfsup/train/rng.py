"""The training run's random streams, and what a checkpoint keeps of them.

* The view generator (:func:`view_seed`): one per epoch, seeded by (seed, epoch), on the
  training device, the same on every rank: each rank draws the view parameters of the whole
  global batch and keeps its rows (``make_views(..., shard=...)``), so N processes draw what
  one would. A mid-epoch checkpoint stores its state and its device type; a resume restores a
  state of the same device type, and reseeds from the checkpoint's step otherwise
  (:func:`restore_generator`: a checkpoint written on a GPU resumed on a CPU, or the reverse,
  continues deterministically, but not bit-exactly, and says so).
* The global torch RNG (dropout, drop-path, one process's shuffle-BN permutation): reseeded at
  the start of every step from (seed, step, rank) (:func:`seed_step`). Each rank then draws
  its own dropout masks, as the GPUs sharing one big batch do (one seed everywhere gave every
  rank the same masks), and a resumed run draws at each step what the uninterrupted run drew,
  on any device and any number of ranks, with no state to store (checkpoints used to store
  rank 0's CPU and CUDA states, which every rank then restored).
"""

from __future__ import annotations

import torch


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG's seed for ``step`` on ``rank`` (distinct for up to 65,537 ranks)."""
    return ((seed * 1_000_003 + step) * 65_537 + rank) % 2**63


def seed_step(seed: int, step: int, rank: int) -> None:
    """Reseed the global RNG (the CPU's and every GPU's) for ``step`` on ``rank``; no host
    sync, a few microseconds."""
    torch.manual_seed(step_seed(seed, step, rank))


def view_seed(seed: int, epoch: int) -> int:
    """The view generator's seed for ``epoch``: the same on every rank."""
    return (seed * 100_003 + epoch) * 1_009


def _cpu_state_bytes() -> int:
    return torch.Generator().get_state().numel()


def state_device(state: torch.Tensor, recorded: str | None) -> str:
    """The device type of the generator a checkpoint's ``state`` came from: as recorded, or,
    in a checkpoint from before it was recorded, by its size (a CPU generator's Mersenne
    Twister state is 5,056 bytes, a CUDA generator's Philox seed and offset 16)."""
    if recorded is not None:
        return recorded
    return "cpu" if state.numel() == _cpu_state_bytes() else "cuda"


def restore_generator(
    gen: torch.Generator, state: torch.Tensor, recorded: str | None, fallback_seed: int
) -> str | None:
    """Set ``gen`` to a checkpoint's ``state`` when it came from a generator of ``gen``'s
    device type; otherwise seed ``gen`` with ``fallback_seed`` and return the state's device
    type (a CUDA generator's state cannot set a CPU generator, nor the reverse: torch raised
    ``Expected a CPUGeneratorImplState of size 5056 ... found 16``)."""
    saved = state_device(state, recorded)
    if saved == torch.device(gen.device).type:
        gen.set_state(state)
        return None
    gen.manual_seed(fallback_seed)
    return saved
