"""Batched view ops against ``torchvision.transforms.v2.functional``, applied image by image.

Every op draws fixed per-sample parameters, runs once on the batch, and is compared with the
torchvision op run on each float image with that sample's parameters. Tolerances are float32
rounding, not slack: exact where both sides run the same arithmetic, a few ulps (of values <= 1)
for blends, and a little more for the sums of resampling and blurring.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import platform
from pathlib import Path

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomResizedCrop as TVRandomResizedCrop
from torchvision.transforms.v2 import functional as TF

import selfsup.data.view_ops as view_ops
from selfsup.data.host_memory import keep_freed_memory
from selfsup.data.recipes import byol_pair
from selfsup.data.resample import resize_taps, resize_weights, separable
from selfsup.data.view_ops import fit_kernel_size
from selfsup.data.views import (
    ViewSpec,
    _selected,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    eval_view,
    gaussian_blur,
    hflip,
    make_views,
    normalize,
    resized_crop,
    rgb_to_gray,
    sample_resized_crop_params,
    solarize,
    to_grayscale,
)

# float32 rounding of values <= 1 (ulp 6e-8 .. 1.2e-7); observed maxima in brackets
BLEND_ATOL = 5e-7  # contrast / saturation blends, factors up to 3 (1.2e-7)
HUE_ATOL = 3e-6  # HSV round trip vs closed form, and jitter chains through it (1.2e-6)
RESIZE_ATOL = 2e-6  # antialiased resampling, up to ~20 taps per axis (7.2e-7)
BLUR_ATOL = 3e-6  # separable vs torchvision's 2-D kernel, up to 23 x 23 taps (1.0e-6)
INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quantised(g: torch.Generator, shape: tuple[int, ...], levels: int = 5) -> torch.Tensor:
    """Images on a coarse grid of values: many ties between channels, grey pixels (chroma 0),
    pure black / white pixels and values exactly at 0.5."""
    return torch.randint(0, levels, shape, generator=g).float() / (levels - 1)


def per_image(fn, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """torchvision ``fn(image, *scalars)`` image by image, sample ``i`` with ``params[.][i]``."""
    return torch.stack([fn(x[i], *(float(p[i]) for p in params)) for i in range(len(x))])


def coin_mask(g: torch.Generator, n: int) -> torch.Tensor:
    mask = torch.rand(n, generator=g) < 0.5
    mask[:2] = torch.tensor([True, False])  # both branches, always
    return mask


# ---------------------------------------------------------------- resized crop + flip


def random_boxes(g, n, height, width, h_range, w_range):
    h = torch.randint(h_range[0], h_range[1] + 1, (n,), generator=g)
    w = torch.randint(w_range[0], w_range[1] + 1, (n,), generator=g)
    top = (torch.rand(n, generator=g) * (height - h + 1)).long()
    left = (torch.rand(n, generator=g) * (width - w + 1)).long()
    return top, left, h, w


def tv_resized_crop(x, box, size, interpolation, flip=None):
    out = []
    for i in range(len(x)):
        top, left, h, w = (int(t[i]) for t in box)
        out_hw = list(size) if isinstance(size, tuple) else [size, size]
        y = TF.resized_crop(
            x[i], top, left, h, w, out_hw, interpolation=INTERP[interpolation], antialias=True
        )
        out.append(TF.horizontal_flip(y) if flip is not None and flip[i] else y)
    return torch.stack(out)


# (output size, box height range, box width range) on a 27 x 34 image
CROP_CASES = {
    "down": (12, (13, 27), (13, 34)),  # every box bigger than the output on both axes
    "up": (20, (2, 19), (2, 19)),  # every box smaller
    "mixed": (16, (3, 27), (3, 34)),  # up on one axis, down on the other, or equal
}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("case", sorted(CROP_CASES))
def test_resized_crop_matches_torchvision(interpolation: str, case: str) -> None:
    size, h_range, w_range = CROP_CASES[case]
    g = gen(1)
    x = torch.rand(40, 3, 27, 34, generator=g)
    box = random_boxes(g, 40, 27, 34, h_range, w_range)
    assert (box[2] != box[3]).sum() > 30  # mostly non-square boxes
    out = resized_crop(x, *box, size, interpolation)
    assert out.shape == (40, 3, size, size)
    close(out, tv_resized_crop(x, box, size, interpolation), RESIZE_ATOL)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resized_crop_flip_is_crop_then_horizontal_flip(interpolation: str) -> None:
    g = gen(2)
    x = torch.rand(24, 3, 20, 26, generator=g)
    box = random_boxes(g, 24, 20, 26, (3, 20), (3, 26))
    flip = coin_mask(g, 24)
    out = resized_crop(x, *box, 14, interpolation, flip=flip)
    close(out, tv_resized_crop(x, box, 14, interpolation, flip=flip), RESIZE_ATOL)
    # the flip mask really selects: unflipped samples equal the plain op exactly
    plain = resized_crop(x, *box, 14, interpolation)
    assert torch.equal(out[~flip], plain[~flip])
    assert not torch.allclose(out[flip], plain[flip])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("channels", [1, 3])
def test_resized_crop_identity_box_is_exact_crop(interpolation: str, channels: int) -> None:
    g = gen(3)
    x = torch.rand(8, channels, 21, 17, generator=g)
    box = random_boxes(g, 8, 21, 17, (12, 12), (12, 12))
    flip = coin_mask(g, 8)
    out = resized_crop(x, *box, 12, interpolation, flip=flip)
    crops = torch.stack(
        [
            x[i, :, t : t + 12, s : s + 12]
            for i, (t, s) in enumerate(zip(box[0], box[1], strict=True))
        ]
    )
    expected = torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)
    assert torch.equal(out, expected)
    assert torch.equal(out, tv_resized_crop(x, box, 12, interpolation, flip=flip))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resized_crop_one_channel_and_dtypes(dtype: torch.dtype) -> None:
    g = gen(4)
    x = torch.rand(10, 1, 18, 23, generator=g, dtype=dtype)
    box = random_boxes(g, 10, 18, 23, (4, 18), (4, 23))
    out = resized_crop(x, *box, 11, "bicubic")
    assert out.dtype == dtype
    # float32 weights: the same rounding as float32 images, even for float64 ones
    close(out, tv_resized_crop(x, box, 11, "bicubic"), RESIZE_ATOL)


def test_resize_weights_rows_are_normalised_and_inside_the_crop() -> None:
    start, length = torch.tensor([0, 3, 7]), torch.tensor([20, 5, 13])
    for interpolation in INTERP:
        w = resize_weights(20, start, length, 9, interpolation)
        assert w.shape == (3, 9, 20)
        close(w.sum(-1), torch.ones(3, 9), 1e-6)
        cols = torch.arange(20)
        outside = (cols < start.view(-1, 1)) | (cols >= (start + length).view(-1, 1))
        assert (w.transpose(1, 2)[outside] == 0).all()
    with pytest.raises(ValueError, match="interpolation"):
        resize_weights(20, start, length, 9, "nearest")


# (image side, output size, box side range): STL-10 and CIFAR sizes, crops up- and downsampled
SPARSE_CASES = {
    "cifar-up": (32, 32, (3, 31)),
    "cifar-down": (32, 20, (21, 32)),
    "stl-up": (96, 96, (6, 95)),
    "stl-down": (96, 40, (41, 96)),
}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("case", sorted(SPARSE_CASES))
def test_sparse_resampling_matches_torchvision_at_cifar_and_stl_sizes(
    interpolation: str, case: str
) -> None:
    """The tap-list path (embedding_bag over rows, then columns) on random boxes of 32- and
    96-pixel images, every box smaller (upsampling) or larger (downsampling) than the output,
    equals torchvision's antialiased ``resized_crop`` per image, flips included."""
    side, size, lengths = SPARSE_CASES[case]
    g = gen(31)
    x = torch.rand(12, 3, side, side, generator=g)
    box = random_boxes(g, 12, side, side, lengths, lengths)
    flip = coin_mask(g, 12)
    out = resized_crop(x, *box, size, interpolation, flip=flip)
    close(out, tv_resized_crop(x, box, size, interpolation, flip=flip), RESIZE_ATOL)


