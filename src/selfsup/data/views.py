"""Batched random views ("augmentations") for self-supervised learning.

:func:`make_views` turns a uint8 batch (B, C, H, W) into one normalised float32 view per
:class:`ViewSpec`, entirely as batched tensor ops on the images' device (the GPU in training):
no PIL, no per-image Python loop, no host synchronisation on a GPU (eager on the CPU, where it
is free, a few ops read sample indices on the host to skip work). Every sample draws its own random
parameters from the explicit ``torch.Generator`` passed in, with the semantics of the torchvision
transforms that SSL recipes compose (``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandomApply([ColorJitter])``, ``RandomGrayscale``, Gaussian blur, solarization, ``Normalize``);
the ops themselves (:mod:`selfsup.data.view_ops`, re-exported here) match
``torchvision.transforms.v2.functional`` on float images. :func:`ssl_view` is the family every
recipe draws from (the recipes: :mod:`selfsup.data.recipes` and each method's file),
:func:`eval_view` the deterministic evaluation view.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from selfsup.data.host_memory import keep_freed_memory
from selfsup.data.resample import resize_center_crop, resize_weights, resized_crop
from selfsup.data.view_ops import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    clamp_unit,
    color_jitter,
    gaussian_blur,
    gaussian_kernels,
    hflip,
    normalize,
    rgb_to_gray,
    select_samples,
    solarize,
    to_grayscale,
)

__all__ = [
    "ViewSpec",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "clamp_unit",
    "color_jitter",
    "eval_center_crop",
    "eval_view",
    "gaussian_blur",
    "gaussian_kernels",
    "hflip",
    "make_views",
    "normalize",
    "resize_weights",
    "resized_crop",
    "rgb_to_gray",
    "sample_resized_crop_params",
    "solarize",
    "ssl_view",
    "to_grayscale",
]


@dataclass(frozen=True)
class ViewSpec:
    """One random view: the torchvision pipeline ``RandomResizedCrop(size, crop_scale,
    crop_ratio, interpolation, antialias=True) -> RandomHorizontalFlip(hflip_p) ->
    RandomApply([ColorJitter(brightness, contrast, saturation, hue)], jitter_p) ->
    RandomGrayscale(grayscale_p) -> RandomApply([GaussianBlur(blur_kernel, blur_sigma)], blur_p)
    -> RandomSolarize(solarize_threshold, solarize_p) -> Normalize(mean, std)`` on [0, 1] floats,
    with the crop clamped to [0, 1] as on the uint8 / PIL images those recipes transform (a
    bicubic crop of floats overshoots; see :func:`~selfsup.data.view_ops.clamp_unit`).

    An op whose probability (or every jitter strength) is 0 is skipped entirely. ``random_crop``
    False replaces the crop by the whole image, resized to (size, size) (the evaluation view),
    or, with ``center_crop`` < 1, by torchvision's ``Resize(floor(size / center_crop))`` (the
    shorter side, aspect kept) then ``CenterCrop(size)``: 0.875 = 224 / 256 is the ImageNet
    evaluation view (:func:`eval_view`).
    """

    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    random_crop: bool = True
    center_crop: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if not 0 < self.center_crop <= 1 or (self.center_crop < 1 and self.random_crop):
            raise ValueError(
                f"center_crop must be in (0, 1], and 1 with a random crop: {self.center_crop}"
            )
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic': {self.interpolation!r}"
            )
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd and positive, got {self.blur_kernel}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be 0 < lo <= hi, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be 0 < lo <= hi, got {self.crop_ratio}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be 0 < lo <= hi, got {self.blur_sigma}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        probs = (self.hflip_p, self.jitter_p, self.grayscale_p, self.blur_p, self.solarize_p)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"probabilities must lie in [0, 1], got {probs}")


def sample_resized_crop_params(
    height: int,
    width: int,
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` crop boxes (top, left, height, width), each int64 (n,) on the generator's device,
    with the semantics of torchvision ``RandomResizedCrop.get_params`` / ``make_params``.

    Each sample tries ``attempts`` (area fraction ~ U(scale), log aspect ratio ~ U(log ratio)),
    ``w = round(sqrt(area * r))``, ``h = round(sqrt(area / r))``, all at once; it takes its first
    attempt with ``0 < w <= width`` and ``0 < h <= height`` and a uniform position inside the
    image; a sample with none falls back to torchvision's centre crop (the whole image, its aspect
    ratio clamped to ``ratio``).
    """
    dev = generator.device
    u = torch.rand(n, attempts, 2, generator=generator, device=dev)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = (height * width) * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(target * aspect).round()  # round half to even, as Python's round
    h = torch.sqrt(target / aspect).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(1, keepdim=True)  # argmax returns the first maximal index
    w, h = w.gather(1, first).squeeze(1).long(), h.gather(1, first).squeeze(1).long()
    # torchvision's fallback: central crop of the whole image, aspect ratio clamped
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    ok = valid.any(1)
    w = torch.where(ok, w, fw)
    h = torch.where(ok, h, fh)
    pos = torch.rand(2, n, generator=generator, device=dev)
    top = (pos[0] * (height - h + 1)).long().minimum(height - h)  # ~ randint(0, H - h + 1)
    left = (pos[1] * (width - w + 1)).long().minimum(width - w)
    top = torch.where(ok, top, (height - fh) // 2)
    left = torch.where(ok, left, (width - fw) // 2)
    return top, left, h, w


def _stats(values: Sequence[float], channels: int, name: str, device: torch.device) -> Tensor:
    if len(values) not in (1, channels):
        raise ValueError(
            f"{name} has {len(values)} values for {channels}-channel images (need 1 or {channels})"
        )
    return _stats_on(tuple(float(v) for v in values), channels, device)


@functools.lru_cache(maxsize=64)
def _stats_on(values: tuple[float, ...], channels: int, device: torch.device) -> Tensor:
    """The normalisation constants on ``device``, built once per run (a host-to-device copy per
    view per step otherwise); read-only: callers never write into them."""
    return torch.tensor(values, device=device).expand(channels)


ViewParams = dict[str, Tensor | tuple[Tensor, ...] | None]


def _draw(spec: ViewSpec, shape: torch.Size, gen: torch.Generator) -> ViewParams:
    """Every random parameter of one view of a batch of ``shape`` (B, C, H, W), drawn from
    ``gen`` on its device; ``None`` marks an op applied to every sample or to none."""
    bsz, _, h, w = shape
    dev = gen.device

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(bsz, generator=gen, device=dev)

    def coin(p: float) -> Tensor | None:  # per-sample Bernoulli(p); None = all samples
        draw = torch.rand(bsz, generator=gen, device=dev) < p
        return None if p >= 1.0 else draw

    p: ViewParams = {}
    if spec.random_crop:
        p["box"] = sample_resized_crop_params(h, w, bsz, spec.crop_scale, spec.crop_ratio, gen)
    else:
        zero = torch.zeros(bsz, dtype=torch.long, device=dev)
        p["box"] = (zero, zero, torch.full_like(zero, h), torch.full_like(zero, w))
    p["flip"] = torch.rand(bsz, generator=gen, device=dev) < spec.hflip_p if spec.hflip_p else None
    if _jitters(spec):
        p["jitter"] = coin(spec.jitter_p)
        strengths = (spec.brightness, spec.contrast, spec.saturation)
        p["factors"] = torch.stack(
            [uniform(max(0.0, 1.0 - v), 1.0 + v) for v in strengths]
            + [uniform(-spec.hue, spec.hue)],
            dim=1,
        )
        p["order"] = torch.rand(bsz, 4, generator=gen, device=dev).argsort(1)  # randperm(4)
    if spec.grayscale_p > 0:
        p["gray"] = coin(spec.grayscale_p)
    if spec.blur_p > 0:
        p["blur"] = coin(spec.blur_p)
        p["sigma"] = uniform(*spec.blur_sigma)
    if spec.solarize_p > 0:
        p["solarize"] = coin(spec.solarize_p)
    return p


def _jitters(spec: ViewSpec) -> bool:
    strengths = (spec.brightness, spec.contrast, spec.saturation, spec.hue)
    return spec.jitter_p > 0 and any(v > 0 for v in strengths)


@dataclass(frozen=True)
class ViewOps:
    """The batched ops a view runs (:mod:`selfsup.data.view_ops`), eager or compiled."""

    resized_crop: Callable[..., Tensor] = resized_crop
    clamp_unit: Callable[[Tensor], Tensor] = clamp_unit
    color_jitter: Callable[..., Tensor] = color_jitter
    to_grayscale: Callable[..., Tensor] = to_grayscale
    gaussian_blur: Callable[..., Tensor] = gaussian_blur
    solarize: Callable[..., Tensor] = solarize
    normalize: Callable[..., Tensor] = normalize


EAGER = ViewOps()


@functools.cache
def compiled_ops() -> ViewOps:
    """The ops each fused by ``torch.compile`` (compiled once per shape on first use: tens of
    seconds on a CPU). Op by op rather than the whole view: on a 2-core CPU the per-op graphs
    ran about twice as fast as one graph of the view. The blur stays eager (its grouped
    convolution gained nothing from compilation)."""
    c = functools.partial(torch.compile, dynamic=False)
    return ViewOps(
        resized_crop=c(resized_crop),
        clamp_unit=c(clamp_unit),
        color_jitter=c(color_jitter),
        to_grayscale=c(to_grayscale),
        solarize=c(solarize),
        normalize=c(normalize),
    )


def resize_short(spec: ViewSpec) -> int:
    """The shorter side a centre-cropped view resizes to: ``floor(size / center_crop)``, timm's
    ``transforms_imagenet_eval`` rule (256 for 224 at 0.875, 128 for 112)."""
    return math.floor(spec.size / spec.center_crop)


def apply_view(
    x: Tensor, spec: ViewSpec, p: ViewParams, mean: Tensor, std: Tensor, ops: ViewOps = EAGER
) -> Tensor:
    """One view of the float batch ``x`` (B, C, H, W) in [0, 1] -> (B, C, size, size), with the
    parameters ``p`` of :func:`_draw`: a pure function of tensors."""
    if spec.center_crop < 1:
        x = resize_center_crop(x, resize_short(spec), spec.size, spec.interpolation)
        x = x if p["flip"] is None else hflip(x, p["flip"])
    else:
        x = ops.resized_crop(x, *p["box"], spec.size, spec.interpolation, flip=p["flip"])
    if spec.interpolation == "bicubic":  # bilinear weights are convex: no overshoot to clamp
        x = ops.clamp_unit(x)
    if _jitters(spec):
        x = ops.color_jitter(x, p["factors"], p["order"], p["jitter"], hue=spec.hue > 0)
    subset = ops is EAGER and x.device.type == "cpu"
    if spec.grayscale_p > 0:
        x = _selected(ops.to_grayscale, x, p["gray"], subset)
    if spec.blur_p > 0:
        x = _selected(ops.gaussian_blur, x, p["blur"], subset, p["sigma"], spec.blur_kernel)
    if spec.solarize_p > 0:
        x = _selected(ops.solarize, x, p["solarize"], subset, spec.solarize_threshold)
    return ops.normalize(x, mean, std)


def _selected(
    op: Callable[..., Tensor], x: Tensor, mask: Tensor | None, subset: bool, *args: object
) -> Tensor:
    """``op(x, *args, mask)``; with ``subset`` (eager on the CPU, where host indices are free)
    the op runs only on the selected samples, written back into ``x`` (a tensor this view made,
    never the caller's). Per-sample tensor arguments (B,) are indexed alongside."""
    if not subset or mask is None:
        return op(x, *args, mask)
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    picked = [a.index_select(0, idx) if isinstance(a, Tensor) else a for a in args]
    return x.index_copy_(0, idx, op(select_samples(x, idx), *picked, None))


def make_views(
    images: Tensor,
    specs: Sequence[ViewSpec],
    generator: torch.Generator,
    *,
    compile: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> list[Tensor]:
    """One normalised float32 view (B, C, spec.size, spec.size) per spec of the uint8 batch
    ``images`` (B, C, H, W), C in {1, 3}, on any device; ``generator`` (on the same device) is
    the only source of randomness, so a seeded generator gives identical views.

    ``shard=(rank, world)``: ``images`` are samples ``rank::world`` of a global batch of
    ``B * world`` (how :class:`~selfsup.train.loop.BatchStream` shards it). The parameters are
    drawn for the whole global batch and this shard's rows kept, so every sample gets the view
    it would get in one process with the same generator state: N processes train as one.

    ``compile=True`` runs the ops through ``torch.compile``, which fuses their element-wise
    passes (several times faster on the CPU; equal to the eager result up to float rounding)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if torch.device(generator.device).type != images.device.type:
        raise ValueError(f"generator is on {generator.device}, images on {images.device}")
    stats = []
    for spec in specs:
        if len(spec.mean) != len(spec.std):
            raise ValueError(f"mean {spec.mean} and std {spec.std} differ in length")
        mean = _stats(spec.mean, channels, "mean", images.device)
        stats.append((mean, _stats(spec.std, channels, "std", images.device)))
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {shard} must be (rank, world) with 0 <= rank < world")
    if images.device.type == "cpu":
        keep_freed_memory()  # reuse warm pages for the big temporaries (see host_memory)
    x = images.float().div_(255.0)  # converted once, shared by every view
    ops = compiled_ops() if compile else EAGER
    whole = torch.Size((x.shape[0] * world, *x.shape[1:]))
    return [
        apply_view(x, spec, _shard(_draw(spec, whole, generator), rank, world), m, s, ops)
        for spec, (m, s) in zip(specs, stats, strict=True)
    ]


def _shard(p: ViewParams, rank: int, world: int) -> ViewParams:
    """Rows ``rank::world`` of every per-sample parameter of a global batch."""
    if world == 1:
        return p

    def rows(v: Tensor | tuple[Tensor, ...] | None) -> Tensor | tuple[Tensor, ...] | None:
        if v is None:
            return None
        if isinstance(v, tuple):
            return tuple(t[rank::world] for t in v)
        return v[rank::world]

    return {k: rows(v) for k, v in p.items()}


def ssl_view(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    scale: Sequence[float] = (0.08, 1.0),
    jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.0,
    solarize_p: float = 0.0,
) -> ViewSpec:
    """The augmentation family every SSL recipe here draws from (SimCLR's, as refined by BYOL):
    ``RandomResizedCrop(size, scale, BICUBIC)``, flip 0.5, ``ColorJitter(*jitter)`` with
    ``jitter_p``, grayscale, Gaussian blur with ``blur_p`` and solarization (threshold 0.5 on
    [0, 1], PIL's 128) with ``solarize_p``.

    The official blur (PIL, sigma ~ U(0.1, 2.0)) is meant for 224-pixel views; here sigma is
    scaled by ``size / 224`` and the kernel is the smallest odd one covering 3 sigma (at least
    3), so that small images (e.g. 32 px: sigma <= 0.29, kernel 3) are not smeared.
    """
    sigma = (0.1 * size / 224, 2.0 * size / 224)
    brightness, contrast, saturation, hue = (float(v) for v in jitter)
    return ViewSpec(
        size=size,
        crop_scale=(float(scale[0]), float(scale[1])),
        interpolation="bicubic",
        hflip_p=0.5,
        jitter_p=jitter_p,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        grayscale_p=grayscale_p,
        blur_p=blur_p,
        blur_sigma=sigma,
        blur_kernel=max(3, 2 * math.ceil(3 * sigma[1]) + 1),
        solarize_p=solarize_p,
        solarize_threshold=0.5,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


# The evaluation view of ImageNet-size images: DINO eval_linear.py / eval_knn.py
# (facebookresearch/dino @7c446df, eval_linear.py:66-67, eval_knn.py:33-34) and torchvision's
# references resize the shorter side to 256 and keep the centre 224 (224 / 256 = 0.875, timm's
# DEFAULT_CROP_PCT). Small-image recipes evaluate the whole image: CIFAR (32 px) and
# Fashion-MNIST (28) as they are, STL-10 (96) by solo-learn's Resize((96, 96))
# (solo/data/classification_dataloader.py @9187ea3:103-105; its ImageNet / image-folder views
# are Resize(256) + CenterCrop(224), :55-58, :121-124). The crop starts at 112 px, the
# smallest view of an ImageNet recipe here (configs/imagenet100: 112-px views of 128-px
# images, 112 / 128 = 0.875), above every small-image size (<= 96).
EVAL_CENTER_CROP = 0.875
EVAL_CROP_FROM = 112


def eval_center_crop(size: int) -> float:
    """The share of the resized image the evaluation view at ``size`` px keeps: 0.875 from
    ``EVAL_CROP_FROM`` px, 1 (the whole image) below (records carry it, ``eval_center_crop``)."""
    return EVAL_CENTER_CROP if size >= EVAL_CROP_FROM else 1.0


def eval_view(
    size: int, mean: Sequence[float], std: Sequence[float], *, whole: bool = False
) -> ViewSpec:
    """The deterministic evaluation view, normalised, bicubic and antialiased, clamped to
    [0, 1] as a uint8 resize is; no crop randomness, flip, jitter, grayscale, blur or solarize.
    From ``EVAL_CROP_FROM`` (112) px: ``Resize(floor(size / 0.875))`` then ``CenterCrop(size)``
    (at 224: DINO's and torchvision's Resize(256) + CenterCrop(224)); below it, or ``whole``
    (attention maps drawn over the whole image), the whole image resized to (size, size)."""
    crop = 1.0 if whole else eval_center_crop(size)
    return ViewSpec(
        size=size,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        random_crop=False,
        center_crop=crop,
        hflip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        solarize_p=0.0,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
