"""Per-sample antialiased crop-and-resize, separable and sparse, exactly as torchvision's.

Each output pixel along an axis mixes only the few source pixels under its (stretched) filter,
so a crop is resampled from the taps it touches: a list of (source index, weight) pairs per
output pixel and axis, summed by ``torch.nn.functional.embedding_bag`` (one fused gather and
weighted sum over whole rows). The cost is O(size^2 * taps) per plane instead of the O(size^3)
of dense per-sample resampling matrices, and the weights are the same ones, so the result equals
torchvision ``resized_crop(..., antialias=True)`` up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_INTERP_HALF_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _aa_filter(t: Tensor, interpolation: str) -> Tensor:
    """aten's antialias filters (``UpSampleKernel.cpp``): triangle, or Keys cubic with a = -0.5."""
    t = t.abs()
    if interpolation == "bilinear":
        return (1.0 - t).clamp_(min=0.0)
    a = -0.5
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = (((t - 5.0) * t + 8.0) * t - 4.0) * a
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def resize_taps(
    n_in: int, start: Tensor, length: Tensor, size: int, interpolation: str = "bicubic"
) -> tuple[Tensor, Tensor]:
    """The source indices and weights, both (B, size, taps), with which output pixel ``i`` of
    sample ``b`` mixes the input pixels of the crop ``[start[b], start[b] + length[b])`` along an
    axis of ``n_in`` pixels.

    The rule is aten's ``_upsample_{bilinear,bicubic}2d_aa`` (the PIL algorithm behind
    ``F.interpolate(..., antialias=True)`` and torchvision's ``resize(..., antialias=True)``):
    with ``scale = length / size`` the filter is stretched by ``max(scale, 1)``, its taps are
    clipped to the crop and the weights normalised to sum 1. ``taps`` is the most any crop of this
    axis can need (known from the shapes alone: no host sync); unused taps weigh 0 and point at a
    valid index.
    """
    if interpolation not in _INTERP_HALF_SUPPORT:
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    dev = start.device
    n = length.to(torch.float32).view(-1, 1, 1)  # (B, 1, 1)
    scale = n / size
    down = scale >= 1.0
    support = _INTERP_HALF_SUPPORT[interpolation] * torch.where(down, scale, torch.ones_like(scale))
    invscale = torch.where(down, 1.0 / scale, torch.ones_like(scale))
    center = scale * (torch.arange(size, device=dev, dtype=torch.float32).view(1, -1, 1) + 0.5)
    # C truncation of non-negative values == floor; negative values are clamped to 0 anyway.
    xmin = (center - support + 0.5).floor().clamp_(min=0.0)
    xmax = torch.minimum((center + support + 0.5).floor(), n)
    widest = _INTERP_HALF_SUPPORT[interpolation] * max(n_in / size, 1.0)
    # a window of width 2 * support holds at most ceil(2 * support) integers, plus one where
    # float rounding moves an end across an integer (at 96 -> 96 px bicubic: 5 taps, not 6)
    taps = min(n_in, math.ceil(2 * widest) + 1)
    rel = xmin + torch.arange(taps, device=dev, dtype=torch.float32)  # (B, size, taps)
    w = _aa_filter((rel - center + 0.5) * invscale, interpolation) * (rel < xmax)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    index = (rel + start.view(-1, 1, 1)).long().clamp_(max=n_in - 1)  # clamped taps weigh 0
    return index, w


def resize_weights(
    n_in: int, start: Tensor, length: Tensor, size: int, interpolation: str = "bicubic"
) -> Tensor:
    """The taps of :func:`resize_taps` as dense per-sample resampling matrices (B, size, n_in):
    row ``i`` of sample ``b`` holds output pixel ``i``'s weights; columns outside the crop are 0."""
    index, w = resize_taps(n_in, start, length, size, interpolation)
    dense = torch.zeros(w.shape[0], size, n_in, device=w.device, dtype=torch.float32)
    return dense.scatter_add_(2, index, w)


