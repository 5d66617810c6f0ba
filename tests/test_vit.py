from __future__ import annotations

import math

import pytest
import torch

from selfsup.backbones import backbone_names, build_backbone
from selfsup.backbones.vit import ViT, attention_probs
from selfsup.config import BackboneConfig
from selfsup.errors import ConfigError


def _vit(channels: int = 3, size: int = 32, name: str = "vit_tiny_p4") -> ViT:
    torch.manual_seed(0)
    net = build_backbone(BackboneConfig(name=name), in_channels=channels, image_size=size)
    assert isinstance(net, ViT)
    return net.eval()


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28), (1, 32), (3, 28)])
def test_contract(channels: int, size: int) -> None:
    net = _vit(channels, size)
    x = torch.randn(2, channels, size, size)
    n = (size // 4) ** 2
    assert net.num_features == 192
    out = net(x)
    assert out.shape == (2, 192) and torch.isfinite(out).all()
    tokens = net.forward_tokens(x)
    assert tokens.shape == (2, 1 + n, 192)
    torch.testing.assert_close(out, tokens[:, 0])


def test_registered_and_unknown_names() -> None:
    assert {"vit_tiny_p4", "vit_small_p4"} <= set(backbone_names())
    with pytest.raises(ConfigError, match=r"valid choices: .*vit_tiny_p4"):
        build_backbone(BackboneConfig(name="vit_huge"), in_channels=3, image_size=32)


def test_parameter_count() -> None:
    net = _vit()
    # 12 blocks x 444,864 + patch embed 9,408 + pos 65 x 192 + cls 192 + final norm 384
    assert sum(p.numel() for p in net.parameters()) == 5_360_832
    assert net.vit.pos_embed.std() < 0.05  # timm's trunc-normal(0.02) init, not randn


def test_matches_timm_forward_features() -> None:
    net = _vit()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net.forward_tokens(x), net.vit.forward_features(x))


def test_last_attention_shape_and_rows() -> None:
    net = _vit(1, 28)
    attn = net.last_attention(torch.randn(2, 1, 28, 28))
    assert attn.shape == (2, 3, 50, 50)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 50))


def test_recomputed_attention_reproduces_timm_block() -> None:
    """attn @ v -> proj with our matrix equals timm's attention output, so the matrix is the one
    the (possibly fused SDPA) block really uses; then the whole last block matches too."""
    net = _vit()
    x = torch.randn(2, 3, 32, 32)
    blocks = net.vit.blocks
    tokens = net._embed(x)
    for block in blocks[:-1]:
        tokens = block(tokens)
    last = blocks[-1]
    y = last.norm1(tokens)
    probs = attention_probs(last.attn, y)
    torch.testing.assert_close(probs, net.last_attention(x))

    b, n, d = y.shape
    a = last.attn
    v = a.qkv(y).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)[2]
    ours = a.proj((probs @ v).transpose(1, 2).reshape(b, n, d))
    torch.testing.assert_close(ours, a(y), atol=1e-5, rtol=1e-4)
    after = tokens + ours
    after = after + last.mlp(last.norm2(after))
    torch.testing.assert_close(net.vit.norm(after), net.forward_tokens(x), atol=1e-5, rtol=1e-4)


def test_other_input_size_interpolates_position_embedding() -> None:
    net = _vit()  # built for 32 px; a 16-px local crop gives 4x4 patches
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 192)
    assert net.last_attention(torch.randn(1, 3, 16, 16)).shape == (1, 3, 17, 17)
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        net(torch.randn(1, 3, 30, 30))


def dino_interpolate_pos_encoding(pos_embed: torch.Tensor, height: int, width: int, patch: int):
    """facebookresearch/dino vision_transformer.py @7c446df:174-194 (``interpolate_pos_encoding``)
    transcribed for an input of ``height`` x ``width`` px: the patch grid resized bicubically by
    a scale factor, each target side + 0.1 over sqrt(N) (its ``w``, ``h`` are the input's dims
    2 and 3, prepare_tokens:197)."""
    n = pos_embed.shape[1] - 1
    npatch = (height // patch) * (width // patch)
    if npatch == n and height == width:
        return pos_embed
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = height // patch + 0.1, width // patch + 0.1
    side = int(math.sqrt(n))
    patch_pos_embed = torch.nn.functional.interpolate(
        patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (12, 12), (48, 48), (12, 20), (32, 32)])
