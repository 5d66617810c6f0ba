"""What stops a run, and what it keeps when it stops: a non-finite loss or weights
(:class:`TrainingDiverged`, with advice), SIGINT / SIGTERM (:class:`TrainingStopped`, at a step
boundary with a checkpoint), and the copies that let a skipped step leave no trace."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.distributed import any_rank, synced_buffer_names
from selfsup.errors import CheckpointError, SelfsupError

ADVICE = "Lower train.lr, set train.grad_clip (e.g. 1.0) or use train.precision=fp32."


class TrainingDiverged(SelfsupError):
    """The loss became NaN or infinite."""


class TrainingStopped(SelfsupError):
    """SIGINT or SIGTERM arrived: a checkpoint was written and the run can be resumed."""


class StopSignals:
    """Turn SIGINT / SIGTERM (Ctrl-C, a scheduler's preemption) into a flag the loop reads
    after each step, so the run stops at a step boundary with a checkpoint. Installed only in
    the main thread; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def agreed(self) -> bool:
        """Whether to stop now: this process got a signal or, under torchrun, any rank did
        (a collective every rank must reach at the same step)."""
        return any_rank(self.received is not None)

    @property
    def name(self) -> str:
        """The signal this process got, or the other rank's, as the stop message says."""
        return self.received or "a signal to another rank"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def kept(ckpt_path: Path) -> str:
    """What a diverged run keeps: every checkpoint written holds finite weights
    (:func:`check_weights`), so the one there, if any, is good."""
    if ckpt_path.exists():
        return f"the last good checkpoint is {ckpt_path}"
    return "no checkpoint was written yet (train.checkpoint_every=0: only at epoch ends)"


def nonfinite_tensors(method: nn.Module) -> tuple[list[str], int]:
    """The names of ``method``'s floating-point state tensors holding NaN or inf (one host
    sync), and how many floating-point tensors it has."""
    state = {k: t for k, t in method.state_dict().items() if t.is_floating_point()}
    if not state:
        return [], 0
    finite = torch.stack([torch.isfinite(t).all() for t in state.values()]).tolist()
    return [k for k, ok in zip(state, finite, strict=True) if not ok], len(state)


def check_weights(method: nn.Module, step: int, epoch: int, ckpt_path: Path) -> None:
    """Stop before a checkpoint of weights holding NaN / inf replaces a good one (a finite
    loss can still step to inf weights; later steps are then skipped with skip_nonfinite)."""
    bad, total = nonfinite_tensors(method)
    if any_rank(bool(bad)):
        raise TrainingDiverged(
            f"the model's weights hold NaN / inf at step {step} (epoch {epoch}): {len(bad)} of "
            f"{total} tensors, e.g. {', '.join(bad[:3]) or 'on another process'}; not saved, "
            f"{kept(ckpt_path)}. {ADVICE}"
        )


def check_starting_weights(method: nn.Module, source: Path | dict[str, Any]) -> None:
    """Refuse to train from weights that already hold NaN / inf (a ``backbone.weights`` file,
    the checkpoint resumed from): no learning rate would help. ``source``: the checkpoint
    path, or the identity (config) naming the weights file."""
    bad, total = nonfinite_tensors(method)
    if not bad:
        return
    if isinstance(source, Path):
        where = f"the checkpoint {source}"
    else:
        weights = (source.get("backbone") or {}).get("weights")
        where = f"backbone.weights={weights}" if weights else "the initialisation"
    raise CheckpointError(
        f"the starting weights hold NaN / inf before any training step: {len(bad)} of {total} "
        f"tensors, e.g. {', '.join(bad[:3])}, from {where}. Use weights with finite values "
        "(or none: random init)"
    )


def snapshot_buffers(method: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the buffers a forward pass may change (BatchNorm running statistics, ...): a
    skipped step must leave no trace, and a NaN batch would make them NaN for good. Buffers
    kept by collectives in ``on_step_end`` (queue, centre), which a skipped step does not
    reach, are not copied."""
    synced = set(synced_buffer_names(method))
    return {k: b.detach().clone() for k, b in method.named_buffers() if k not in synced}


def restore_buffers(method: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    buffers = dict(method.named_buffers())
    with torch.no_grad():
        for name, value in saved.items():
            buffers[name].copy_(value)
