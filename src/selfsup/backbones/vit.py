"""Vision Transformers with small patches for small images, built on timm.

A ViT-Tiny / ViT-Small with 4-px patches (Dosovitskiy et al., ICLR 2021; DeiT sizes, Touvron et
al., 2021) turns a 32-px CIFAR image into 8x8 = 64 tokens and a 28-px Fashion-MNIST image into
7x7 = 49, the usual choice for SSL on small images (solo-learn / DINO CIFAR recipes).

The layers and their initialisation are timm's ``VisionTransformer`` (trunc-normal, std 0.02).
The token pipeline (patch embedding, class token, position embedding) is run here rather than
through ``forward_features`` so that it works the same on timm 0.9 and 1.x, and so that inputs
of another size than ``image_size`` (DINO's local crops) get their position embedding
interpolated bicubically, as in the official DINO ``interpolate_pos_encoding``, without needing
timm's newer ``dynamic_img_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup.backbones.config import BackboneConfig
from selfsup.backbones.resnet import BACKBONES
from selfsup.errors import ConfigError

# name -> (embed_dim, depth, num_heads, patch_size)
VIT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "vit_tiny_p4": (192, 12, 3, 4),
    "vit_small_p4": (384, 12, 6, 4),
    # the published ImageNet sizes, to start from DINO's checkpoints (dino_vits16, dino_vitb8 ...)
    "vit_small_p16": (384, 12, 6, 16),
    "vit_small_p8": (384, 12, 6, 8),
    "vit_base_p16": (768, 12, 12, 16),
    "vit_base_p8": (768, 12, 12, 8),
}


def attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention of a timm ``Attention`` module on tokens ``x`` (B, N, D) -> (B, H, N, N).

    Recomputed from ``attn.qkv`` and ``attn.scale`` because timm may run fused SDPA, which never
    materialises the matrix (so a forward hook has nothing to capture). Dropout is not applied.
    """
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def resize_pos_embed(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A ViT position embedding (1, 1 + g * g, D) for an h x w patch grid: (1, 1 + h * w, D),
    the CLS entry kept, the g x g patch grid resized bicubically as DINO's
    ``interpolate_pos_encoding`` does (facebookresearch/dino vision_transformer.py
    @7c446df:174-194): by the scale factor ``(h + 0.1) / g`` (resp. w) rather than to the size
    (h, w). The 0.1 (line 186, dino issue #8) makes ``floor(g * factor)`` come out as h despite
    float rounding; the sampling positions then follow the factor, ``(i + 0.5) * g / (h + 0.1)
    - 0.5``, not ``(i + 0.5) * g / h - 0.5`` as a resize to the size (timm's
    ``resample_abs_pos_embed``, DINOv2) would place them. Computed in float32."""
    n = pos.shape[1] - 1
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"a position embedding of {n} patches is not a square grid")
    d = pos.shape[-1]
    grid = pos[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic")
    assert grid.shape[-2:] == (h, w), "the 0.1 offset keeps floor(g * factor) == side"
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, d).to(pos.dtype)
    return torch.cat([pos[:, :1], grid], dim=1)


class ViT(nn.Module):
    """A timm ViT without classifier: ``forward(x) -> (B, num_features)``, the final-normed CLS.

    Also ``forward_tokens(x) -> (B, 1 + N, D)`` and ``last_attention(x) -> (B, heads, 1 + N,
    1 + N)`` for attention maps, N = (H / patch) * (W / patch), and ``forward_last_blocks``,
    the linear probes' feature.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        in_channels: int,
        image_size: int,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(
                f"a ViT with {patch_size}-px patches needs an image size divisible by "
                f"{patch_size}, got {image_size}; resize the views (views.size=...) or the "
                f"images (data.image_size=...) to a multiple of {patch_size}"
            )
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            class_token=True,
            global_pool="token",
        )
        self.num_features: int = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.grid = image_size // patch_size

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embedding (1, 1 + h * w, D), resized as DINO does (:func:`resize_pos_embed`)
        for an h x w patch grid other than the one it was built for."""
        pos = self.vit.pos_embed
        if (h, w) == (self.grid, self.grid):
            return pos
        return resize_pos_embed(pos, h, w)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> input tokens (B, 1 + N, D) of the first block."""
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(
                f"ViT input side lengths must be multiples of the patch size {p}, "
                f"got {tuple(x.shape[-2:])}"
            )
        pe = self.vit.patch_embed
        x = pe.proj(x)  # (B, D, h, w)
        h, w = x.shape[-2:]
        x = pe.norm(x.flatten(2).transpose(1, 2))
        cls = self.vit.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(h, w)
        return self.vit.norm_pre(self.vit.pos_drop(x))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> final-normed tokens (B, 1 + N, D), CLS first."""
        return self.vit.norm(self.vit.blocks(self._embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]

    def forward_last_blocks(self, x: torch.Tensor, n: int, avgpool: bool = False) -> torch.Tensor:
        """DINO's linear-evaluation feature (B, (n + avgpool) * D): the CLS tokens of the last
        ``n`` blocks, each through the final norm, concatenated in block order
        (facebookresearch/dino vision_transformer.py @7c446df:225-233 ``get_intermediate_layers``,
        eval_linear.py:166-167; ``--n_last_blocks`` 4 for ViT-Small, 1 for ViT-Base, :256),
        and with ``avgpool`` the mean of the last block's normed patch tokens after them
        (``--avgpool_patchtokens``, :168-170, where it is interleaved and works for n = 1 only;
        the order is immaterial to a linear classifier). n = 1 without avgpool is ``forward``."""
        blocks = list(self.vit.blocks)
        if not 1 <= n <= len(blocks):
            raise ValueError(f"n must be in 1..{len(blocks)} (this ViT's blocks), got {n}")
        tokens, outs = self._embed(x), []
        for i, block in enumerate(blocks):
            tokens = block(tokens)
            if i >= len(blocks) - n:
                outs.append(self.vit.norm(tokens))
        feats = [t[:, 0] for t in outs]
        if avgpool:
            feats.append(outs[-1][:, 1:].mean(dim=1))
        return torch.cat(feats, dim=-1)

    @torch.no_grad()
    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention of the last block (B, heads, 1 + N, 1 + N); row 0 is the CLS query,
        whose attention to the patches is DINO's attention map."""
        blocks = self.vit.blocks
        tokens = self._embed(x)
        for block in blocks[:-1]:
            tokens = block(tokens)
        last = blocks[-1]
        return attention_probs(last.attn, last.norm1(tokens))


def _vit_builder(name: str) -> Callable[..., nn.Module]:
    dim, depth, heads, patch = VIT_SIZES[name]

    def build(cfg: BackboneConfig, *, in_channels: int, image_size: int) -> nn.Module:
        return ViT(
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            patch_size=patch,
            in_channels=in_channels,
            image_size=image_size,
        )

    build.__doc__ = (
        f"ViT (timm) with width {dim}, depth {depth}, {heads} heads, {patch}-px patches."
    )
    return build


for _name in VIT_SIZES:
    BACKBONES.register(_name)(_vit_builder(_name))
