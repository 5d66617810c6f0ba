"""The ``backbone`` section of a config: which network, its stem and stages, its start."""

from __future__ import annotations

from dataclasses import dataclass

from selfsup.errors import ConfigError
from selfsup.fields import AT_LEAST_1, Range, setting


def is_vit(name: str) -> bool:
    """Whether the backbone named ``name`` is one of the ViTs (``backbones/vit.py``, every
    name ``vit_*``): a run-level fact, known without building the network."""
    return name.startswith("vit_")


@dataclass
class BackboneConfig:
    name: str = "resnet18"  # resnet18 | resnet34 | resnet50 | small_resnet | vit_tiny_p4
    # auto (small stem for <= 64 px) | small | imagenet
    stem: str = setting("auto", choices=("auto", "small", "imagenet"))
    # small_resnet only: blocks and channels per stage
    depths: list[int] = setting(
        factory=lambda: [2, 1, 1, 1],
        valid=AT_LEAST_1,
        what="blocks per stage of small_resnet",
        arch=True,
    )
    widths: list[int] = setting(
        factory=lambda: [64, 128, 256, 512],
        valid=AT_LEAST_1,
        what="channels per stage of small_resnet",
        arch=True,
    )
    # ResNets: the last BN of each residual block starts at 0 (each block starts as the
    # identity), as facebookresearch/vicreg main_vicreg.py and barlowtwins main.py build theirs
    # (zero_init_residual=True); torchvision's and DINO's default is False
    zero_init_residual: bool = False
    # start from these weights: a .safetensors file (`selfsup export`), a plain state dict, a
    # selfsup checkpoint or run directory; None: random init
    weights: str | None = None
    # dropout before the classifier head of the supervised baseline and of the fine-tuned
    # evaluations (finetune, pseudo-label students and scratch teacher); 0 turns it off
    dropout: float = setting(
        0.0, valid=Range(0, 1, hi_open=True), what="the share of features dropped; 0 is off"
    )

    def check(self) -> None:
        if self.name == "small_resnet" and (
            len(self.depths) != len(self.widths) or not self.depths
        ):
            raise ConfigError(
                f"backbone.depths={self.depths} and backbone.widths={self.widths} differ in "
                "length or are empty: small_resnet takes one depth and one width per stage; set "
                "both, e.g. backbone.depths=[2,1,1,1] backbone.widths=[64,128,256,512]"
            )
