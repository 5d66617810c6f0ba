"""The trivial baseline "backbone": the image's own (normalised) pixels, flattened.

kNN and a linear probe on it are the floor any learned representation must clear; results
tables put it next to the pretrained and the random-init backbones (``init: pixels``).
"""

from __future__ import annotations

import torch
from torch import nn


class Pixels(nn.Module):
    """``forward(x) -> x.flatten(1)``: (B, C, H, W) -> (B, C * H * W). No parameters."""

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_features = in_channels * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).float()
