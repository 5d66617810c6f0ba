"""ResNets: torchvision's ResNet-18/34/50 definitions and a configurable small ResNet.

For small images (28-64 px) the ImageNet stem (7x7 stride-2 conv + max-pool) throws away most of
the resolution before the first block, so the "small" stem replaces it with a 3x3 stride-1 conv
and no max-pool, as in the CIFAR variants of SimCLR / solo-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from selfsup.backbones.config import BackboneConfig
from selfsup.errors import ConfigError
from selfsup.fields import check_choice, choices_of
from selfsup.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


def use_small_stem(stem: str, image_size: int) -> bool:
    check_choice("backbone.stem", stem, choices_of(BackboneConfig, "stem"))
    return stem == "small" or (stem == "auto" and image_size <= 64)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet without its classifier: ``forward(x) -> (B, num_features)``."""

    def __init__(
        self, arch: str, *, in_channels: int, small_stem: bool, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
        if small_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.num_features: int = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallResNet(nn.Module):
    """A ResNet of BasicBlocks with configurable stage depths and widths.

    depths [2, 1, 1, 1] with widths 64-128-256-512 has about 4.9M parameters. Each stage after
    the first halves the resolution. ``forward(x) -> (B, widths[-1])`` after global average pooling.
    """

    def __init__(
        self,
        depths: list[int],
        widths: list[int],
        *,
        in_channels: int,
        small_stem: bool,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(widths) or not depths or min(depths) < 1 or min(widths) < 1:
            raise ConfigError(
                "backbone.depths and backbone.widths must be non-empty lists of positive "
                f"integers of the same length, got depths={depths} widths={widths}"
            )
        if small_stem:
            stem = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        else:
            stem = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)]
        stem += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        if not small_stem:
            stem.append(nn.MaxPool2d(3, 2, 1))
        layers: list[nn.Module] = [nn.Sequential(*stem)]
        in_w = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(depth):
                s = stride if b == 0 else 1
                down = None
                if s != 1 or in_w != width:
                    down = nn.Sequential(
                        nn.Conv2d(in_w, width, 1, s, bias=False), nn.BatchNorm2d(width)
                    )
                blocks.append(BasicBlock(in_w, width, stride=s, downsample=down))
                in_w = width
            layers.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # torchvision's rule: each block's last BN weight starts at 0
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    def build(cfg: BackboneConfig, *, in_channels: int, image_size: int) -> nn.Module:
        small = use_small_stem(cfg.stem, image_size)
        return TorchvisionResNet(
            arch,
            in_channels=in_channels,
            small_stem=small,
            zero_init_residual=cfg.zero_init_residual,
        )

    build.__doc__ = f"torchvision {arch} with the stem chosen by backbone.stem."
    return build


for _arch in ("resnet18", "resnet34", "resnet50"):
    BACKBONES.register(_arch)(_torchvision_builder(_arch))


@BACKBONES.register("small_resnet")
def build_small_resnet(cfg: BackboneConfig, *, in_channels: int, image_size: int) -> nn.Module:
    small = use_small_stem(cfg.stem, image_size)
    return SmallResNet(
        cfg.depths,
        cfg.widths,
        in_channels=in_channels,
        small_stem=small,
        zero_init_residual=cfg.zero_init_residual,
    )
