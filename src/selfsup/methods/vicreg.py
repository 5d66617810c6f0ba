"""VICReg (Bardes et al., ICLR 2022): a :class:`~selfsup.methods.siamese.Siamese` with an
expander (Linear-BN-ReLU blocks, a last Linear without bias) and the variance-invariance-
covariance loss, on BYOL's asymmetric pair of views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.data.recipes import byol_pair
from selfsup.data.views import ViewSpec
from selfsup.fields import NON_NEGATIVE, setting
from selfsup.heads import mlp
from selfsup.losses import vicreg_loss
from selfsup.methods.base import Method
from selfsup.methods.registry import MethodConfig, pair, register
from selfsup.methods.siamese import Siamese


@dataclass
class VICRegConfig(MethodConfig):
    """VICReg (Bardes et al., ICLR 2022), defaults of facebookresearch/vicreg main_vicreg.py."""

    name: str = "vicreg"
    # hidden-...-output widths after the backbone features
    projector: str = setting("8192-8192-8192", mlp=True, arch=True)
    sim_weight: float = setting(25.0, valid=NON_NEGATIVE, what="a loss weight")  # --sim-coeff
    var_weight: float = setting(25.0, valid=NON_NEGATIVE, what="a loss weight")  # --std-coeff
    cov_weight: float = setting(1.0, valid=NON_NEGATIVE, what="a loss weight")  # --cov-coeff


# crop scale: facebookresearch/vicreg augmentations.py (RandomResizedCrop's default)
@register("vicreg", VICRegConfig, crop_scale=(0.08, 1.0), views=pair(byol_pair))
def build_vicreg(cfg: Any, backbone: nn.Module, specs: list[ViewSpec]) -> Method:
    m = cfg.method
    projector = mlp(backbone.num_features, m.projector, last_bias=False)
    weights = dict(sim_weight=m.sim_weight, var_weight=m.var_weight, cov_weight=m.cov_weight)
    return Siamese(backbone, specs, projector, vicreg_loss, **weights)