def test_position_embedding_resize_is_dinos(height: int, width: int) -> None:
    """Other input sizes (DINO's local crops, evaluation at another size) get the position
    embedding of DINO's ``interpolate_pos_encoding`` (scale factor (side + 0.1) / sqrt(N)), not
    a resize to the target size, whose sampling positions differ."""
    net = _vit()  # 8 x 8 grid of 4-px patches
    with torch.no_grad():
        net.vit.pos_embed.normal_()  # a grid with structure at every scale
        ours = net._pos_embed(height // 4, width // 4)
    expected = dino_interpolate_pos_encoding(net.vit.pos_embed.detach(), height, width, 4)
    assert ours.shape == expected.shape == (1, 1 + (height // 4) * (width // 4), 192)
    torch.testing.assert_close(ours, expected, rtol=0.0, atol=1e-6)


def dino_linear_feature(net: ViT, x: torch.Tensor, n: int, avgpool: bool) -> torch.Tensor:
    """DINO's linear-evaluation input, transcribed: ``get_intermediate_layers`` (the tokens of
    the last ``n`` blocks, each through the final norm; facebookresearch/dino
    vision_transformer.py @7c446df:225-233), their CLS tokens concatenated and, with
    ``avgpool``, the mean patch token of the last one interleaved (eval_linear.py:166-170)."""
    tokens, output = net._embed(x), []
    blocks = list(net.vit.blocks)
    for i, blk in enumerate(blocks):
        tokens = blk(tokens)
        if len(blocks) - i <= n:
            output.append(net.vit.norm(tokens))
    out = torch.cat([t[:, 0] for t in output], dim=-1)
    if avgpool:
        mean = torch.mean(output[-1][:, 1:], dim=1)
        out = torch.cat((out.unsqueeze(-1), mean.unsqueeze(-1)), dim=-1).reshape(len(x), -1)
    return out


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_last_blocks_feature_is_dinos_linear_evaluation_input(n: int) -> None:
    net = _vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = net.forward_last_blocks(x, n)
        torch.testing.assert_close(ours, dino_linear_feature(net, x, n, False))
        assert ours.shape == (2, n * 192)
        torch.testing.assert_close(ours[:, -192:], net(x))  # the last block's: the CLS feature


def test_last_blocks_feature_with_average_pooled_patch_tokens() -> None:
    """``--avgpool_patchtokens`` (DINO's ViT-Base setting, with n = 1): the same numbers, the
    mean patch token after the CLS tokens rather than interleaved with them (DINO's
    ``reshape`` only works for n = 1; a linear classifier does not see the order)."""
    net = _vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        official = dino_linear_feature(net, x, 1, True)  # (cls_0, mean_0, cls_1, mean_1, ...)
        ours = net.forward_last_blocks(x, 1, avgpool=True)
        torch.testing.assert_close(ours, torch.cat([official[:, 0::2], official[:, 1::2]], 1))
        four = net.forward_last_blocks(x, 4, avgpool=True)
        assert four.shape == (2, 5 * 192)
        torch.testing.assert_close(four[:, -192:], ours[:, -192:])


@pytest.mark.parametrize("n", [0, 13])
def test_last_blocks_out_of_range_names_the_depth(n: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.12"):
        _vit().forward_last_blocks(torch.randn(1, 3, 32, 32), n)


def test_gradients_reach_every_parameter() -> None:
    net = _vit(1, 28).train()
    net(torch.randn(2, 1, 28, 28)).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_bad_image_size_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"divisible by 4, got 30.*views\.size"):
        build_backbone(BackboneConfig(name="vit_tiny_p4"), in_channels=3, image_size=30)


def test_vit_small() -> None:
    net = _vit(3, 32, "vit_small_p4")
    assert net.num_features == 384 and net(torch.randn(1, 3, 32, 32)).shape == (1, 384)
