"""Attention maps of a ViT run (``selfsup viz attention RUN_DIR``), as in DINO (Caron et al.,
ICCV 2021, Fig. 1; facebookresearch/dino ``visualize_attention.py``): the attention of the CLS
token over the patches in the last block, one map per head, upsampled by the patch size
(nearest, as the official script does) and drawn over the image.

Each map is the CLS row of the last block's softmax attention without its CLS -> CLS entry,
renormalised to sum to 1 over the patches, so heads compare on one scale; the mean column
averages the heads' maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.analysis.encoder import Encoder
from selfsup.analysis.plots import pyplot, save_figure
from selfsup.backbones.vit import VIT_SIZES, ViT
from selfsup.data.array import seeded_subset
from selfsup.data.views import eval_view, make_views
from selfsup.errors import SelfsupError
from selfsup.features import match_channels
from selfsup.layout import RunDir


def cls_attention(vit: ViT, x: torch.Tensor) -> torch.Tensor:
    """Normalised views (B, C, H, W) -> the CLS token's attention over the patches in the last
    block, (B, heads, H / patch, W / patch), each map summing to 1."""
    attn = vit.last_attention(x)[:, :, 0, 1:].float()  # (B, heads, N): CLS query, patch keys
    attn = attn / attn.sum(dim=-1, keepdim=True)
    h, w = x.shape[-2] // vit.patch_size, x.shape[-1] // vit.patch_size
    return attn.reshape(*attn.shape[:2], h, w)


def require_vit(enc: Encoder) -> ViT:
    if not isinstance(enc.backbone, ViT):
        raise SelfsupError(
            f"attention maps need a ViT backbone ({', '.join(VIT_SIZES)}); {enc.run_dir} "
            f"has {enc.cfg.backbone.name}"
        )
    return enc.backbone


def attention_figure(
    enc: Encoder,
    *,
    images: int = 4,
    dataset: str | None = None,
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Draw ``RUN_DIR/plots/attention.png`` for ``images`` seeded images of ``split``: rows =
    images, columns = the image, the mean over heads, each head."""
    if images < 1:
        raise SelfsupError(f"--images must be at least 1, got {images}")
    vit = require_vit(enc)
    data = seeded_subset(enc.load_split(dataset, split), images, seed)
    mean, std = enc.normalisation(data)
    batch = match_channels(data.images, enc.channels)
    spec = eval_view(enc.cfg.views.size, mean, std, whole=True)  # the maps cover the image
    device = next(vit.parameters()).device
    (x,) = make_views(batch.to(device), [spec], torch.Generator(device=device).manual_seed(0))
    maps = cls_attention(vit, x).cpu()
    up = F.interpolate(maps, scale_factor=vit.patch_size, mode="nearest")
    path = RunDir(enc.run_dir).plot("attention.png")
    return draw_attention(data.images, up, path, title=f"{enc.which} {enc.cfg.backbone.name}")


def draw_attention(
    images: torch.Tensor, maps: torch.Tensor, path: Path, *, title: str = ""
) -> Path:
    """uint8 images (B, C, H, W) and maps (B, heads, h, w) -> a grid PNG at ``path``."""
    plt = pyplot()
    b, heads = maps.shape[:2]
    cols = 2 + heads
    fig, axes = plt.subplots(b, cols, figsize=(1.2 * cols, 1.25 * b + 0.5), squeeze=False)
    extent = (0, images.shape[-1], images.shape[-2], 0)

    def show(ax: Any, image: torch.Tensor, overlay: torch.Tensor | None, name: str) -> None:
        img = image.permute(1, 2, 0).numpy()
        ax.imshow(
            img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255, extent=extent
        )
        if overlay is not None:
            ax.imshow(overlay.numpy(), cmap="inferno", alpha=0.6, extent=extent)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=6)

    for r in range(b):
        show(axes[r, 0], images[r], None, "image")
        show(axes[r, 1], images[r], maps[r].mean(0), "mean")
        for h in range(heads):
            show(axes[r, 2 + h], images[r], maps[r, h], f"head {h}")
    fig.suptitle(f"CLS attention over patches, last block ({title})", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
