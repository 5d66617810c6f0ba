"""Extract frozen-backbone features once, for every evaluation that needs them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.data.view_ops import GRAY_WEIGHTS
from selfsup.data.views import eval_view, make_views
from selfsup.errors import ConfigError
from selfsup.precision import amp_dtype, autocast_for


def input_channels(backbone: nn.Module) -> int:
    """The channel count the backbone's first convolution / patch embedding expects (or its
    ``in_channels`` attribute, for backbones without a convolution such as ``Pixels``)."""
    if isinstance(getattr(backbone, "in_channels", None), int):
        return backbone.in_channels
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("cannot tell the input channels of a backbone without a Conv2d")


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, channels, H, W): gray repeated to RGB, or RGB to luma
    (torchvision's weights, ``GRAY_WEIGHTS``), so a backbone can be evaluated on a dataset
    with another channel count (transfer)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        w = torch.tensor(GRAY_WEIGHTS, device=images.device).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """Pooled features (N, D) float32 of uint8 ``images`` (N, C, H, W), resized to ``size`` and
    normalised, with the backbone in eval mode (batch-norm running statistics), under the
    run's ``train.precision`` (bf16 or fp16 autocast where it trained in it: the same decision
    as the loop, :mod:`selfsup.precision`; inference needs no loss scaling, and a feature that
    overflows fp16 is refused downstream as non-finite, with advice)."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    channels = input_channels(backbone)
    spec = eval_view(size, mean, std)
    gen = torch.Generator(device=device).manual_seed(0)
    autocast = autocast_for(device, amp_dtype(precision, device))
    channels_last = device.type == "cuda"  # as the training step (bf16 convolutions on CUDA)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    out = []
    for start in range(0, len(images), batch_size):
        batch = match_channels(images[start : start + batch_size].to(device), channels)
        (x,) = make_views(batch, [spec], gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out.append(backbone(x).float())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(backbone, "num_features", 0))


def classifier_logits(
    backbone: nn.Module, head: nn.Module, images: torch.Tensor, **kw
) -> torch.Tensor:
    """Logits (N, K) of ``head(backbone(x))`` on the evaluation view of uint8 ``images`` (their
    channels matched to the backbone's): the one way selfsup scores a classifier (a run's own
    head, a pseudo-label teacher, a trained evaluation). ``kw`` as :func:`extract_features`."""
    images = match_channels(images, input_channels(backbone))
    return extract_features(nn.Sequential(backbone, head), images, **kw)


class LastBlocks(nn.Module):
    """A ViT seen by a linear probe: ``forward(x) -> (B, (n + avgpool) * D)``, its
    ``forward_last_blocks(x, n, avgpool)`` (DINO eval_linear.py's feature), with
    ``num_features`` to match, so a probe trains and scores on it as on any backbone."""

    def __init__(self, vit: nn.Module, n: int, avgpool: bool) -> None:
        super().__init__()
        depth = len(vit.vit.blocks)
        if not 1 <= n <= depth:
            raise ConfigError(
                f"eval.vit_last_blocks={n}, but this ViT has {depth} blocks; give 1..{depth} "
                "(DINO's linear evaluation: 4 for ViT-Small, 1 for ViT-Base)"
            )
        self.vit, self.n, self.avgpool = vit, n, avgpool
        self.num_features: int = vit.num_features * (n + int(avgpool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_last_blocks(x, self.n, self.avgpool)


def probe_backbone(backbone: nn.Module, last_blocks: int, avgpool: bool) -> nn.Module:
    """The network a linear probe reads (``eval.vit_last_blocks`` / ``eval.vit_avgpool``): a
    ViT's last ``last_blocks`` CLS tokens (:class:`LastBlocks`), or the backbone itself where
    that is its own feature (a ViT's final CLS: n = 1 without avgpool) or it is no ViT
    (ResNets, raw pixels: their pooled feature, as DINO's eval_linear.py ``model(inp)``)."""
    if not hasattr(backbone, "forward_last_blocks") or (last_blocks, avgpool) == (1, False):
        return backbone
    return LastBlocks(backbone, last_blocks, avgpool)


def run_feature_kw(cfg, device: torch.device) -> dict:
    """How a run's backbone sees images (``cfg``: its ``Config``): its view size,
    normalisation and precision on ``device``, the keyword arguments of
    :func:`extract_features`."""
    return dict(
        size=cfg.views.size,
        mean=cfg.data.mean,
        std=cfg.data.std,
        device=device,
        precision=cfg.train.precision,
    )


def run_logits(
    method: nn.Module, cfg, images: torch.Tensor, *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """A supervised / joint run's own classifier (``method.head``) on ``images``, with the run's
    view size, normalisation and precision (``cfg``: its ``Config``)."""
    kw = run_feature_kw(cfg, device)
    return classifier_logits(method.backbone, method.head, images, batch_size=batch_size, **kw)