def test_resize_taps_are_few_normalised_and_inside_the_crop() -> None:
    """A few taps per output pixel (not a dense row), summing to 1, every weighted tap inside
    its crop, even for the widest crop (the whole axis) and a 1-pixel one."""
    start, length = torch.tensor([0, 10, 40, 0]), torch.tensor([96, 7, 56, 1])
    for interpolation in INTERP:
        index, w = resize_taps(96, start, length, 32, interpolation)
        assert index.shape == w.shape and index.shape[:2] == (4, 32)
        assert index.shape[2] < 96
        close(w.sum(-1), torch.ones(4, 32), 1e-6)
        lo, hi = start.view(-1, 1, 1), (start + length).view(-1, 1, 1)
        assert ((index >= lo) & (index < hi))[w != 0].all()


@pytest.mark.parametrize("transposed", [False, True])
def test_separable_filters_either_plane_layout(transposed: bool) -> None:
    """``separable`` returns the other memory layout; values do not depend on the layout."""
    g = gen(32)
    x = torch.rand(5, 3, 14, 11, generator=g)
    box = random_boxes(g, 5, 14, 11, (3, 14), (3, 11))
    rows = resize_taps(14, box[0], box[2], 9, "bicubic")
    cols = resize_taps(11, box[1], box[3], 7, "bicubic")
    src = x.transpose(2, 3).contiguous().transpose(2, 3) if transposed else x
    out = separable(src, rows, cols)
    assert out.shape == (5, 3, 9, 7)
    assert out.is_contiguous() == transposed  # one transpose per filter, none undone
    close(out, tv_resized_crop(x, box, (9, 7), "bicubic"), RESIZE_ATOL)