def resample_rows(x: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Resample axis -2 of ``x`` (B, C, N, M) with per-sample taps (B, size, taps): output row
    ``i`` of plane (b, c) is ``sum_t weight[b, i, t] * x[b, c, index[b, i, t], :]``, as one
    ``embedding_bag`` over the B * C * N rows -> (B, C, size, M)."""
    bsz, c, n, m = x.shape
    size, taps = index.shape[1:]
    plane = torch.arange(bsz * c, device=x.device).view(bsz, c, 1, 1) * n
    rows = (plane + index.unsqueeze(1)).view(-1, taps)
    w = weight.to(x.dtype).unsqueeze(1).expand(bsz, c, size, taps).reshape(-1, taps)
    out = F.embedding_bag(rows, x.reshape(-1, m), mode="sum", per_sample_weights=w)
    return out.view(bsz, c, size, m)


def resized_crop(
    x: Tensor,
    top: Tensor,
    left: Tensor,
    height: Tensor,
    width: Tensor,
    size: int,
    interpolation: str = "bicubic",
    flip: Tensor | None = None,
) -> Tensor:
    """Crop box (top, left, height, width) (each int (B,)) of each image, resize it to
    (size, size): (B, C, H, W) -> (B, C, size, size).

    Equals torchvision ``v2.functional.resized_crop(img, top, left, height, width, [size, size],
    interpolation, antialias=True)`` per image: the rows are resampled with the taps of
    :func:`resize_taps`, then (transposed) the columns (:func:`separable`; the result may be a
    transposed view). ``flip`` (bool (B,)) mirrors the output
    of the selected samples (exactly ``hflip`` afterwards) at no cost, by reversing the order of
    their output columns' taps.
    """
    h, w = x.shape[-2:]
    iy, wy = resize_taps(h, top, height, size, interpolation)
    ix, wx = resize_taps(w, left, width, size, interpolation)
    if flip is not None:
        f = flip.view(-1, 1, 1)
        ix, wx = torch.where(f, ix.flip(1), ix), torch.where(f, wx.flip(1), wx)
    return separable(x, (iy, wy), (ix, wx))


def separable(x: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]) -> Tensor:
    """Filter (B, C, H, W) along H with the per-sample taps ``rows`` = (index, weight), each
    (B, H_out, taps), and along W with ``cols`` (B, W_out, taps) -> (B, C, H_out, W_out).

    One memory transpose between the two passes, and none after: the result comes back in the
    other plane layout (a contiguous ``x`` gives a ``transpose(2, 3)`` view of a contiguous
    (B, C, W_out, H_out) tensor, and such a view gives a contiguous result). Element-wise ops
    keep either layout, so a chain of filters pays one transpose each."""
    if x.is_contiguous():
        y = resample_rows(x, *rows)  # (B, C, H_out, W)
        return resample_rows(y.transpose(2, 3).contiguous(), *cols).transpose(2, 3)
    xt = x.transpose(2, 3)
    if not xt.is_contiguous():
        return separable(x.contiguous(), rows, cols)
    y = resample_rows(xt, *cols)  # memory (B, C, W_out, H)
    return resample_rows(y.transpose(2, 3).contiguous(), *rows)  # memory (B, C, H_out, W_out)


def resized_side(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to ``short``, the aspect ratio kept:
    torchvision ``Resize(short)`` (``_compute_resized_output_size``: the longer side
    ``int(short * long / short_side)``)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _centre_taps(
    n_in: int, resized: int, size: int, like: Tensor, interpolation: str
) -> tuple[Tensor, Tensor]:
    """The taps (B, size, taps) of the middle ``size`` outputs of a resize of a whole axis of
    ``n_in`` pixels to ``resized``: torchvision ``center_crop``'s window, starting at
    ``int(round((resized - size) / 2))``."""
    zero = torch.zeros(like.shape[0], dtype=torch.long, device=like.device)
    index, weight = resize_taps(n_in, zero, zero + n_in, resized, interpolation)
    start = round((resized - size) / 2.0)  # Python rounds half to even, as torchvision
    return index[:, start : start + size].contiguous(), weight[:, start : start + size].contiguous()


def resize_center_crop(x: Tensor, short: int, size: int, interpolation: str = "bicubic") -> Tensor:
    """torchvision ``CenterCrop(size)(Resize(short, interpolation, antialias=True)(img))`` for
    each image of ``x`` (B, C, H, W) -> (B, C, size, size), ``short >= size``.

    Only the taps of the output pixels the crop keeps are computed (those of the whole resize,
    :func:`resize_taps`, sliced), so the result is the resize-then-crop one up to float
    rounding, without resampling the border the crop drops."""
    if short < size:
        raise ValueError(f"a centre crop of {size} px needs a resize to at least it, got {short}")
    h, w = x.shape[-2:]
    rh, rw = resized_side(h, w, short)
    rows = _centre_taps(h, rh, size, x, interpolation)
    cols = _centre_taps(w, rw, size, x, interpolation)
    return separable(x, rows, cols)
