"""Methods with an EMA teacher and a queue of its embeddings: MoCo v2 and ISD.

Both follow the same step: the student embeds view 0 (ISD: through an extra predictor), the
teacher (an EMA copy of backbone + projector, no gradients) embeds view 1, the loss compares
them through the queue, and after the optimizer step the teacher moves toward the student and
its keys enter the queue (:meth:`on_step_end`; the official code does both inside ``forward``,
before the next step's keys, which is the same order).

Shuffle-BN (``method.shuffle_bn``, on by default as in the official code): BN per
``1/method.bn_splits`` of the batch in both encoders and the key batch shuffled, in one process
as MoCo's CIFAR demo simulates it, across processes under torchrun (parts/shuffle_bn.py). The
teacher keeps its own BN statistics (the official EMA moves parameters only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import ISDConfig, MoCoConfig
from selfsup.data.views import ViewSpec
from selfsup.errors import ConfigError
from selfsup.heads import mlp
from selfsup.losses import infonce_loss, isd_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.parts.ema import cosine_momentum, ema_update_, frozen_copy
from selfsup.parts.queue import FeatureQueue
from selfsup.parts.shuffle_bn import convert_split_batchnorm, shuffled_forward, splits_per_process


class _Momentum(Method):
    """Student backbone + projector, their EMA teacher, and a queue of teacher embeddings."""

    def __init__(
        self,
        backbone: nn.Module,
        view_specs: list[ViewSpec],
        projector: nn.Module,
        queue_size: int,
        dim: int,
    ) -> None:
        """The teacher is copied from backbone + projector; a subclass adds its heads, then
        calls :meth:`use_shuffle_bn`."""
        super().__init__(backbone, view_specs)
        if len(view_specs) != 2:
            raise ValueError(f"takes exactly two views, got {len(view_specs)}")
        self.projector = projector
        self.teacher = frozen_copy(self.student())
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
    def teacher_keys(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) L2-normalised teacher embeddings, kept for the queue."""
        k = shuffled_forward(self.teacher, x) if self.shuffle_bn else self.teacher(x)
        k = F.normalize(k, dim=1)
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


class MoCo(_Momentum):
    """MoCo v2 (facebookresearch/moco builder.py): query = normalised student embedding of one
    view, key = teacher embedding of the other, InfoNCE against the queue; ``symmetric`` also
    swaps the views and averages (both keys are enqueued)."""

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: MoCoConfig) -> None:
        projector = mlp(backbone.num_features, cfg.projector, last_bias=True, batch_norm=False)
        dim = int(cfg.projector.split("-")[-1])
        super().__init__(backbone, view_specs, projector, cfg.queue_size, dim)
        self.cfg = cfg
        self.use_shuffle_bn(cfg.shuffle_bn, cfg.bn_splits)

    def momentum_at(self, step: int, total_steps: int) -> float:
        return cosine_momentum(step, total_steps, self.cfg.momentum, self.cfg.momentum_final)

    def _direction(self, x_q: torch.Tensor, x_k: torch.Tensor):
        """(loss, parts, backbone features of x_q)."""
        feats = self.backbone(x_q)
        q = F.normalize(self.projector(feats), dim=1)
        k = self.teacher_keys(x_k)
        return (*infonce_loss(q, k, self.queue.queue, temperature=self.cfg.temperature), feats)

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        loss, parts, feats = self._direction(views[0], views[1])
        if self.cfg.symmetric:
            loss_b, parts_b, _ = self._direction(views[1], views[0])
            loss = (loss + loss_b) / 2
            parts = {n: (v + parts_b[n]) / 2 for n, v in parts.items()}
        return StepOutput(loss, parts, feats)


class ISD(_Momentum):
    """ISD as UMBCvision/ISD train_isd_plus.py runs it with ``--weak_strong`` (not the older
    train_isd.py, which has no projector, one temperature and strong views on both sides): the
    student embeds the strong view 0 through projector and predictor (``get_mlp``), the teacher
    (EMA of backbone + projector, constant ``momentum``) the weak crop + flip view 1; the loss is
    KL(teacher || student) between their similarity distributions over the queue of teacher keys,
    at ``--temp_t`` / ``--temp_s`` (:func:`selfsup.losses.isd_loss`). As in the official code, the
    predictor is not part of the EMA."""

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: ISDConfig) -> None:
        feat = backbone.num_features
        official = f"{2 * feat}-{max(1, feat // 4)}"  # get_mlp(feat, 2 feat, feat // 4)
        proj_spec = official if cfg.projector == "auto" else cfg.projector
        dim = int(proj_spec.split("-")[-1])
        pred_spec = f"{2 * feat}-{dim}" if cfg.predictor == "auto" else cfg.predictor
        projector = mlp(feat, proj_spec, last_bias=True)
        super().__init__(backbone, view_specs, projector, cfg.queue_size, dim)
        self.predictor = mlp(dim, pred_spec, last_bias=True)
        if int(pred_spec.split("-")[-1]) != dim:
            raise ConfigError(
                f"method.predictor {pred_spec!r} must end in the projection dim {dim}"
            )
        self.cfg = cfg
        self.use_shuffle_bn(cfg.shuffle_bn, cfg.bn_splits)

    def momentum_at(self, step: int, total_steps: int) -> float:
        return self.cfg.momentum

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        feats = self.backbone(views[0])
        q = self.predictor(self.projector(feats))
        k = self.teacher_keys(views[1])
        loss, parts = isd_loss(
            q,
            k,
            self.queue.queue,
            student_temp=self.cfg.student_temp,
            teacher_temp=self.cfg.teacher_temp,
        )
        return StepOutput(loss, parts, feats)
