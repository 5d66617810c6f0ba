"""The view recipes several methods share, on :func:`~selfsup.data.views.ssl_view`.

A recipe takes the global view size, the normalisation statistics and the crop scale (the
method's own default when the config leaves ``views.crop_scale`` unset) and returns the list of
:class:`ViewSpec` the method's ``forward`` expects, in order. A recipe only one method uses
lives in that method's file (``methods/simclr.py``, ``methods/moco.py``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from selfsup.data.views import ViewSpec, ssl_view

Stats = Sequence[float]


def byol_pair(
    size: int, mean: Stats, std: Stats, scale: Sequence[float] = (0.08, 1.0)
) -> list[ViewSpec]:
    """BYOL's two asymmetric views (Grill et al. 2020, appendix B, table 6), as
    facebookresearch/vicreg ``augmentations.py`` ``TrainTransform`` writes them (also
    facebookresearch/barlowtwins and DINO's global crops): :func:`ssl_view` with
    ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` p 0.8, grayscale p 0.2, Gaussian blur with p 1.0 / 0.1
    and solarization with p 0.0 / 0.2."""
    return [
        ssl_view(size, mean, std, scale=scale, blur_p=1.0, solarize_p=0.0),
        ssl_view(size, mean, std, scale=scale, blur_p=0.1, solarize_p=0.2),
    ]


def crop_flip_view(
    size: int, mean: Stats, std: Stats, scale: Sequence[float] = (0.08, 1.0)
) -> ViewSpec:
    """``RandomResizedCrop(size, scale)`` + horizontal flip, no colour ops: ISD's weak teacher
    view, and the supervised training view of solo-learn's linear evaluation and the official
    repos' ``eval_linear.py`` (fine-tuning, the supervised baseline)."""
    return ssl_view(size, mean, std, scale=scale, jitter_p=0.0, grayscale_p=0.0)


def small_crop_side(size: int) -> int:
    """The side of a multi-crop method's small crops beside views of ``size`` px: 96 beside 224,
    as facebookresearch/dino main_dino.py ``DataAugmentationDINO`` and solo-learn's multi-crop
    recipes crop them, in whole 4-px patches so that a ViT-p4 takes it, at least 8: 12 at 28 px,
    8 at 16."""
    return 4 * max(2, round(size * 96 / 224 / 4))
