"""ISD (Tejankar et al., ICCV 2021) as UMBCvision/ISD train_isd_plus.py runs it with
``--weak_strong``: an EMA teacher with a queue of its keys, a student with projector and
predictor, and the KL divergence between their similarities to the queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup.data.recipes import crop_flip_view
from selfsup.data.views import ViewSpec
from selfsup.errors import ConfigError
from selfsup.fields import AT_LEAST_1, EMA, POSITIVE, TEMP, setting
from selfsup.heads import mlp
from selfsup.losses import isd_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.moco import QUEUE, SPLITS, moco_views
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.teacher import EMATeacher


@dataclass
class ISDConfig(MethodConfig):
    """ISD (Tejankar et al., ICCV 2021) as UMBCvision/ISD train_isd_plus.py runs it (its README's
    ResNet-50 command, with ``--weak_strong``): an MLP projector on student and teacher, an MLP
    predictor on the student only, two temperatures; defaults are that file's. The older
    train_isd.py (the README's ResNet-18 command) is not followed: it has no projector, a
    feature-width Linear-BN-ReLU-Linear predictor, one ``--temp`` 0.02 for both sides, momentum
    0.999 and the same strong augmentation for both views."""

    name: str = "isd"
    # auto: get_mlp(F, 2F, F // 4) = Linear-BN-ReLU-Linear, train_isd_plus.py's encoder fc (so the
    # teacher, an EMA of the student encoder, has it too)
    projector: str = setting("auto", mlp="auto", arch=True)
    # auto: get_mlp(F // 4, 2F, F // 4), train_isd_plus.py's predict_q
    predictor: str = setting("auto", mlp="auto", arch=True)
    # --queue_size (our CIFAR / STL-10 configs use 16384)
    queue_size: int = setting(128000, valid=AT_LEAST_1, what=QUEUE, arch=True)
    # --momentum of the EMA teacher
    momentum: float = setting(
        0.99, valid=EMA, what="an EMA momentum (0 copies the student, 1 freezes the teacher)"
    )
    student_temp: float = setting(0.1, valid=POSITIVE, what=TEMP)  # --temp_s
    teacher_temp: float = setting(0.01, valid=POSITIVE, what=TEMP)  # --temp_t
    # shuffle-BN as MoCo's (parts/shuffle_bn.py); train_isd_plus.py shuffles the teacher's
    # input (get_shuffle_ids) with BN per GPU
    shuffle_bn: bool = True
    bn_splits: int = setting(8, valid=AT_LEAST_1, what=SPLITS)


def isd_views(
    size: int, mean: Sequence[float], std: Sequence[float], scale: Sequence[float]
) -> list[ViewSpec]:
    """ISD (UMBCvision/ISD train_isd_plus.py ``--weak_strong``; train_isd.py has no such option
    and gives both sides the strong view): the student's strong view is MoCo v2's
    (``augmentation_strong``), the teacher's weak view is
    :func:`~selfsup.data.recipes.crop_flip_view` (``augmentation_weak``: crop + flip), both at
    the same crop scale (official 0.2-1). Returns [strong (student), weak (teacher)], as its
    ``TwoCropsTransform`` returns [q, k]."""
    return [moco_views(size, mean, std, scale)[0], crop_flip_view(size, mean, std, scale)]


class ISD(EMATeacher):
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
        super().__init__(backbone, view_specs, projector, queue_size=cfg.queue_size, dim=dim)
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


# crop scale: UMBCvision/ISD train_isd_plus.py (0.2-1, as MoCo v2)
@register("isd", ISDConfig, crop_scale=(0.2, 1.0), views=pair(isd_views))
def build_isd(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    return ISD(backbone, specs, cfg.method)
