"""SimCLR (Chen et al., ICML 2020): a :class:`~selfsup.methods.siamese.Siamese` with an MLP
projector and NT-Xent, on two views of the strength-1 colour distortion; with
``method.local_crops`` > 0, solo-learn's multi-crop SimCLR (small crops beside the two views,
every crop of an image a positive of the others)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup.data.recipes import small_crop_side
from selfsup.data.views import ViewSpec, ssl_view
from selfsup.fields import NON_NEGATIVE, POSITIVE, SIDE, TEMP, setting
from selfsup.heads import mlp
from selfsup.losses import multi_crop_nt_xent_loss, nt_xent_loss
from selfsup.methods.base import Method, StepOutput
from selfsup.methods.registry import METHODS, MethodConfig, register
from selfsup.methods.siamese import Siamese


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR (Chen et al., ICML 2020): MLP projector (Linear-BN-ReLU-Linear, SimCLR v2's BN) and
    NT-Xent. Temperature 0.2 is solo-learn's CIFAR value (the paper's ImageNet best is 0.1)."""

    name: str = "simclr"
    projector: str = setting("2048-128", mlp=True, arch=True)
    temperature: float = setting(0.2, valid=POSITIVE, what=TEMP)
    # small crops per image beside the two views (solo-learn's num_small_crops; its
    # imagenet-100-multicrop recipe: 6 of 96 px beside 2 of 224); 0: the paper's two views
    local_crops: int = setting(
        0, valid=NON_NEGATIVE, what="small crops per image; 0 turns multi-crop off"
    )
    # small crop side; None: 96/224 of the view side (solo-learn's 96 beside 224), in 4-px steps
    local_size: int | None = setting(
        None, valid=SIDE, what="small crop side; null: about 96/224 of the view side"
    )
    # small crops' RandomResizedCrop scale; None: the views' own (solo-learn's symmetric.yaml
    # crops both sizes at 0.08-1)
    local_scale: list[float] | None = setting(None, scale="null takes the views' crop scale")


def simclr_views(
    size: int, mean: Sequence[float], std: Sequence[float], scale: Sequence[float]
) -> list[ViewSpec]:
    """SimCLR (Chen et al. 2020, appendix A): colour distortion of strength 1, i.e.
    ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` p 0.8, grayscale p 0.2, blur p 0.5; two identical
    views."""
    spec = ssl_view(size, mean, std, scale=scale, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5)
    return [spec, spec]


def simclr_crops(cfg: Any, size: int, mean: Sequence[float], std: Sequence[float]):
    """The two views (:func:`simclr_views`) and ``method.local_crops`` small crops, the same
    distortion without blur (solo-learn @9187ea3
    scripts/pretrain/imagenet-100-multicrop/augmentations/symmetric.yaml:36-37,
    ``gaussian_blur.prob: 0.0`` on the small crops)."""
    m = cfg.method
    scale = METHODS.get("simclr").scale(cfg)
    views = simclr_views(size, mean, std, scale)
    small = ssl_view(
        m.local_size or small_crop_side(size),
        mean,
        std,
        scale=m.local_scale or scale,
        jitter=(0.8, 0.8, 0.8, 0.2),
    )
    return views + [small] * m.local_crops


class MultiCropSimCLR(Method):
    """SimCLR on V crops of each image: every crop through the backbone and projector on its own
    (batch-norm statistics per crop, as solo-learn's ``multicrop_forward``), one
    :func:`~selfsup.losses.multi_crop_nt_xent_loss` over all of them."""

    def __init__(
        self, backbone: nn.Module, view_specs: list[ViewSpec], projector: nn.Module, **kw: Any
    ) -> None:
        super().__init__(backbone, view_specs)
        self.projector = projector
        self.loss_kwargs = kw

    def forward(self, views: list[torch.Tensor]) -> StepOutput:
        feats = self.backbone(views[0])
        z = [self.projector(feats)] + [self.projector(self.backbone(v)) for v in views[1:]]
        loss, parts = multi_crop_nt_xent_loss(z, **self.loss_kwargs)
        return StepOutput(loss, parts, feats)


# crop scale: SimCLR appendix A (RandomResizedCrop's default)
@register("simclr", SimCLRConfig, crop_scale=(0.08, 1.0), views=simclr_crops)
def build_simclr(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=True)
    if m.local_crops:
        return MultiCropSimCLR(backbone, specs, projector, temperature=m.temperature)
    return Siamese(backbone, specs, projector, nt_xent_loss, temperature=m.temperature)
