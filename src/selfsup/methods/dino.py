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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup.data.recipes import byol_pair, small_crop_side
from selfsup.data.views import ViewSpec, ssl_view
from selfsup.distributed import mark_synced, mean_across_ranks
from selfsup.fields import AT_LEAST_1, EMA, NON_NEGATIVE, POSITIVE, SIDE, TEMP, setting
from selfsup.heads import DINOHead, mlp
from selfsup.losses import barlow_twins_loss, dino_center_update, dino_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.registry import MethodConfig, register
from selfsup.parts.ema import cosine_momentum, ema_update_, frozen_copy
from selfsup.parts.schedules import linear_warmup


@dataclass
class DINOConfig(MethodConfig):
    """DINO (Caron et al., ICCV 2021), defaults of facebookresearch/dino main_dino.py (the
    teacher temperature warm-up 0.04 -> 0.07 is the README's advice for longer runs)."""

    name: str = "dino"
    # --out_dim; 4096 for CIFAR-size data (solo-learn)
    out_dim: int = setting(65536, valid=AT_LEAST_1, what="width", arch=True)
    hidden_dim: int = setting(2048, valid=AT_LEAST_1, what="width", arch=True)
    bottleneck_dim: int = setting(256, valid=AT_LEAST_1, what="width", arch=True)
    # --norm_last_layer: weight-normalised last layer, g fixed to 1
    norm_last_layer: bool = setting(True, arch=True)
    student_temp: float = setting(0.1, valid=POSITIVE, what=TEMP)
    # --teacher_temp after the warm-up
    teacher_temp: float = setting(0.07, valid=POSITIVE, what=TEMP)
    # --warmup_teacher_temp
    warmup_teacher_temp: float = setting(0.04, valid=POSITIVE, what=TEMP)
    # --warmup_teacher_temp_epochs
    warmup_teacher_temp_epochs: float = setting(
        30.0, valid=NON_NEGATIVE, what="epochs; 0 turns the warm-up off"
    )
    # --momentum_teacher, cosine to 1 over training
    momentum_teacher: float = setting(0.996, valid=EMA, what="an EMA momentum")
    center_momentum: float = setting(0.9, valid=EMA, what="an EMA momentum")
    # --freeze_last_layer: epochs with a frozen last layer
    freeze_last_layer: float = setting(1.0, valid=NON_NEGATIVE, what="epochs")
    # --local_crops_number (the paper's 2 x 224 + 6 x 96 setting)
    local_crops: int = setting(
        6, valid=NON_NEGATIVE, what="local crops per image; 0 turns multi-crop off"
    )
    # local crop side; None: 96/224 of the global size, as main_dino.py's 96 beside 224
    # (data.recipes.small_crop_side)
    local_size: int | None = setting(
        None, valid=SIDE, what="local crop side; null: about 96/224 of the global size"
    )
    # --local_crops_scale; None: (0.05, 0.4) for ViTs, (0.05, 0.14) for ResNets (dino_scales)
    local_scale: list[float] | None = setting(
        None, scale="null takes the recipe's (0.05, 0.14) on a ResNet"
    )
    center: bool = True  # False: no centring of the teacher output (collapse ablation)
    sharpen: bool = True  # False: teacher temperature = student temperature (ablation)


DINO_GLOBAL_SCALE = (0.4, 1.0)  # facebookresearch/dino --global_crops_scale default (ViTs)
DINO_LOCAL_SCALE = (0.05, 0.4)  # facebookresearch/dino --local_crops_scale default (ViTs)
# facebookresearch/dino README.md, "ResNet-50 and other convnets trainings": a ResNet trains
# with --global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14
DINO_RESNET_SCALES = ((0.14, 1.0), (0.05, 0.14))


def dino_scales(backbone: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """DINO's own (global, local) crop scales for ``backbone``: on a convnet the official
    README's ResNet scales, on a ViT the ``main_dino.py`` defaults. (Every other method's
    default scale is part of its registration.)"""
    if not backbone.startswith("vit"):
        return DINO_RESNET_SCALES
    return DINO_GLOBAL_SCALE, DINO_LOCAL_SCALE


def multi_crop_views(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: Sequence[float],
    *,
    local_crops: int,
    local_size: int,
    local_scale: Sequence[float],
) -> list[ViewSpec]:
    """DINO's multi-crop (facebookresearch/dino main_dino.py ``DataAugmentationDINO``): two
    global crops as BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0.0 / 0.2) and
    ``local_crops`` small crops of ``local_scale`` with blur p 0.5. Globals come first."""
    globals_ = byol_pair(size, mean, std, scale)
    local = ssl_view(local_size, mean, std, scale=local_scale, blur_p=0.5)
    return globals_ + [local] * local_crops


def dino_views(cfg: Any, size: int, mean: Sequence[float], std: Sequence[float]):
    """DINO's multi-crop: on a convnet the official README's ResNet scales, on a ViT the
    ``main_dino.py`` defaults (unless ``views.crop_scale`` / ``method.local_scale`` are set)."""
    m = cfg.method
    own, own_local = dino_scales(cfg.backbone.name)
    return multi_crop_views(
        size,
        mean,
        std,
        tuple(cfg.views.crop_scale or own),
        local_crops=m.local_crops,
        local_size=m.local_size or small_crop_side(size),
        local_scale=m.local_scale or own_local,
    )


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
        self.twins = hasattr(cfg, "bt_projector")  # methods/dino_twins.py's config
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


@register("dino", DINOConfig, crop_scale=DINO_GLOBAL_SCALE, views=dino_views)
def build_dino(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    """The crop scale registered is the ViTs' ``--global_crops_scale``; on a convnet
    :func:`dino_views` takes the README's ResNet scales."""
    return DINO(backbone, specs, cfg.method)