def test_hflip_matches_torchvision() -> None:
    g = gen(5)
    x = torch.rand(6, 3, 5, 7, generator=g)
    mask = coin_mask(g, 6)
    expected = torch.stack([TF.horizontal_flip(x[i]) if mask[i] else x[i] for i in range(6)])
    assert torch.equal(hflip(x, mask), expected)
    assert torch.equal(hflip(x), TF.horizontal_flip(x))


# ---------------------------------------------------------------- colour ops


def test_grayscale_matches_torchvision() -> None:
    g = gen(6)
    x = torch.rand(6, 3, 9, 8, generator=g)
    mask = coin_mask(g, 6)
    gray1 = torch.stack([TF.rgb_to_grayscale(im, num_output_channels=1) for im in x])
    assert torch.equal(rgb_to_gray(x), gray1)
    gray3 = torch.stack([TF.rgb_to_grayscale(im, num_output_channels=3) for im in x])
    assert torch.equal(to_grayscale(x), gray3)
    out = to_grayscale(x, mask)
    assert out.shape == x.shape
    assert torch.equal(out[mask], gray3[mask])
    assert torch.equal(out[~mask], x[~mask])


def test_grayscale_is_a_no_op_on_one_channel() -> None:
    x = torch.rand(4, 1, 6, 6, generator=gen(7))
    assert torch.equal(rgb_to_gray(x), x)
    assert torch.equal(to_grayscale(x, torch.ones(4, dtype=torch.bool)), x)
    # torchvision's RandomGrayscale keeps the channel count: rgb_to_grayscale(img, 1)
    expected = torch.stack([TF.rgb_to_grayscale(im, num_output_channels=1) for im in x])
    assert torch.equal(to_grayscale(x), expected)


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_brightness_matches_torchvision(channels: int) -> None:
    g = gen(8)
    x = torch.rand(12, channels, 7, 9, generator=g)
    factor = torch.rand(12, generator=g) * 2.0  # dims, brightens, clamps at 1
    factor[:2] = torch.tensor([0.0, 1.0])
    # both are one correctly rounded float32 product, then the clamp: exact
    assert torch.equal(adjust_brightness(x, factor), per_image(TF.adjust_brightness, x, factor))


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_contrast_matches_torchvision(channels: int) -> None:
    g = gen(9)
    x = torch.rand(12, channels, 7, 9, generator=g) * torch.rand(12, 1, 1, 1, generator=g)
    factor = torch.rand(12, generator=g) * 2.5
    factor[:2] = torch.tensor([0.0, 1.0])
    out = adjust_contrast(x, factor)
    close(out, per_image(TF.adjust_contrast, x, factor), BLEND_ATOL)
    if channels == 1:  # blended with the mean of the image itself
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        f = factor.view(-1, 1, 1, 1)
        close(out, (f * x + (1 - f) * mean).clamp(0, 1), BLEND_ATOL)


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_saturation_matches_torchvision(channels: int) -> None:
    g = gen(10)
    x = torch.rand(12, channels, 7, 9, generator=g)
    factor = torch.rand(12, generator=g) * 3.0
    factor[:2] = torch.tensor([0.0, 1.0])
    out = adjust_saturation(x, factor)
    close(out, per_image(TF.adjust_saturation, x, factor), BLEND_ATOL)
    if channels == 1:
        assert torch.equal(out, x)


