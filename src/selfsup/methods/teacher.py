"""The shared base of methods with an EMA teacher, with or without a queue of its embeddings:
MoCo v2 and ISD (with a queue), BYOL (without).

The student is backbone + projector (a subclass may add a predictor, outside the EMA); the
teacher is a frozen copy of the student that moves toward it after every optimizer step
(:meth:`EMATeacher.on_step_end`; the official code does it inside ``forward``, before the next
step's keys, which is the same order). With a queue, the teacher's L2-normalised keys of each
step enter it after the step too.

Shuffle-BN (``use_shuffle_bn``; MoCo and ISD, on by default as in their official code): BN per
``1/bn_splits`` of the batch in both encoders and the key batch shuffled, in one process as
MoCo's CIFAR demo simulates it, across processes under torchrun (parts/shuffle_bn.py). The
teacher keeps its own BN statistics (the official EMA moves parameters only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.views import ViewSpec
from selfsup.methods.base import Method
from selfsup.parts.ema import ema_update_, frozen_copy
from selfsup.parts.queue import FeatureQueue
from selfsup.parts.shuffle_bn import convert_split_batchnorm, shuffled_forward, splits_per_process


class EMATeacher(Method):
    """Student backbone + projector, their EMA teacher and, when ``queue_size`` > 0, a queue of
    the teacher's normalised embeddings (``dim`` wide)."""

    def __init__(
        self,
        backbone: nn.Module,
        view_specs: list[ViewSpec],
        projector: nn.Module,
        *,
        queue_size: int = 0,
        dim: int = 0,
    ) -> None:
        """The teacher is copied from backbone + projector; a subclass adds its heads, then
        calls :meth:`use_shuffle_bn` when it shuffles."""
        super().__init__(backbone, view_specs)
        if len(view_specs) != 2:
            raise ValueError(f"takes exactly two views, got {len(view_specs)}")
        self.projector = projector
        self.teacher = frozen_copy(self.student())
        if queue_size:
            self.queue = FeatureQueue(queue_size, dim)
        self._keys: list[torch.Tensor] = []
        self.shuffle_bn = False

    def use_shuffle_bn(self, enabled: bool, splits: int) -> None:
        """Split BN in every encoder and shuffled keys; SyncBatchNorm would undo it under DDP."""
        self.shuffle_bn = enabled
        self.sync_batchnorm = not enabled
        if enabled:
            convert_split_batchnorm(self, splits_per_process(splits))

    def student(self) -> nn.Sequential:
        """The student encoder whose EMA the teacher is (backbone then projector)."""
        return nn.Sequential(self.backbone, self.projector)

    @torch.no_grad()
    def teacher_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) teacher embeddings (no gradient), through shuffle-BN when on."""
        return shuffled_forward(self.teacher, x) if self.shuffle_bn else self.teacher(x)

    @torch.no_grad()
    def teacher_keys(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) L2-normalised teacher embeddings, kept for the queue."""
        k = F.normalize(self.teacher_embed(x), dim=1)
        self._keys.append(k.float())
        return k

    def momentum_at(self, step: int, total_steps: int) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        m = self.momentum_at(step, total_steps)
        ema_update_(self.teacher, self.student(), m, buffers="keep")
        for keys in self._keys:
            self.queue.enqueue(keys)
        self._keys = []
