"""Each method's views, as the official recipes describe them, on :func:`ssl_view`.

A recipe takes the global view size, the normalisation statistics and the crop scale (the
method's own default when the config leaves ``views.crop_scale`` unset) and returns the list of
:class:`ViewSpec` the method's ``forward`` expects, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfsup.data.views import ViewSpec, ssl_view, vicreg_views

Stats = Sequence[float]


def simclr_views(size: int, mean: Stats, std: Stats, scale: Sequence[float]) -> list[ViewSpec]:
    """SimCLR (Chen et al. 2020, appendix A): colour distortion of strength 1, i.e.
    ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` p 0.8, grayscale p 0.2, blur p 0.5; two identical
    views."""
    spec = ssl_view(size, mean, std, scale=scale, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5)
    return [spec, spec]


def moco_views(size: int, mean: Stats, std: Stats, scale: Sequence[float]) -> list[ViewSpec]:
    """MoCo v2 (facebookresearch/moco main_moco.py ``--aug-plus``): crop scale (0.2, 1),
    ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` p 0.8, grayscale p 0.2, blur p 0.5; two identical
    views (query, key)."""
    spec = ssl_view(size, mean, std, scale=scale, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5)
    return [spec, spec]


def crop_flip_view(
    size: int, mean: Stats, std: Stats, scale: Sequence[float] = (0.08, 1.0)
) -> ViewSpec:
    """``RandomResizedCrop(size, scale)`` + horizontal flip, no colour ops: ISD's weak teacher
    view, and the supervised training view of solo-learn's linear evaluation and the official
    repos' ``eval_linear.py`` (fine-tuning, the supervised baseline)."""
    return ssl_view(size, mean, std, scale=scale, jitter_p=0.0, grayscale_p=0.0)


def isd_views(size: int, mean: Stats, std: Stats, scale: Sequence[float]) -> list[ViewSpec]:
    """ISD (UMBCvision/ISD train_isd_plus.py ``--weak_strong``; train_isd.py has no such option
    and gives both sides the strong view): the student's strong view is MoCo v2's
    (``augmentation_strong``), the teacher's weak view is :func:`crop_flip_view`
    (``augmentation_weak``: crop + flip), both at the same crop scale (official 0.2-1).
    Returns [strong (student), weak (teacher)], as its ``TwoCropsTransform`` returns [q, k]."""
    return [moco_views(size, mean, std, scale)[0], crop_flip_view(size, mean, std, scale)]


def multi_crop_views(
    size: int,
    mean: Stats,
    std: Stats,
    scale: Sequence[float],
    *,
    local_crops: int,
    local_size: int,
    local_scale: Sequence[float],
) -> list[ViewSpec]:
    """DINO's multi-crop (facebookresearch/dino main_dino.py ``DataAugmentationDINO``): two
    global crops as BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0.0 / 0.2) and
    ``local_crops`` small crops of ``local_scale`` with blur p 0.5. Globals come first."""
    globals_ = vicreg_views(size, mean, std, scale)
    local = ssl_view(local_size, mean, std, scale=local_scale, blur_p=0.5)
    return globals_ + [local] * local_crops


DINO_GLOBAL_SCALE = (0.4, 1.0)  # facebookresearch/dino --global_crops_scale default (ViTs)
DINO_LOCAL_SCALE = (0.05, 0.4)  # facebookresearch/dino --local_crops_scale default (ViTs)
# facebookresearch/dino README.md, "ResNet-50 and other convnets trainings": a ResNet trains
# with --global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14
DINO_RESNET_SCALES = ((0.14, 1.0), (0.05, 0.14))


def dino_scales(backbone: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """DINO's own (global, local) crop scales for ``backbone``: on a convnet the official
    README's ResNet scales, on a ViT the ``main_dino.py`` defaults. (Every other method's
    default scale is part of its registration, :class:`selfsup.methods.MethodSpec`.)"""
    if not backbone.startswith("vit"):
        return DINO_RESNET_SCALES
    return DINO_GLOBAL_SCALE, DINO_LOCAL_SCALE
