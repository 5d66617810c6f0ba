"""A generated, labelled dataset for tests, smoke runs and demos without any download.

Ten classes = 5 shapes (circle, square, triangle, cross, ring) x 2 textures (striped,
checkered). Every image draws its own position, size, rotation, texture frequency, orientation
and phase, foreground colours, background colour and pixel noise, so that classes differ only by
*shape* and *texture*: raw pixels are far from linearly separable, but the invariances that
self-supervised methods learn (to colour, position, scale) make the classes easy. Generation is
vectorised over the whole batch with coordinate grids and is deterministic per seed.
"""

from __future__ import annotations

import math

import torch

from selfsup.data.array import ImageArray

SHAPES = ("circle", "square", "triangle", "cross", "ring")
TEXTURES = ("striped", "checkered")
CLASSES = [f"{shape}-{texture}" for shape in SHAPES for texture in TEXTURES]
"""Class ``label`` is shape ``label // 2`` with texture ``label % 2``."""

SPLITS = {"train": (0, 4096), "test": (1, 1024)}
"""split -> (seed, number of images)."""

_CHUNK = 1024


def _circle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * x + y * y <= 1.0


def _square(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x.abs(), y.abs()) <= 0.82  # about the circle's area


def _triangle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (y <= 0.5) & (y >= math.sqrt(3.0) * x.abs() - 1.0)  # upright (y grows down)


def _cross(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ax, ay = x.abs(), y.abs()
    return ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))


def _ring(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r2 = x * x + y * y
    return (r2 <= 1.0) & (r2 >= 0.36)


_SHAPE_MASKS = (_circle, _square, _triangle, _cross, _ring)
"""Per shape: bool mask from shape-local coordinates (the shape spans radius 1)."""


def _chunk(n: int, size: int, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Float (n, 3, size, size) images in [0, 1] for ``labels`` (n,).

    Per-image parameters are (n, 1, 1) and the pixel grid is split into a row (1, 1, W) and a
    column (1, H, 1), so most arithmetic is on small tensors and only a few ops touch every pixel.
    """

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    def view(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, 1, 1)

    radius = uniform(0.35, 0.65)
    cx = (1.0 - radius) * uniform(-1.0, 1.0)
    cy = (1.0 - radius) * uniform(-1.0, 1.0)
    rot = uniform(0.0, 2 * math.pi)
    cycle = uniform(0.2, 0.32)  # texture cycle, as a fraction of the image width
    tex_angle = uniform(0.0, math.pi)
    phase = uniform(0.0, 2 * math.pi, 2)
    colour_a, colour_b, background = uniform(0, 1, 3), uniform(0, 1, 3), uniform(0, 1, 3)
    # keep the two texture colours apart, so the texture is always visible
    close = (colour_a - colour_b).abs().sum(1, keepdim=True) < 0.6
    colour_b = torch.where(close, 1 - colour_a, colour_b)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    u, v = coords.view(1, 1, size), coords.view(1, size, 1)  # columns, rows (down)

    du, dv = (u - view(cx)) / view(radius), (v - view(cy)) / view(radius)
    cos, sin = view(rot.cos()), view(rot.sin())
    x, y = cos * du + sin * dv, cos * dv - sin * du
    shape = labels // 2
    mask = torch.empty(n, size, size, dtype=torch.bool)
    for s, inside in enumerate(_SHAPE_MASKS):
        index = (shape == s).nonzero().squeeze(1)
        mask[index] = inside(x[index], y[index])

    freq = math.pi / cycle  # coordinates span 2 per image width
    ta, tb = view(freq * tex_angle.cos()), view(freq * tex_angle.sin())
    on = torch.sin(ta * u + (tb * v + view(phase[:, 0]))) > 0
    across = torch.sin(ta * v - (tb * u - view(phase[:, 1]))) < 0
    pattern = on ^ (across & view(labels % 2 == 1))  # striped, or stripes x stripes = checks

    rgb = (n, 3, 1, 1)
    images = torch.where(pattern.unsqueeze(1), colour_a.view(rgb), colour_b.view(rgb))
    images = torch.where(mask.unsqueeze(1), images, background.view(rgb))
    images += 0.06 * torch.randn(n, 3, size, size, generator=g)
    return images.clamp_(0, 1)


def make_synthetic(split: str, image_size: int = 32) -> ImageArray:
    """The ``split`` ("train": 4096 images, seed 0; "test": 1024, seed 1), balanced classes."""
    seed, n = SPLITS[split]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % len(CLASSES)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = _chunk(stop - start, image_size, labels[start:stop], g)
        images[start:stop] = chunk.mul_(255).round_().to(torch.uint8)
    return ImageArray(images, labels.to(torch.int64), list(CLASSES))
