"""MoCo v2 (Chen et al. 2020; facebookresearch/moco main_moco.py with --mlp --cos): key encoder
as EMA of the query encoder, MLP head (Linear-ReLU-Linear, no BN), queue of keys, shuffle-BN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.views import ViewSpec, ssl_view
from selfsup.fields import AT_LEAST_1, EMA, POSITIVE, TEMP, setting
from selfsup.heads import mlp
from selfsup.losses import infonce_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.teacher import EMATeacher
from selfsup.parts.ema import cosine_momentum

QUEUE = "keys in the queue, e.g. 4096 for CIFAR-size data"
SPLITS = "simulated GPUs for shuffle-BN, e.g. 8; 1: whole-batch BN"


@dataclass
class MoCoConfig(MethodConfig):
    """MoCo v2 (Chen et al. 2020; facebookresearch/moco main_moco.py with --mlp --cos): key
    encoder as EMA of the query encoder, MLP head (Linear-ReLU-Linear, no BN), queue of keys."""

    name: str = "moco"
    # --mlp head: hidden 2048, --moco-dim 128
    projector: str = setting("2048-128", mlp=True, arch=True)
    # --moco-k (ImageNet); 4096 for CIFAR-size data
    queue_size: int = setting(65536, valid=AT_LEAST_1, what=QUEUE, arch=True)
    # --moco-m; the EMA momentum, raised to momentum_final by cosine
    momentum: float = setting(
        0.999, valid=EMA, what="an EMA momentum (0 copies the student, 1 freezes the teacher)"
    )
    # = momentum: the official constant momentum
    momentum_final: float = setting(0.999, valid=EMA, what="an EMA momentum")
    temperature: float = setting(0.2, valid=POSITIVE, what=TEMP)  # --moco-t
    symmetric: bool = False  # both views as query (MoCo's CIFAR demo); official v2 is not
    # shuffle-BN (parts/shuffle_bn.py): the key batch shuffled, BN per 1/bn_splits of the batch
    # (facebookresearch/moco colab/moco_cifar10_demo.ipynb: --bn-splits 8)
    shuffle_bn: bool = True
    bn_splits: int = setting(8, valid=AT_LEAST_1, what=SPLITS)


def moco_views(
    size: int, mean: Sequence[float], std: Sequence[float], scale: Sequence[float]
) -> list[ViewSpec]:
    """MoCo v2 (facebookresearch/moco main_moco.py ``--aug-plus``): crop scale (0.2, 1),
    ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` p 0.8, grayscale p 0.2, blur p 0.5; two identical
    views (query, key)."""
    spec = ssl_view(size, mean, std, scale=scale, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5)
    return [spec, spec]


class MoCo(EMATeacher):
    """MoCo v2 (facebookresearch/moco builder.py): query = normalised student embedding of one
    view, key = teacher embedding of the other, InfoNCE against the queue; ``symmetric`` also
    swaps the views and averages (both keys are enqueued)."""

    def __init__(self, backbone: nn.Module, view_specs: list[ViewSpec], cfg: MoCoConfig) -> None:
        projector = mlp(backbone.num_features, cfg.projector, last_bias=True, batch_norm=False)
        dim = int(cfg.projector.split("-")[-1])
        super().__init__(backbone, view_specs, projector, queue_size=cfg.queue_size, dim=dim)
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


# crop scale: facebookresearch/moco main_moco.py --aug-plus
@register("moco", MoCoConfig, crop_scale=(0.2, 1.0), views=pair(moco_views))
def build_moco(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    return MoCo(backbone, specs, cfg.method)
