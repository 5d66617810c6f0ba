"""backbone.weights from checkpoints in the official formats (VICReg, Barlow Twins, DINO,
torchvision): generated state dicts with the official key names load and give the source
model's outputs; a wrong architecture is an error naming the keys and what to set."""

from __future__ import annotations

import argparse

import pytest
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights
from selfsup.checkpoint import save_checkpoint
from selfsup.config import load_config
from selfsup.errors import CheckpointError


def _ours(*overrides: str, size: int = 32) -> torch.nn.Module:
    cfg = load_config(None, list(overrides)).backbone
    torch.manual_seed(123)  # different from the source's init
    return build_backbone(cfg, in_channels=3, image_size=size).eval()


def _source_resnet(arch: str = "resnet18") -> torch.nn.Module:
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    for m in net.modules():  # non-trivial running statistics, so eval outputs depend on them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def _no_fc(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    head = net.fc
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        out = net(x)
    net.fc = head
    return out


RESNET_FORMATS = {
    # facebookresearch/vicreg and barlowtwins resnet50.pth: the backbone alone, no fc
    "vicreg / barlowtwins resnet.pth": lambda net: _no_fc(net),
    # an old torchvision file: no num_batches_tracked
    "torchvision < 0.4.1": lambda net: {
        k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")
    },
    # torchvision's own state dict: fc.* is dropped
    "torchvision": lambda net: net.state_dict(),
    # VICReg / Barlow Twins full checkpoint: DDP-wrapped model with a projector
    "vicreg model.pth": lambda net: {
        "epoch": 3,
        "model": {
            **{f"module.backbone.{k}": v for k, v in _no_fc(net).items()},
            "module.projector.0.weight": torch.zeros(8, 512),
            "module.bn.running_mean": torch.zeros(8),
        },
        "optimizer": {"state": {}, "param_groups": []},
    },
    # DINO dino_resnet50_pretrain.pth: torchvision names, no fc
    "dino resnet pretrain": lambda net: _no_fc(net),
    # DINO full checkpoint: the teacher (not the DDP student) is taken; args is a Namespace
    "dino full checkpoint": lambda net: {
        "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in _no_fc(net).items()},
        "teacher": {
            **{f"backbone.{k}": v for k, v in _no_fc(net).items()},
            "head.mlp.0.weight": torch.zeros(8, 512),
            "head.last_layer.weight_g": torch.ones(16, 1),
        },
        "args": argparse.Namespace(arch="resnet18", lr=0.3),
        "epoch": 10,
    },
}


@pytest.mark.parametrize("fmt", list(RESNET_FORMATS))
def test_resnet_formats_load_and_match_the_source(tmp_path, fmt, capsys) -> None:
    src = _source_resnet()
    path = tmp_path / "ckpt.pth"
    torch.save(RESNET_FORMATS[fmt](src), path)
    ours = _ours("backbone.name=resnet18", "backbone.stem=imagenet")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = ours(x)
    load_backbone_weights(ours, path)
    with torch.no_grad():
        after = ours(x)
    expected = _features(src, x)
    assert not torch.allclose(before, expected, atol=1e-3)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    log = capsys.readouterr().err
    assert "torchvision ResNet keys" in log
    if fmt == "torchvision":
        assert "dropped fc.bias, fc.weight" in log
    if fmt.startswith("dino full"):
        assert "teacher" in log and "head.mlp.0.weight" in log


def _source_vit(size: int = 32) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=size, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10
    )
    return vit.eval()


def test_dino_vit_keys_load_into_our_vit(tmp_path, capsys) -> None:
    src = _source_vit()
    keys = set(src.state_dict())
    assert {
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
        "head.weight",
    } <= keys
    path = tmp_path / "dino_deittiny4.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    ours = _ours("backbone.name=vit_tiny_p4")
    load_backbone_weights(ours, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src.forward_features(x)[:, 0], rtol=1e-4, atol=1e-5)
    assert "dropped head.bias, head.weight" in capsys.readouterr().err


