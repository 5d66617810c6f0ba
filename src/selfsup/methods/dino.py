"""DINO (Caron et al. 2021; facebookresearch/dino main_dino.py) and DINO-Twins.

Student = backbone + :class:`~selfsup.heads.DINOHead`; teacher = its EMA (cosine momentum
``momentum_teacher`` -> 1), fed the two global crops only; loss = :func:`selfsup.losses.dino_loss`
with the teacher centred (momentum ``center_momentum``) and sharpened (temperature warm-up
``warmup_teacher_temp`` -> ``teacher_temp``); the last layer is frozen for the first
``freeze_last_layer`` epochs. Crops of equal size go through the backbone together, as the
official ``MultiCropWrapper`` does.

DINO-Twins adds a Barlow Twins term on a separate projector of the student backbone features,
averaged over every pair of distinct student crops (Barlow Twins is symmetric in its two
arguments, so ordered and unordered pairs give the same mean). Its weight, when not given, is set
at the first step to half the ratio of the DINO loss to the Barlow Twins loss, so the term starts
at half of DINO's, and is kept in a buffer (checkpointed, so a resumed run keeps it).
``center=False`` / ``sharpen=False`` switch off DINO's own anti-collapse parts, to ask whether the
Barlow Twins term alone prevents collapse.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from selfsup.config import DINOConfig, DINOTwinsConfig
from selfsup.data.views import ViewSpec
from selfsup.distributed import mark_synced, mean_across_ranks
from selfsup.heads import DINOHead, mlp
from selfsup.losses import barlow_twins_loss, dino_center_update, dino_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.parts.ema import cosine_momentum, ema_update_, frozen_copy
from selfsup.parts.schedules import linear_warmup

N_GLOBAL = 2


def run_by_size(net: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """``net`` on each view, with consecutive views of one size batched together; returns the
    per-view outputs in order."""
    out: list[torch.Tensor] = []
    for _, group in itertools.groupby(views, key=lambda v: tuple(v.shape[-2:])):
        group = list(group)
        out += net(torch.cat(group)).chunk(len(group))
    return out


class DINO(Method):
    # facebookresearch/dino eval_knn.py / eval_linear.py: --checkpoint_key teacher (default)
    official_eval = "teacher"

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: DINOConfig) -> None:
        super().__init__(backbone, view_specs)
        if len(view_specs) < N_GLOBAL:
            raise ValueError(f"DINO needs {N_GLOBAL} global views first, got {len(view_specs)}")
        self.cfg = cfg
        self.head = DINOHead(
            backbone.num_features,
            cfg.out_dim,
            hidden_dim=cfg.hidden_dim,
            bottleneck_dim=cfg.bottleneck_dim,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher = frozen_copy(self.student())
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        mark_synced(self, "center")  # updated from the global batch's mean on every rank
        self.twins = isinstance(cfg, DINOTwinsConfig)
        if self.twins:
            self.bt_projector = mlp(
                backbone.num_features, cfg.bt_projector, hidden_bias=False, last_bias=False
            )
            weight = -1.0 if cfg.bt_weight is None else cfg.bt_weight  # < 0: set at step 0
            self.register_buffer("bt_weight", torch.tensor(weight))
            mark_synced(self, "bt_weight")  # calibrated from the mean over ranks
        self._calibrate = self.twins and cfg.bt_weight is None  # until the first step has run
        self._teacher_temp = cfg.teacher_temp
        self._frozen_last_layer = False
        self._teacher_out: torch.Tensor | None = None

    def student(self) -> nn.Sequential:
        return nn.Sequential(self.backbone, self.head)

    def before_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        c = self.cfg
        warm = round(c.warmup_teacher_temp_epochs * steps_per_epoch)
        temp = linear_warmup(step, warm, c.warmup_teacher_temp, c.teacher_temp)
        self._teacher_temp = temp if c.sharpen else c.student_temp
        self._frozen_last_layer = step < round(c.freeze_last_layer * steps_per_epoch)

    def after_backward(self) -> None:
        if self._frozen_last_layer:  # cancel_gradients_last_layer of the official utils.py
            for p in self.head.last_layer.parameters():
                p.grad = None

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        feats = run_by_size(self.backbone, views)
        student = [self.head(f) for f in feats]
        with torch.no_grad():
            teacher = run_by_size(self.teacher, views[:N_GLOBAL])
        self._teacher_out = torch.cat(teacher).float()
        loss, parts = dino_loss(
            student,
            teacher,
            self.center,
            student_temp=self.cfg.student_temp,
            teacher_temp=self._teacher_temp,
        )
        temp = torch.full((), self._teacher_temp, device=loss.device)  # logged with the loss
        parts = {**parts, "teacher_temp": temp}
        if self.twins:
            loss, parts = self._add_twins(loss, parts, feats)
        return StepOutput(loss, parts, feats[0])

    def _add_twins(self, loss: torch.Tensor, parts: dict, feats: list[torch.Tensor]):
        z = [self.bt_projector(f) for f in feats]
        pairs = list(itertools.combinations(range(len(z)), 2))
        bt = sum(barlow_twins_loss(z[i], z[j], lambd=self.cfg.bt_lambd)[0] for i, j in pairs)
        bt = bt / len(pairs)
        if self._calibrate:  # once per process (a resumed run keeps its weight), no host sync
            with torch.no_grad():
                first = mean_across_ranks(0.5 * loss.detach() / bt.detach().clamp(min=1e-12))
                self.bt_weight.copy_(torch.where(self.bt_weight < 0, first, self.bt_weight))
            self._calibrate = False
        parts = {**parts, "barlow_twins": bt.detach(), "bt_weight": self.bt_weight.clone()}
        return loss + self.bt_weight * bt, parts

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(step, total_steps, self.cfg.momentum_teacher, 1.0)
        ema_update_(self.teacher, self.student(), m, buffers="keep")  # its own BN statistics
        if self.cfg.center and self._teacher_out is not None:
            self.center.copy_(
                dino_center_update(self.center, self._teacher_out, self.cfg.center_momentum)
            )
        self._teacher_out = None
