"""Batched image ops for SSL views, exact re-implementations of torchvision's v2 functional ops.

Every op takes float images ``x`` of shape (B, C, H, W) with values in [0, 1] (C in {1, 3}) and
*per-sample* parameter tensors of shape (B,), and runs as a handful of tensor ops on whatever
device ``x`` lives on: no Python loop over samples, no host synchronisation (except eager on the
CPU, where reading indices on the host is free: see :func:`_host_free`). Each op matches
``torchvision.transforms.v2.functional`` applied image by image to float images (up to float
rounding, ~1e-6), which ``tests/test_views.py`` checks against torchvision directly. Optional
``mask`` arguments (bool, (B,)) select the samples an op is applied to; the others pass unchanged.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from selfsup.data.resample import separable

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601-2 luma weights of torchvision's ``rgb_to_grayscale``."""


def _where_mask(mask: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``a`` for the samples where ``mask`` (B,) is true, else ``b``; all of ``a`` without mask.

    A ``lerp`` with 0 / 1 weights, which returns either operand exactly (aten's lerp computes
    ``b + 0 * (a - b)`` or ``a - (a - b) * 0``), in one vectorised pass: a ``where`` on a
    broadcast (B, 1, 1, 1) mask is several times slower on the CPU."""
    if mask is None:
        return a
    return torch.lerp(b, a, mask.to(a.dtype).view(-1, 1, 1, 1))


def _host_free(x: Tensor) -> bool:
    """Whether reading a value on the host costs nothing: eager on the CPU (a device sync on a
    GPU, a graph break under ``torch.compile``)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _restore_unselected(mask: Tensor | None, out: Tensor, x: Tensor) -> Tensor:
    """:func:`_where_mask` for a fresh ``out`` that may be overwritten: on the CPU (eager) the
    unselected samples are copied back into it by index (host indices cost nothing there), a
    fraction of a pass instead of a whole one."""
    if mask is None or not _host_free(out):
        return _where_mask(mask, out, x)
    keep = (~mask).nonzero().squeeze(1)
    return out.index_copy_(0, keep, x.index_select(0, keep))


def clamp_unit(x: Tensor) -> Tensor:
    """``x`` clamped to [0, 1] in place (a tensor the view made): what a bicubic crop of a uint8
    or PIL image gives (torchvision's uint8 resize and PIL clamp to [0, 255]), where the same crop
    of float images overshoots near sharp edges (ringing, to about -0.2 and 1.15 on Fashion-MNIST).
    The SSL recipes crop uint8 / PIL images; on Fashion-MNIST the overshoot left in the ~20% of
    views that no jitter clamps cost 4.6-5.1 points of kNN-20 after 3 epochs of the demo recipe
    (benchmarks/time_to_accuracy.py, seeds 0 and 1). Not matched: torchvision's uint8 kernel and
    PIL also clamp (and round) between their two passes, which moves a few edge pixels more."""
    return x.clamp_(0.0, 1.0)


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


HUE_CHUNK_PIXELS = 150_000
"""Pixels per plane in one chunk of :func:`adjust_hue` eager on the CPU (16 images of 96 px):
its ~35 passes then run over planes that stay in the cores' caches (2 MiB L2 here); at 96 px
chunks of 16 took 13.5 ms against 20.9 ms for the whole batch of 205 (2 cores)."""


def adjust_hue(x: Tensor, hue: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ``adjust_hue`` with per-sample ``hue`` (B,) in [-0.5, 0.5]; a no-op for C = 1.

    torchvision converts to HSV (``_rgb_to_hsv``), shifts ``h`` by ``hue`` modulo 1 and converts
    back (``_hsv_to_rgb``, six sectors). This computes the same function in fewer passes: with
    ``v = max(r, g, b)``, ``m = min(r, g, b)``, chroma ``c = v - m`` and the shifted hue
    ``H = 6 h'`` in [0, 6), channel n in (R, G, B) = (5, 3, 1) of the result is
    ``m + c * clamp(d - 1, 0, 1)`` where ``d`` is the distance from ``H + n - 2`` to the nearest
    multiple of 6 (the closed form of the sector table). On [0, 6) that distance is ``|H - 3|``
    for R, ``min(H + 1, |H - 5|)`` for G and ``min(|H - 1|, 7 - H)`` for B, and the result is
    ``(m - c) + c * clamp(d, 1, 2)``: four to six passes over a plane per channel, no float
    ``remainder`` (slow on the CPU) and no boolean ``where``. Eager on the CPU the batch runs
    in chunks of :data:`HUE_CHUNK_PIXELS` (cache-sized).
    """
    if x.shape[1] == 1:
        return x
    out = torch.empty_like(x)  # x's plane layout
    step = len(x)
    if _host_free(x):
        step = max(1, HUE_CHUNK_PIXELS // (x.shape[2] * x.shape[3]))
    for start in range(0, len(x), step):
        part = slice(start, start + step)
        _hue_into(x[part], hue[part], out[part])
    return _restore_unselected(mask, out, x)


def _hue_into(x: Tensor, hue: Tensor, out: Tensor) -> None:
    """The body of :func:`adjust_hue`, written into ``out``."""
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (aminmax over dim 1 is ~7x slower)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    # chroma 0 means r = g = b and a zero numerator below: any positive divisor gives hue 0
    safe = chroma.clamp(min=torch.finfo(x.dtype).tiny)
    # sector-relative hue * 6, with torchvision's precedence: max == r, then max == g, then b
    # (lerp with 0 / 1 weights selects exactly, and is several times faster than a bool where)
    is_r = torch.eq(maxc, r, out=torch.empty_like(maxc))  # written as 0. / 1. directly
    is_g = torch.eq(maxc, g, out=torch.empty_like(maxc))
    h6 = torch.lerp((r - g).add_(safe, alpha=4.0), (b - r).add_(safe, alpha=2.0), is_g)
    h6 = torch.lerp(h6, g - b, is_r)  # in [-1, 5) once divided
    h6.div_(safe).add_((6.0 * hue.to(x.dtype)).view(-1, 1, 1))
    h6.sub_(h6.mul(1.0 / 6.0).floor_(), alpha=6.0)  # wrapped to [0, 6] (6 acts as 0)
    base = minc - chroma
    # torchvision clamps its p, q, t (every channel but the max) to [0, 1]: a no-op on images
    # in [0, 1], not on a bicubic crop's overshoot; checked on the host when that is free
    exact = not _host_free(x) or bool(minc.amin() < 0.0) or bool(maxc.amax() > 1.0)
    for c in range(3):  # plane by plane: no broadcast across channels
        if c == 0:
            d = torch.sub(h6, 3.0).abs_()
        elif c == 1:
            d = torch.minimum(torch.sub(h6, 5.0).abs_(), h6 + 1.0)
        else:
            d = torch.minimum(torch.sub(h6, 1.0).abs_(), torch.rsub(h6, 7.0))
        d.clamp_(1.0, 2.0)
        if exact:
            is_max = (d == 2.0).to(x.dtype)
            torch.lerp(torch.addcmul(base, chroma, d).clamp_(0.0, 1.0), maxc, is_max, out=out[:, c])
        else:
            torch.addcmul(base, chroma, d, out=out[:, c])


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
    then 3 blend passes for the ops after it. Eager on the CPU, where host indices are free, the
    samples are instead grouped by the position of their hue shift (unjittered samples apart)
    and each group runs only its own 3 blends: half the blend passes, none for the others.
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
    if _host_free(x):
        return _jitter_groups(x, factors, seq, torch.where(apply_mask, n_before, -1), hue)
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


def _jitter_groups(x: Tensor, factors: Tensor, seq: Tensor, group: Tensor, hue: bool) -> Tensor:
    """:func:`color_jitter` by groups of samples (eager on the CPU): ``group`` (B,) is the number
    of blends before the hue shift (-1: not jittered); each group is gathered, runs its
    sequence, and is written to the output, which keeps the plane layout of ``x``.

    Each blend is a per-sample colour matrix ``f * I + s * 1 w^T`` plus a constant
    (:func:`_blend_matrices`, built for the whole batch up front), applied by one ``baddbmm``
    and clamped: two passes over the images where the element-wise form takes six, and a
    handful of small ops per group (the small ops' overhead was half the jitter's time)."""
    out = torch.empty_like(x)
    mixes = _blend_matrices(factors, seq, x.shape[1], x.dtype)
    ops = seq.tolist()
    groups = group.tolist()
    for n in sorted(set(groups)):
        idx = (group == n).nonzero().squeeze(1)  # (no tensor from Python values in a step)
        members = idx.tolist()
        sub = select_samples(x, idx)
        if n >= 0:
            for k in range(3):
                if k == n and hue:
                    sub = adjust_hue(sub, factors[:, 3].index_select(0, idx))
                mix, contrast, changed = (t.index_select(0, idx) for t in mixes[k])
                has_contrast = any(ops[i][k] == 1 for i in members)
                sub = _apply_blend(sub, mix, contrast if has_contrast else None, changed)
            if n == 3 and hue:
                sub = adjust_hue(sub, factors[:, 3].index_select(0, idx))
        out.index_copy_(0, idx, sub)
    return out


@functools.lru_cache(maxsize=16)
def _luma(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The grayscale weights as a tensor, built once per run (read-only)."""
    return torch.tensor(GRAY_WEIGHTS if channels == 3 else (1.0,), dtype=dtype, device=device)


def _blend_matrices(
    factors: Tensor, seq: Tensor, channels: int, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """For each blend step k of :func:`_jitter_groups`: the colour matrices (B, C, C), the
    contrast coefficients (B,) (``1 - f`` where the op is contrast, else 0) and whether the
    sample changes (False only for saturation on one channel, a no-op there)."""
    dev = factors.device
    weights = _luma(channels, dtype, dev)
    eye = torch.eye(channels, dtype=dtype, device=dev)
    out = []
    on = torch.ones(seq.shape[0], dtype=torch.bool, device=dev)
    for k in range(3):
        f, sat, contrast, changed = _blend_terms(factors, seq[:, k], on, channels, dtype)
        mix = f.view(-1, 1, 1) * eye + sat.view(-1, 1, 1) * weights.expand(channels, channels)
        out.append((mix, contrast, changed))
    return out


def _apply_blend(x: Tensor, mix: Tensor, contrast: Tensor | None, changed: Tensor) -> Tensor:
    """``mix @ pixel + contrast * mean(gray(x))`` for every pixel of each sample (``contrast``
    None: all 0), clamped to [0, 1] for the ``changed`` samples (:func:`_clamp_changed`).
    torchvision forms ``f * x + (1 - f) * other``; the matrix sums the same terms in another
    order (within float rounding), and an identity (``mix = I``, no constant) returns ``x``
    exactly."""
    bsz, ch = x.shape[:2]
    flip = not x.is_contiguous() and x.transpose(2, 3).is_contiguous()
    xs = x.transpose(2, 3) if flip else x.contiguous()  # per-plane contiguous either way
    planes = xs.reshape(bsz, ch, -1)
    shift = torch.zeros(bsz, ch, 1, dtype=x.dtype, device=x.device)
    if contrast is not None:  # the mean of the grayscale image: the luma of the channel means
        gray = planes.mean(2) @ _luma(ch, x.dtype, x.device)
        shift = (contrast * gray).view(-1, 1, 1).expand(bsz, ch, 1)
    out = _clamp_changed(torch.baddbmm(shift, mix, planes).view(xs.shape), changed)
    return out.transpose(2, 3) if flip else out


def select_samples(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` (a copy) in the plane layout of ``x`` (contiguous, or a transposed view of a
    contiguous tensor, as :func:`selfsup.data.resample.separable` leaves it)."""
    if not x.is_contiguous() and x.transpose(2, 3).is_contiguous():
        return x.transpose(2, 3).index_select(0, idx).transpose(2, 3)
    return x.index_select(0, idx)


def _jitter_blend(x: Tensor, factors: Tensor, op: Tensor, on: Tensor) -> Tensor:
    """One blend pass of :func:`color_jitter`: sample b runs op ``op[b]`` (0 brightness,
    1 contrast, 2 saturation) with its factor where ``on[b]``, else the identity (factor 1).

    All three are ``f * x + (1 - f) * other`` (``other`` = 0, the grayscale mean, the grayscale
    image), so one pass computes ``f * x + (s * gray + t)`` with per-sample ``s`` (1 - f for
    saturation, else 0) and ``t`` (1 - f times the grayscale mean for contrast, else 0), then
    clamps the samples it changed: the products torchvision forms, and the identity (f = 1,
    s = t = 0, no clamp: a bicubic crop may overshoot [0, 1]) exactly."""
    f, s, c, on = _blend_terms(factors, op, on, x.shape[1], x.dtype)
    gray = rgb_to_gray(x)  # x itself for one channel: not written below
    t = c * gray.mean(dim=(1, 2, 3))
    other = torch.addcmul(t.view(-1, 1, 1, 1), gray, s.view(-1, 1, 1, 1))  # (B, 1, H, W)
    return _clamp_changed(torch.addcmul(other, x, f.view(-1, 1, 1, 1)), on)


def _blend_terms(
    factors: Tensor, op: Tensor, on: Tensor, channels: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per sample (B,) of a blend step: the factor ``f`` of op ``op`` (0 brightness, 1 contrast,
    2 saturation; 1 where not ``on``), the weight ``1 - f`` of the grayscale image (saturation,
    else 0) and of its mean (contrast, else 0), and ``on`` less saturation on one channel (a
    no-op there)."""
    if channels == 1:
        on = on & (op != 2)
    f = factors[:, :3].gather(1, op.view(-1, 1)).squeeze(1).to(dtype)
    f = torch.where(on, f, torch.ones_like(f))
    rest, zero = 1.0 - f, torch.zeros_like(f)
    return f, torch.where(op == 2, rest, zero), torch.where(op == 1, rest, zero), on


def _clamp_changed(out: Tensor, on: Tensor) -> Tensor:
    """``out`` clamped to [0, 1] in place for the samples ``on`` (B,); the others (identities)
    keep their values, as torchvision's no-ops do (a bicubic crop may overshoot [0, 1])."""
    if _host_free(out) and bool(on.all()):  # the plain clamp when every sample changed
        return out.clamp_(0.0, 1.0)
    inf = torch.full(on.shape, math.inf, dtype=out.dtype, device=out.device)
    lo = torch.where(on, torch.zeros_like(inf), -inf).view(-1, 1, 1, 1)
    return out.clamp_(lo, torch.where(on, torch.ones_like(inf), inf).view(-1, 1, 1, 1))


def to_grayscale(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ``RandomGrayscale``'s op: luma repeated over the 3 channels (C stays); C = 1
    images are returned unchanged."""
    if x.shape[1] == 1:
        return x
    gray = rgb_to_gray(x)
    return gray.repeat(1, x.shape[1], 1, 1) if mask is None else _where_mask(mask, gray, x)


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


def blur_taps(kernels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Per-sample 1-D ``kernels`` (B, k) along an axis of ``n`` pixels as taps (index, weight),
    each (B, n, k): output pixel i mixes input pixels ``i - k // 2 .. i + k // 2``, mirrored at
    the edges (``reflect`` padding, valid while ``k // 2 < n``)."""
    bsz, k = kernels.shape
    dev = kernels.device
    pos = (torch.arange(n, device=dev).view(-1, 1) + torch.arange(k, device=dev) - k // 2).abs()
    pos = torch.where(pos > n - 1, 2 * (n - 1) - pos, pos)
    return pos.expand(bsz, n, k), kernels.unsqueeze(1).expand(bsz, n, k)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int, mask: Tensor | None = None) -> Tensor:
    """torchvision ``gaussian_blur(img, [k, k], [s, s])`` with per-sample ``sigma`` (B,): a
    separable Gaussian with ``reflect`` padding, rows then columns, each a per-sample banded
    filter (:func:`selfsup.data.resample.separable`). Samples outside ``mask`` get the unit
    kernel, which returns them exactly. ``kernel_size`` is reduced by :func:`fit_kernel_size`
    for images too small for it."""
    h, w = x.shape[-2:]
    k = fit_kernel_size(kernel_size, h, w)
    if k == 1:
        return x
    ker = gaussian_kernels(sigma, k)
    if mask is not None:  # the unit kernel for the others: exact, and no extra pass
        unit = torch.zeros_like(ker)
        unit[:, k // 2] = 1.0
        ker = torch.where(mask.view(-1, 1), ker, unit)
    return separable(x, blur_taps(ker, h), blur_taps(ker, w))


def solarize(x: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """torchvision ``solarize``: invert the pixels ``>= threshold`` of the selected images (the
    others get an infinite threshold: one comparison, no extra pass for the mask). The choice is
    a ``lerp`` with 0 / 1 weights (exact, and faster on the CPU than a bool ``where``)."""
    thr = torch.full((x.shape[0],), threshold, device=x.device, dtype=x.dtype)
    if mask is not None:
        thr = thr.masked_fill(~mask, math.inf)
    flip = (x >= thr.view(-1, 1, 1, 1)).to(x.dtype)
    return torch.lerp(x, 1.0 - x, flip)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """torchvision ``normalize``: ``(x - mean) / std`` with per-channel ``mean``, ``std`` (C,);
    the result is contiguous whatever the layout of ``x`` (the subtraction writes it)."""
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    return torch.sub(x, mean.view(1, -1, 1, 1), out=out).div_(std.view(1, -1, 1, 1))