def hue_batch(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous and quantised images (ties, grey, black, white), hues over [-0.5, 0.5]
    including both ends, 0 and sector boundaries."""
    x = torch.cat([torch.rand(n // 2, 3, 8, 8, generator=g), quantised(g, (n - n // 2, 3, 8, 8))])
    x[0, :, :2] = x[0, :1, :2]  # grey rows in a continuous image too
    hue = torch.rand(n, generator=g) - 0.5
    specials = [-0.5, 0.5, 0.0, 1 / 6, -1 / 3, 0.25, -0.5, 0.5]
    hue[: len(specials)] = torch.tensor(specials)
    hue[n // 2 : n // 2 + len(specials)] = torch.tensor(specials)
    return x, hue


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_hue_matches_torchvision(channels: int) -> None:
    g = gen(11)
    x, hue = hue_batch(g, 64)
    x = x[:, :channels]
    assert (x.amax(1) == x.amin(1)).any()  # grey pixels, chroma 0
    out = adjust_hue(x, hue)
    close(out, per_image(TF.adjust_hue, x, hue), HUE_ATOL)
    if channels == 1:
        assert torch.equal(out, x)
    mask = coin_mask(g, 64)
    masked = adjust_hue(x, hue, mask)
    assert torch.equal(masked[mask], out[mask])
    assert torch.equal(masked[~mask], x[~mask])


def test_adjust_hue_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager on the CPU the hue runs in cache-sized chunks of samples: the same result, and
    the samples outside ``mask`` untouched, whatever the chunk size (here 1, 3 and 64
    images of 8 x 8 px per chunk), also on a transposed plane layout and beyond [0, 1]."""
    g = gen(15)
    x, hue = hue_batch(g, 20)
    x[3] = x[3] * 1.3 - 0.15  # a bicubic overshoot in one sample: the exact path
    mask = coin_mask(g, 20)
    expected = per_image(TF.adjust_hue, x, hue)
    for pixels in (64, 3 * 64, 64 * 64):
        monkeypatch.setattr(view_ops, "HUE_CHUNK_PIXELS", pixels)
        close(adjust_hue(x, hue), expected, HUE_ATOL)
        xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # the layout a crop leaves
        out = adjust_hue(xt, hue, mask)
        assert out.stride() == xt.stride()
        close(out[mask], expected[mask], HUE_ATOL)
        assert torch.equal(out[~mask], x[~mask])


def jitter_reference(x, factors, order, apply, hue: bool) -> torch.Tensor:
    """torchvision ``ColorJitter``'s loop: each applied sample runs the four adjust_* ops in its
    own order (``hue=False``: no hue op, torchvision's ``hue_factor=None``)."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = []
    for i in range(len(x)):
        y = x[i]
        if apply[i]:
            for k in order[i].tolist():
                if k != 3 or hue:
                    y = ops[k](y, float(factors[i, k]))
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("grouped", [True, False])
def test_color_jitter_matches_torchvision_beyond_unit_range(
    grouped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bicubic crop overshoots [0, 1]; torchvision's ops do not clamp their input, its hue
    clamps every channel but the max, and an unjittered sample stays as it is."""
    if not grouped:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    g = gen(14)
    perms = torch.tensor(list(itertools.permutations(range(4))))
    x = torch.rand(24, 3, 8, 8, generator=g) * 1.3 - 0.15
    factors = torch.tensor([0.6, 0.6, 0.3, -0.5]) + torch.rand(24, 4, generator=g) * 0.8
    apply = coin_mask(g, 24)
    out = color_jitter(x, factors, perms, apply)
    close(out, jitter_reference(x, factors, perms, apply, True), HUE_ATOL)
    assert torch.equal(out[~apply], x[~apply]) and (x[~apply] > 1).any()


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("hue", [True, False])
def test_color_jitter_matches_torchvision_in_every_order(
    hue: bool, channels: int, grouped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both code paths: samples grouped by hue position (eager CPU) and the masked passes over
    the whole batch (GPU, torch.compile; reached here by posing as compiled code)."""
    if not grouped:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    g = gen(12)
    perms = torch.tensor(list(itertools.permutations(range(4))))
    order = torch.cat([perms, perms[torch.randperm(24, generator=g)]])  # (48, 4), all 24 twice
    n = len(order)
    x = torch.cat([torch.rand(24, 3, 8, 8, generator=g), quantised(g, (24, 3, 8, 8))])
    x = x[:, :channels]
    lo = torch.tensor([0.3, 0.3, 0.0, -0.5])
    hi = torch.tensor([1.7, 1.7, 2.0, 0.5])  # strong enough to clamp, so order matters
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=g)
    apply = torch.rand(n, generator=g) < 0.8
    apply[:2] = torch.tensor([True, False])
    out = color_jitter(x, factors, order, apply, hue=hue)
    close(out, jitter_reference(x, factors, order, apply, hue), HUE_ATOL)
    assert torch.equal(out[~apply], x[~apply])


# ---------------------------------------------------------------- blur, solarize, normalize


@pytest.mark.parametrize("kernel", [3, 9, 23])
@pytest.mark.parametrize("channels", [3, 1])
def test_gaussian_blur_matches_torchvision(kernel: int, channels: int) -> None:
    g = gen(13)
    x = torch.rand(10, channels, 24, 29, generator=g)
    sigma = torch.tensor([0.1, 0.3, 0.5, 1.0, 2.0, 5.0]).repeat(2)[:10]
    sigma[6:] = 0.1 + 3.0 * torch.rand(4, generator=g)
    mask = coin_mask(g, 10)
    out = gaussian_blur(x, sigma, kernel, mask)
    blurred = torch.stack(
        [TF.gaussian_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2) for i in range(10)]
    )
    expected = torch.where(mask.view(-1, 1, 1, 1), blurred, x)
    close(out, expected, BLUR_ATOL)
    assert not torch.allclose(out[mask & (sigma > 0.5)], x[mask & (sigma > 0.5)])


def test_fit_kernel_size() -> None:
    # largest odd k <= kernel with reflect padding k // 2 < the smaller side
    assert fit_kernel_size(23, 40, 40) == 23
    assert fit_kernel_size(23, 12, 40) == 23  # padding 11 < 12: fits exactly
    assert fit_kernel_size(23, 11, 40) == 21
    assert fit_kernel_size(23, 5, 9) == 9
    assert fit_kernel_size(23, 9, 5) == 9
    assert fit_kernel_size(9, 4, 4) == 7
    assert fit_kernel_size(5, 1, 8) == 1
    for bad in (0, 4, -3):
        with pytest.raises(ValueError, match="odd"):
            fit_kernel_size(bad, 8, 8)


def test_gaussian_blur_fits_kernel_to_small_images() -> None:
    g = gen(14)
    x = torch.rand(5, 3, 5, 9, generator=g)
    sigma = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0])
    k = fit_kernel_size(23, 5, 9)
    assert k == 9
    with pytest.raises((RuntimeError, ValueError)):  # torchvision cannot pad by 5 rows of 5
        TF.gaussian_blur(x[0], [k + 2, k + 2], [1.0, 1.0])
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) for i in range(5)]
    )
    close(gaussian_blur(x, sigma, 23), expected, BLUR_ATOL)
    # a one-pixel-high image only fits kernel 1: the identity, as torchvision's
    row = torch.rand(3, 3, 1, 8, generator=g)
    out = gaussian_blur(row, torch.ones(3), 23)
    assert torch.equal(out, row)
    assert torch.equal(out, TF.gaussian_blur(row, [1, 1], [1.0, 1.0]))


@pytest.mark.parametrize("threshold", [0.5, 0.25, 1.0])
@pytest.mark.parametrize("channels", [3, 1])
def test_solarize_matches_torchvision(threshold: float, channels: int) -> None:
    g = gen(15)
    x = quantised(g, (8, channels, 6, 6), levels=9)  # values exactly at the threshold
    assert (x == threshold).any()
    mask = coin_mask(g, 8)
    full = torch.stack([TF.solarize(im, threshold) for im in x])
    assert torch.equal(solarize(x, threshold), full)
    assert torch.equal(solarize(x, threshold, mask), torch.where(mask.view(-1, 1, 1, 1), full, x))


@pytest.mark.parametrize("channels", [3, 1])
def test_normalize_matches_torchvision(channels: int) -> None:
    x = torch.rand(4, channels, 5, 6, generator=gen(16))
    mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
    expected = torch.stack([TF.normalize(im, mean, std) for im in x])
    assert torch.equal(normalize(x, torch.tensor(mean), torch.tensor(std)), expected)


# ---------------------------------------------------------------- random crop boxes


def check_boxes(box, height, width, scale, ratio) -> None:
    """Inside the image, and area / aspect within the bounds up to the rounding of w and h
    (|w - sqrt(area * r)| <= 1/2, |h - sqrt(area / r)| <= 1/2)."""
    top, left, h, w = box
    assert all(t.dtype == torch.int64 for t in box)
    assert (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    hf, wf, area = h.double(), w.double(), height * width
    assert ((wf + 0.5) * (hf + 0.5) >= scale[0] * area).all()
    assert ((wf - 0.5) * (hf - 0.5) <= scale[1] * area).all()
    assert ((wf + 0.5) / (hf - 0.5) >= ratio[0]).all()
    assert ((wf - 0.5) / (hf + 0.5) <= ratio[1]).all()


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (30, 40, (0.08, 1.0), (3 / 4, 4 / 3)),  # the ImageNet default
        (32, 32, (0.05, 0.14), (3 / 4, 4 / 3)),  # DINO's local crops
        (24, 24, (0.3, 0.5), (0.5, 2.0)),
        (24, 24, (0.9, 1.0), (0.5, 2.0)),  # many attempts fail: some samples fall back
    ],
)
def test_crop_boxes_respect_bounds(height, width, scale, ratio) -> None:
    box = sample_resized_crop_params(height, width, 3000, scale, ratio, gen(17))
    check_boxes(box, height, width, scale, ratio)


def test_crop_box_area_and_aspect_cover_their_ranges() -> None:
    _, _, h, w = sample_resized_crop_params(40, 40, 4000, (0.2, 0.6), (1.0, 1.0), gen(18))
    frac = (h * w).double() / 1600
    assert (h == w).all()
    assert abs(frac.mean().item() - 0.4) < 0.01  # area ~ U(0.2, 0.6): sd of the mean 0.002
    assert frac.min() < 0.22 and frac.max() > 0.58
    _, _, h, w = sample_resized_crop_params(100, 100, 4000, (0.04, 0.04), (0.5, 2.0), gen(19))
    log_r = (w.double() / h.double()).log()
    assert abs(log_r.mean().item()) < 0.03  # log aspect ~ U(-log 2, log 2): sd of mean 0.006
    assert log_r.min() < math.log(0.55) and log_r.max() > math.log(1.8)


def test_crop_box_position_is_uniform() -> None:
    top, left, h, w = sample_resized_crop_params(20, 20, 4400, (0.25, 0.25), (1.0, 1.0), gen(20))
    assert (h == 10).all() and (w == 10).all()
    for pos in (top, left):  # ~ randint(0, 20 - 10 + 1): 11 values, 400 each
        counts = torch.bincount(pos, minlength=11)
        assert len(counts) == 11
        assert (counts - 400).abs().max() < 80  # 4 sd


@pytest.mark.parametrize(
    ("height", "width", "ratio"),
    [(16, 16, (3.0, 4.0)), (16, 16, (0.25, 0.3)), (12, 30, (0.5, 2.0))],
)
def test_crop_box_fallback_is_torchvisions_centre_crop(height, width, ratio) -> None:
    # with scale (0.9, 1) and an aspect the image cannot hold, every attempt fails
    scale = (0.9, 1.0)
    top, left, h, w = sample_resized_crop_params(height, width, 50, scale, ratio, gen(21))
    img = torch.zeros(1, height, width)
    expected = TVRandomResizedCrop.get_params(img, list(scale), list(ratio))
    for got in zip(top.tolist(), left.tolist(), h.tolist(), w.tolist(), strict=True):
        assert got == tuple(expected)
    assert tuple(expected) != (0, 0, height, width)  # the aspect really was clamped


def test_crop_boxes_are_deterministic_per_seed() -> None:
    a = sample_resized_crop_params(32, 32, 64, (0.08, 1.0), (3 / 4, 4 / 3), gen(22))
    b = sample_resized_crop_params(32, 32, 64, (0.08, 1.0), (3 / 4, 4 / 3), gen(22))
    c = sample_resized_crop_params(32, 32, 64, (0.08, 1.0), (3 / 4, 4 / 3), gen(23))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


# ---------------------------------------------------------------- make_views


MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def uint8_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, height, width), generator=gen(seed)).to(torch.uint8)


def test_make_views_shapes_and_dtypes() -> None:
    images = uint8_images(6, 3, 20, 24)
    specs = [
        *byol_pair(16, MEAN, STD),
        ViewSpec(size=8, crop_scale=(0.05, 0.4), interpolation="bilinear"),
        eval_view(28, MEAN, STD),
    ]
    views = make_views(images, specs, gen(0))
    assert [v.shape for v in views] == [(6, 3, s.size, s.size) for s in specs]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    gray = make_views(
        uint8_images(5, 1, 12, 12), [ViewSpec(size=10, mean=(0.5,), std=(0.25,))], gen(0)
    )
    assert gray[0].shape == (5, 1, 10, 10)


def test_make_views_are_reproducible_per_seed() -> None:
    images = uint8_images(8, 3, 16, 16)
    specs = byol_pair(12, MEAN, STD)
    a, b, c = (make_views(images, specs, gen(s)) for s in (5, 5, 6))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert all(not torch.equal(u, v) for u, v in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[1])  # the two views of one call differ too


@pytest.mark.parametrize(
    ("images", "spec", "match"),
    [
        (torch.rand(2, 3, 8, 8), ViewSpec(size=8), "uint8"),
        (uint8_images(2, 2, 8, 8), ViewSpec(size=8), "channels"),
        (uint8_images(2, 4, 8, 8), ViewSpec(size=8), "channels"),
        (uint8_images(2, 3, 8, 8)[0], ViewSpec(size=8), "B, C, H, W"),
        (uint8_images(2, 1, 8, 8), ViewSpec(size=8), "mean"),  # 3 means for 1 channel
        (uint8_images(2, 3, 8, 8), ViewSpec(size=8, mean=(0.5, 0.5)), "differ"),
    ],
)
def test_make_views_rejects_bad_input(images, spec, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_views(images, [spec], gen(0))


@pytest.mark.parametrize(
    "fields",
    [
        {"size": 0},
        {"interpolation": "nearest"},
        {"blur_kernel": 4},
        {"crop_scale": (0.5, 0.2)},
        {"crop_ratio": (0.0, 1.0)},
        {"blur_sigma": (2.0, 1.0)},
        {"hue": 0.6},
        {"solarize_p": 1.5},
        {"hflip_p": -0.1},
        {"center_crop": 0.0, "random_crop": False},
        {"center_crop": 0.875},  # a centre crop is the evaluation view's, never a random crop's
    ],
)
def test_view_spec_validates(fields) -> None:
    with pytest.raises(ValueError):
        ViewSpec(**fields)


@pytest.mark.parametrize(("height", "width", "size"), [(30, 22, 16), (20, 20, 32), (16, 16, 16)])
def test_eval_view_is_resize_then_normalize(height: int, width: int, size: int) -> None:
    images = uint8_images(4, 3, height, width)
    (view,) = make_views(images, [eval_view(size, MEAN, STD)], gen(0))
    expected = torch.stack(
        [
            TF.normalize(
                TF.resize(
                    im.float() / 255, [size, size], InterpolationMode.BICUBIC, antialias=True
                ).clamp(0.0, 1.0),  # as torchvision's uint8 resize and PIL clamp
                list(MEAN),
                list(STD),
            )
            for im in images
        ]
    )
    close(view, expected, RESIZE_ATOL / min(STD))  # normalising scales the error by 1 / std
    # deterministic: no randomness consumed from the generator matters
    assert torch.equal(view, make_views(images, [eval_view(size, MEAN, STD)], gen(1))[0])


def photo() -> torch.Tensor:
    """A real photograph, uint8 (1, 3, 600, 512): matplotlib's sample Grace Hopper portrait."""
    image_module = pytest.importorskip("PIL.Image")
    mpl = pytest.importorskip("matplotlib")
    path = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"no sample photograph at {path}")
    with image_module.open(path) as im:
        return TF.pil_to_tensor(im.convert("RGB")).unsqueeze(0)


@pytest.mark.parametrize("square", [False, True])
def test_eval_view_at_imagenet_size_is_resize_256_then_center_crop_224(square: bool) -> None:
    """At 224 px the evaluation view is DINO's / torchvision's ``Resize(256, BICUBIC)`` (the
    shorter side, aspect kept, antialiased) then ``CenterCrop(224)``: on float images up to
    resampling rounding. DINO eval_linear.py runs it on PIL images, whose uint8 arithmetic
    rounds each pass to whole levels and clamps between them (torchvision's uint8 kernel gives
    PIL's result exactly here): observed on this photograph, mean 0.29 levels, 0.08% of the
    pixels more than a level apart, at most 6.5 levels at clamped edges."""
    images = photo()
    if square:  # what an image folder stores: the centre square (imagefolder.decode)
        images = images[..., 44:556, :]
    (view,) = make_views(images, [eval_view(224, (0.0,), (1.0,))], gen(0))
    assert view.shape == (1, 3, 224, 224)
    x = images[0].float() / 255
    resized = TF.resize(x, [256], InterpolationMode.BICUBIC, antialias=True)
    close(view[0], TF.center_crop(resized.clamp(0.0, 1.0), [224]), RESIZE_ATOL)
    pil = TF.to_pil_image(images[0])
    pil = TF.center_crop(TF.resize(pil, [256], InterpolationMode.BICUBIC), [224])
    levels = (view[0] * 255 - TF.pil_to_tensor(pil).float()).abs()
    assert levels.mean() < 0.35 and (levels > 1.0).float().mean() < 0.002 and levels.max() < 8


def test_eval_view_of_an_imagenet100_config_is_the_centre_crop() -> None:
    """configs/imagenet100: 128-px images, 112-px views; 112 / 0.875 = 128, so the evaluation
    view is the centre 112 x 112 of the stored image, untouched (the identity resize)."""
    images = uint8_images(3, 3, 128, 128)
    (view,) = make_views(images, [eval_view(112, (0.0,), (1.0,))], gen(0))
    close(view, images[..., 8:120, 8:120].float() / 255, RESIZE_ATOL)


@pytest.mark.parametrize("size", [28, 32, 64, 96])
def test_small_eval_views_keep_the_whole_image(size: int) -> None:
    """Below ImageNet sizes (Fashion-MNIST 28, CIFAR 32, Tiny-ImageNet 64, STL-10 96) the
    official recipes evaluate the whole image (solo-learn's STL-10 ``Resize((96, 96))``), as
    before: the view is the whole image resized to (size, size)."""
    images = uint8_images(3, 3, 100, 100)
    (view,) = make_views(images, [eval_view(size, (0.0,), (1.0,))], gen(0))
    whole = TF.resize(images.float() / 255, [size, size], InterpolationMode.BICUBIC, antialias=True)
    close(view, whole.clamp(0.0, 1.0), RESIZE_ATOL)


@pytest.mark.parametrize("channels", [1, 3])
def test_bicubic_views_stay_in_the_pixel_range_as_uint8_crops_do(channels: int) -> None:
    """SSL recipes crop uint8 (or PIL) images, whose bicubic resize clamps to [0, 255]; on
    floats it rings past [0, 1] at sharp edges. A view of uint8 images is torchvision's float
    crop clamped to [0, 1], and lies within half a level (its rounding) of torchvision's uint8
    crop except at the few edge pixels where the uint8 kernel also clamps between its passes."""
    images = torch.zeros(6, channels, 14, 14, dtype=torch.uint8)
    images[:, :, 3:11, 5:9] = 255  # sharp edges: the float crop overshoots by ~0.1 here
    bare = dict(hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0, mean=(0.0,), std=(1.0,))
    spec = ViewSpec(size=28, crop_scale=(0.3, 0.6), **bare)
    (view,) = make_views(images, [spec], gen(3))
    boxes = zip(
        *sample_resized_crop_params(14, 14, 6, (0.3, 0.6), spec.crop_ratio, gen(3)), strict=True
    )
    bicubic = dict(size=[28, 28], interpolation=InterpolationMode.BICUBIC, antialias=True)
    floats, uint8 = [], []
    for im, (t, lf, h, w) in zip(images, boxes, strict=True):
        floats.append(TF.resized_crop(im.float() / 255, t, lf, h, w, **bicubic))
        uint8.append(TF.resized_crop(im, t, lf, h, w, **bicubic))
    floats_t = torch.stack(floats)
    assert floats_t.min() < -0.05 and floats_t.max() > 1.05  # the case: float crops overshoot
    close(view, floats_t.clamp(0.0, 1.0), RESIZE_ATOL)
    off = (view - torch.stack(uint8).float() / 255).abs() > 0.5 / 255 + RESIZE_ATOL
    assert off.float().mean() < 0.05


def test_the_byol_pair_is_asymmetric_as_the_official_recipe() -> None:
    first, second = byol_pair(32, MEAN, STD)
    assert (first.blur_p, second.blur_p) == (1.0, 0.1)
    assert (first.solarize_p, second.solarize_p) == (0.0, 0.2)
    # everything else is shared: BYOL's augmentations
    assert dataclasses.replace(first, blur_p=0.1, solarize_p=0.2) == second
    assert (first.brightness, first.contrast, first.saturation, first.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (first.jitter_p, first.grayscale_p, first.hflip_p) == (0.8, 0.2, 0.5)
    assert first.crop_scale == (0.08, 1.0) and first.interpolation == "bicubic"
    assert first.solarize_threshold == 0.5 and first.random_crop
    assert (first.mean, first.std) == (MEAN, STD)


@pytest.mark.parametrize(
    ("field", "p"),
    [
        ("hflip_p", 0.25),
        ("jitter_p", 0.7),
        ("grayscale_p", 0.2),
        ("blur_p", 0.3),
        ("solarize_p", 0.2),
    ],
)
def test_make_views_honours_per_sample_probabilities(field: str, p: float) -> None:
    # everything else off and an identity resize, so a sample changes iff its op was applied
    base = ViewSpec(
        size=6,
        random_crop=False,
        hflip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
        blur_sigma=(1.0, 2.0),
        blur_kernel=3,
        solarize_p=0.0,
        mean=(0.0,),
        std=(1.0,),
    )
    n = 2000
    images = uint8_images(n, 3, 6, 6, seed=24)
    (view,) = make_views(images, [dataclasses.replace(base, **{field: p})], gen(25))
    changed = (view != images.float() / 255).flatten(1).any(1).double().mean().item()
    # 4 sd of a Bernoulli(p) mean over 2000 samples is <= 0.045; 1 - p or 0 / 1 is far outside
    assert abs(changed - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_compiled_views_equal_eager_views() -> None:
    """``make_views(compile=True)`` fuses the ops with torch.compile; the views must be the same
    (same random draws, values equal up to float rounding)."""
    images = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    specs = byol_pair(12, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    eager = make_views(images, specs, torch.Generator().manual_seed(3))
    fused = make_views(images, specs, torch.Generator().manual_seed(3), compile=True)
    for a, b in zip(eager, fused, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("op", ["blur", "solarize"])
def test_cpu_subset_path_equals_the_masked_path(op: str) -> None:
    """Eager on the CPU, blur and solarize run only on the selected samples (host indices) and
    write them back; the result is exactly the masked op's over the whole batch."""
    g = gen(33)
    x = torch.rand(16, 3, 20, 20, generator=g).transpose(2, 3)  # the layout a crop leaves
    mask = coin_mask(g, 16)
    sigma = 0.2 + torch.rand(16, generator=g)
    fn, args = (gaussian_blur, (sigma, 7)) if op == "blur" else (solarize, (0.5,))
    expected = fn(x, *args, mask)
    out = _selected(fn, x.clone(), mask, True, *args)
    assert torch.equal(out, expected)
    assert torch.equal(out[~mask], x[~mask]) and not torch.equal(out[mask], x[mask])
    none = torch.zeros(16, dtype=torch.bool)
    assert torch.equal(_selected(fn, x.clone(), none, True, *args), x)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_sets_glibc_thresholds() -> None:
    assert keep_freed_memory() is True
