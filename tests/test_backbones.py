from __future__ import annotations

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.config import BackboneConfig
from selfsup.errors import ConfigError


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "small_resnet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_contract(name: str, channels: int) -> None:
    net = build_backbone(BackboneConfig(name=name), in_channels=channels, image_size=32)
    out = net(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, net.num_features)
    assert net.num_features == (2048 if name == "resnet50" else 512)


def test_small_stem_keeps_resolution() -> None:
    small = build_backbone(BackboneConfig(name="resnet18"), in_channels=3, image_size=32)
    big = build_backbone(
        BackboneConfig(name="resnet18", stem="imagenet"), in_channels=3, image_size=32
    )
    assert small.net.conv1.kernel_size == (3, 3) and small.net.conv1.stride == (1, 1)
    assert isinstance(small.net.maxpool, torch.nn.Identity)
    assert big.net.conv1.kernel_size == (7, 7)
    auto_large = build_backbone(BackboneConfig(name="resnet18"), in_channels=3, image_size=224)
    assert auto_large.net.conv1.kernel_size == (7, 7)


def test_small_resnet_is_configurable_and_small() -> None:
    net = build_backbone(BackboneConfig(name="small_resnet"), in_channels=3, image_size=32)
    assert sum(p.numel() for p in net.parameters()) < 5_000_000
    tiny = build_backbone(
        BackboneConfig(name="small_resnet", depths=[1, 2], widths=[8, 16]),
        in_channels=1,
        image_size=28,
    )
    assert tiny.num_features == 16 and tiny(torch.randn(3, 1, 28, 28)).shape == (3, 16)
    assert len(tiny.features[2]) == 2  # second stage has two blocks


def test_errors_name_valid_choices() -> None:
    with pytest.raises(ConfigError, match="resnet18, resnet34, resnet50, small_resnet"):
        build_backbone(BackboneConfig(name="vgg"), in_channels=3, image_size=32)
    with pytest.raises(ConfigError, match="auto, small, imagenet"):
        build_backbone(BackboneConfig(name="resnet18", stem="tiny"), in_channels=3, image_size=32)
    with pytest.raises(ConfigError, match="same length"):
        build_backbone(
            BackboneConfig(name="small_resnet", depths=[1], widths=[8, 16]),
            in_channels=3,
            image_size=32,
        )
