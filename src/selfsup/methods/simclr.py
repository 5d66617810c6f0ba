"""SimCLR (Chen et al., ICML 2020): a :class:`~selfsup.methods.siamese.Siamese` with an MLP
projector and NT-Xent, on two views of the strength-1 colour distortion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.data.views import ViewSpec, ssl_view
from selfsup.fields import POSITIVE, TEMP, setting
from selfsup.heads import mlp
from selfsup.losses import nt_xent_loss
from selfsup.methods.base import Method
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.siamese import Siamese


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR (Chen et al., ICML 2020): MLP projector (Linear-BN-ReLU-Linear, SimCLR v2's BN) and
    NT-Xent. Temperature 0.2 is solo-learn's CIFAR value (the paper's ImageNet best is 0.1)."""

    name: str = "simclr"
    projector: str = setting("2048-128", mlp=True, arch=True)
    temperature: float = setting(0.2, valid=POSITIVE, what=TEMP)


def simclr_views(
    size: int, mean: Sequence[float], std: Sequence[float], scale: Sequence[float]
) -> list[ViewSpec]:
    """SimCLR (Chen et al. 2020, appendix A): colour distortion of strength 1, i.e.
    ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` p 0.8, grayscale p 0.2, blur p 0.5; two identical
    views."""
    spec = ssl_view(size, mean, std, scale=scale, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5)
    return [spec, spec]


# crop scale: SimCLR appendix A (RandomResizedCrop's default)
@register("simclr", SimCLRConfig, crop_scale=(0.08, 1.0), views=pair(simclr_views))
def build_simclr(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=True)
    return Siamese(backbone, specs, projector, nt_xent_loss, temperature=m.temperature)
