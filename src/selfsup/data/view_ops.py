"""Batched image ops for SSL views, exact re-implementations of torchvision's v2 functional ops.

Every op takes float images ``x`` of shape (B, C, H, W) with values in [0, 1] (C in {1, 3}) and
*per-sample* parameter tensors of shape (B,), and runs as a handful of tensor ops on whatever
device ``x`` lives on: no Python loop over samples, no host synchronisation. Each op matches
``torchvision.transforms.v2.functional`` applied image by image to float images (up to float
rounding, ~1e-6), which ``tests/test_views.py`` checks against torchvision directly. Optional
``mask`` arguments (bool, (B,)) select the samples an op is applied to; the others pass unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights of torchvision's ``rgb_to_grayscale``."""

_INTERP_HALF_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _where_mask(mask: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``a`` for the samples where ``mask`` (B,) is true, else ``b``; all of ``a`` without mask."""
    return a if mask is None else torch.where(mask.view(-1, 1, 1, 1), a, b)


def _aa_filter(t: Tensor, interpolation: str) -> Tensor:
    """aten's antialias filters (``UpSampleKernel.cpp``): triangle, or Keys cubic with a = -0.5."""
    t = t.abs()
    if interpolation == "bilinear":
        return (1.0 - t).clamp_(min=0.0)
    a = -0.5
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = (((t - 5.0) * t + 8.0) * t - 4.0) * a
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def resize_weights(
    n_in: int, start: Tensor, length: Tensor, size: int, interpolation: str = "bicubic"
) -> Tensor:
    """Per-sample antialiased resampling matrices (B, size, n_in) along one axis.

    Row ``i`` of sample ``b`` holds the weights with which output pixel ``i`` mixes the input
    pixels of the crop ``[start[b], start[b] + length[b])``, by the rule of aten's
    ``_upsample_{bilinear,bicubic}2d_aa`` (the PIL algorithm that ``F.interpolate(...,
    antialias=True)`` and hence torchvision's ``resize(..., antialias=True)`` use): with
    ``scale = length / size`` the filter is stretched by ``max(scale, 1)``, its taps are clipped to
    the crop and the weights normalised to sum 1. Columns outside the crop are zero.
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
    # Only the taps in [xmin, xmax) are non-zero: at most 2 * support + 1 of them, with the
    # largest support a crop of this image can have (known from shapes alone, no host sync).
    widest = _INTERP_HALF_SUPPORT[interpolation] * max(n_in / size, 1.0)
    taps = min(n_in, math.ceil(2 * widest) + 2)
    rel = xmin + torch.arange(taps, device=dev, dtype=torch.float32)  # (B, size, taps)
    w = _aa_filter((rel - center + 0.5) * invscale, interpolation) * (rel < xmax)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    col = (rel + start.view(-1, 1, 1)).long().clamp_(max=n_in - 1)  # clamped taps weigh 0
    dense = torch.zeros(w.shape[0], size, n_in, device=dev, dtype=torch.float32)
    return dense.scatter_add_(2, col, w)


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
    interpolation, antialias=True)`` per image, computed as ``Wy @ x @ Wx^T`` with the per-sample
    matrices of :func:`resize_weights` (a batched matmul; a box of the output size is the
    identity). ``flip`` (bool (B,)) mirrors the output of the selected samples (exactly
    :func:`hflip` afterwards) at no cost, by reversing the rows of their ``Wx``.
    """
    h, w = x.shape[-2:]
    wy = resize_weights(h, top, height, size, interpolation).to(x.dtype)
    wx = resize_weights(w, left, width, size, interpolation).to(x.dtype)
    if flip is not None:
        wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
    return wy.unsqueeze(1) @ x @ wx.transpose(1, 2).unsqueeze(1)


def hflip(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror the selected images left-right (torchvision ``horizontal_flip``)."""
    return _where_mask(mask, x.flip(-1), x)


def rgb_to_gray(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma as torchvision ``rgb_to_grayscale``; C = 1 is returned."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (
        r.mul(GRAY_WEIGHTS[0])
        .add_(g, alpha=GRAY_WEIGHTS[1])
        .add_(b, alpha=GRAY_WEIGHTS[2])[:, None]
    )


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision ``_blend``: ``(factor * x + (1 - factor) * other).clamp(0, 1)``, factor (B,)."""
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return torch.addcmul(other * (1.0 - f), x, f).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision ``adjust_brightness``: ``(x * factor).clamp(0, 1)`` per sample."""
    return (x * factor.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision ``adjust_contrast``: blend with the mean of the image's grayscale (of the image
    itself for C = 1)."""
    return _blend(x, rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision ``adjust_saturation``: blend with the grayscale image; a no-op for C = 1."""
    return x if x.shape[1] == 1 else _blend(x, rgb_to_gray(x), factor)


def adjust_hue(x: Tensor, hue: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ``adjust_hue`` with per-sample ``hue`` (B,) in [-0.5, 0.5]; a no-op for C = 1.

    torchvision converts to HSV (``_rgb_to_hsv``), shifts ``h`` by ``hue`` modulo 1 and converts
    back (``_hsv_to_rgb``, six sectors). This computes the same function in fewer passes: with
    ``v = max(r, g, b)`` and chroma ``c = v - min(r, g, b)`` (= v * s), channel n in (R, G, B) =
    (5, 3, 1) of the result is ``v - c * clamp(min(k, 4 - k), 0, 1)`` for
    ``k = (n + 6 * h') mod 6``, the closed form of the sector table.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    # sector-relative hue * 6, with torchvision's precedence: max == r, then max == g, then b
    is_r, is_g = maxc == r, maxc == g
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    h6 = num.div_(safe).add_(offset)
    shift = (6.0 * hue.to(x.dtype)).view(-1, 1, 1, 1)
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = (h6.unsqueeze(1) + shift + n).remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    out = maxc.unsqueeze(1) - chroma.unsqueeze(1) * k
    return _where_mask(mask, out, x)


def color_jitter(
    x: Tensor, factors: Tensor, order: Tensor, apply_mask: Tensor | None = None, hue: bool = True
) -> Tensor:
    """torchvision ``ColorJitter`` with per-sample parameters, batched.

    ``factors`` (B, 4) = (brightness, contrast, saturation, hue) factors; ``order`` (B, 4) int, a
    permutation of 0..3 per sample = torchvision's ``fn_idx`` (0 brightness, 1 contrast,
    2 saturation, 3 hue). ``apply_mask`` (B,) selects the jittered samples (``RandomApply``).
    ``hue=False`` skips the hue op (torchvision's ``hue=0``, i.e. ``hue_factor=None``).

    Brightness, contrast and saturation are all a blend with ``other`` = 0, the grayscale mean
    or the grayscale image, so each sample's ops before its hue shift run as 3 blend passes
    (each sample picking its own ``other`` and factor, 1 = identity), then one batched hue pass,
    then 3 blend passes for the ops after it.
    """
    bsz = x.shape[0]
    if apply_mask is None:
        apply_mask = torch.ones(bsz, dtype=torch.bool, device=x.device)
    order = order.long()
    hue_pos = (order == 3).int().argmax(1, keepdim=True)  # (B, 1)
    # the three blend ops in each sample's order (hue removed), gathered without a host sync
    pos = torch.arange(3, device=x.device).view(1, 3)
    seq = order.gather(1, pos + (pos >= hue_pos).long())  # (B, 3)
    n_before = hue_pos.squeeze(1) if hue else torch.full((bsz,), 3, device=x.device)
    for k in range(3):  # the blends before the hue shift
        x = _jitter_blend(x, factors, seq[:, k], apply_mask & (k < n_before))
    if hue:
        x = adjust_hue(x, factors[:, 3], apply_mask)
        for k in range(3):  # the blends after it
            idx = (n_before + k).clamp(max=2).view(-1, 1)
            x = _jitter_blend(
                x, factors, seq.gather(1, idx).squeeze(1), apply_mask & (k < 3 - n_before)
            )
    return x


def _jitter_blend(x: Tensor, factors: Tensor, op: Tensor, on: Tensor) -> Tensor:
    """One blend pass of :func:`color_jitter`: sample b runs op ``op[b]`` (0 brightness,
    1 contrast, 2 saturation) with its factor where ``on[b]``, else the identity (factor 1).

    All three are ``f * x + (1 - f) * other`` (``other`` = 0, the grayscale mean, the grayscale
    image), so one pass computes ``f * x + a * gray + b * mean`` with per-sample coefficients
    (a = 1 - f for saturation, b = 1 - f for contrast, else 0), then clamps."""
    if x.shape[1] == 1:
        on = on & (op != 2)  # saturation is a no-op on one channel
    f = factors[:, :3].gather(1, op.view(-1, 1)).squeeze(1).to(x.dtype)
    f = torch.where(on, f, torch.ones_like(f))
    rest = 1.0 - f
    zero = torch.zeros_like(f)
    a = torch.where(op == 2, rest, zero).view(-1, 1, 1, 1)
    gray = rgb_to_gray(x)
    b = torch.where(op == 1, rest, zero) * gray.mean(dim=(1, 2, 3))
    out = torch.addcmul(b.view(-1, 1, 1, 1), x, f.view(-1, 1, 1, 1))
    return out.addcmul_(gray, a).clamp_(0.0, 1.0)


def to_grayscale(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ``RandomGrayscale``'s op: luma repeated over the 3 channels (C stays); C = 1
    images are returned unchanged."""
    if x.shape[1] == 1:
        return x
    return _where_mask(mask, rgb_to_gray(x).expand_as(x), x)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels (B, k) for per-sample ``sigma`` (B,), as torchvision's
    ``_get_gaussian_kernel1d``: ``softmax(-(t / sigma)^2)`` on
    ``t = linspace(-lim, lim, k)``, ``lim = (k - 1) / (2 * sqrt(2))``."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, kernel_size, device=sigma.device, dtype=torch.float32)
    return torch.softmax(-((t / sigma.to(torch.float32).view(-1, 1)) ** 2), dim=1)


def fit_kernel_size(kernel_size: int, height: int, width: int) -> int:
    """The largest odd kernel size <= ``kernel_size`` whose reflect padding ``k // 2`` fits the
    image (< its smaller side). torchvision raises for larger kernels (``reflect`` padding must be
    smaller than the input); for those we blur with the largest kernel that fits."""
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    return min(kernel_size, 2 * (min(height, width) - 1) + 1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int, mask: Tensor | None = None) -> Tensor:
    """torchvision ``gaussian_blur(img, [k, k], [s, s])`` with per-sample ``sigma`` (B,): a
    separable Gaussian with ``reflect`` padding, as two grouped convolutions over the B * C
    planes. ``kernel_size`` is reduced by :func:`fit_kernel_size` for images too small for it."""
    bsz, c, h, w = x.shape
    k = fit_kernel_size(kernel_size, h, w)
    if k == 1:
        return x
    ker = gaussian_kernels(sigma, k).to(x.dtype).repeat_interleave(c, dim=0)  # (B * C, k)
    p = k // 2
    y = F.pad(x.reshape(1, bsz * c, h, w), (p, p, p, p), mode="reflect")
    y = F.conv2d(y, ker.view(-1, 1, 1, k), groups=bsz * c)
    y = F.conv2d(y, ker.view(-1, 1, k, 1), groups=bsz * c)
    return _where_mask(mask, y.view(bsz, c, h, w), x)


def solarize(x: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """torchvision ``solarize``: invert the pixels ``>= threshold`` of the selected images."""
    flip = x >= threshold
    if mask is not None:
        flip = flip & mask.view(-1, 1, 1, 1)
    return torch.where(flip, 1.0 - x, x)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """torchvision ``normalize``: ``(x - mean) / std`` with per-channel ``mean``, ``std`` (C,)."""
    return (x - mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