def test_vit_position_embedding_is_resized_to_our_grid(tmp_path) -> None:
    """Weights of a 32-px ViT into a 16-px one: the 8x8 position grid becomes 4x4 by the same
    bicubic interpolation our ViT applies to a 16-px input at 32 px."""
    src = _source_vit()
    path = tmp_path / "vit32.pth"
    torch.save(src.state_dict(), path)
    at32, at16 = _ours("backbone.name=vit_tiny_p4"), _ours("backbone.name=vit_tiny_p4", size=16)
    load_backbone_weights(at32, path)
    load_backbone_weights(at16, path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(at16(x), at32(x), rtol=1e-4, atol=1e-5)


def test_selfsup_state_with_ddp_prefix_loads(tmp_path) -> None:
    src = _ours("backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "s.pt"
    )
    torch.manual_seed(5)
    ours = build_backbone(
        load_config(
            None, ["backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]"]
        ).backbone,
        in_channels=3,
        image_size=32,
    ).eval()
    load_backbone_weights(ours, tmp_path / "s.pt", quiet=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src(x))
    # a selfsup run directory: its last checkpoint's backbone, the projector left out
    model = {f"backbone.{k}": v + 1 for k, v in src.state_dict().items()}
    model["projector.0.weight"] = torch.zeros(4, 16)
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", model=model, step=3)
    load_backbone_weights(ours, tmp_path / "run", quiet=True)
    for key, value in model.items():
        if key.startswith("backbone."):
            assert torch.equal(ours.state_dict()[key.removeprefix("backbone.")], value)


def test_resnet50_weights_into_resnet18_name_the_keys_and_the_fix(tmp_path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(_no_fc(torchvision.models.resnet50(weights=None)), path)
    ours = _ours("backbone.name=resnet18", "backbone.stem=imagenet")
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(ours, path)
    text = str(err.value)
    assert "unexpected net.layer1.0.bn3.bias" in text and "and 194 more (198 keys)" in text
    assert "net.layer1.0.conv1.weight (64, 64, 1, 1) vs ours (64, 64, 3, 3)" in text
    assert "backbone.name=resnet50" in text


def test_imagenet_stem_into_small_stem_says_set_stem(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(_no_fc(_source_resnet()), path)
    ours = _ours("backbone.name=resnet18")  # 32 px: stem=auto picks the small 3x3 stem
    with pytest.raises(CheckpointError, match=r"backbone\.stem=imagenet") as err:
        load_backbone_weights(ours, path)
    assert "net.conv1.weight (64, 3, 7, 7) vs ours (64, 3, 3, 3)" in str(err.value)


def test_vit_of_another_patch_size_names_our_matching_vit(tmp_path) -> None:
    torch.manual_seed(0)
    src = VisionTransformer(
        img_size=32, patch_size=16, embed_dim=384, depth=12, num_heads=6, num_classes=0
    )
    torch.save(src.state_dict(), tmp_path / "dino_vits16.pth")
    ours = _ours("backbone.name=vit_small_p4")
    with pytest.raises(CheckpointError, match=r"backbone\.name=vit_small_p16"):
        load_backbone_weights(ours, tmp_path / "dino_vits16.pth")
    fixed = _ours("backbone.name=vit_small_p16")
    load_backbone_weights(fixed, tmp_path / "dino_vits16.pth", quiet=True)


def test_a_file_without_a_state_dict_lists_its_keys(tmp_path) -> None:
    torch.save({"epoch": 3, "args": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="top-level keys are epoch, args"):
        load_backbone_weights(_ours("backbone.name=resnet18"), tmp_path / "odd.pth")


SMALL = ("backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]")


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.bool, torch.int64])
def test_a_weight_of_a_non_floating_dtype_is_refused_naming_the_key(tmp_path, dtype) -> None:
    """Issue 22.9: int8 and bool tensors in a safetensors file were loaded as weights (cast to
    float by ``load_state_dict``) with no warning."""
    from safetensors.torch import save_file

    ours = _ours(*SMALL, size=16)
    state = ours.state_dict()
    state["features.1.0.conv1.weight"] = torch.ones(8, 8, 3, 3, dtype=dtype)
    save_file(state, tmp_path / "w.safetensors")
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(ours, tmp_path / "w.safetensors")
    assert f"features.1.0.conv1.weight is {str(dtype).removeprefix('torch.')}" in str(err.value)
    assert "float32" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())


@pytest.mark.parametrize(
    ("names", "key", "shape"),
    [
        (SMALL, "features.0.0.weight", (5,)),  # the stem conv: its advice indexed shape[1]
        (SMALL, "features.1.0.conv1.weight", ()),
        (("backbone.name=vit_tiny_p4",), "vit.pos_embed", (7,)),  # resized as (1, N, D)
        (("backbone.name=vit_tiny_p4",), "vit.patch_embed.proj.weight", (192,)),
    ],
)
def test_a_weight_of_another_rank_is_a_checkpoint_error_not_an_index_error(
    tmp_path, names, key, shape
) -> None:
    """Issue 22.9: a 1-D tensor where a conv weight belongs crashed with IndexError while the
    error message was being written."""
    from safetensors.torch import save_file

    ours = _ours(*names, size=16)
    state = ours.state_dict()
    state[key] = torch.zeros(shape)
    state = {k.removeprefix("vit."): v for k, v in state.items()}  # timm / DINO's names
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(ours, tmp_path / "w.safetensors")
    assert f"{key} {shape}" in str(err.value) and "vs ours" in str(err.value)
