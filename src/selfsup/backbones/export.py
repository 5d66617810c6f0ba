"""A backbone as another library's model: ``selfsup export --format torchvision|timm``.

selfsup's own export keeps its keys (``net.conv1.weight``: a torchvision ResNet wrapped in a
module; ``vit.blocks.0...``: a timm ViT wrapped likewise). For another library the keys become
that library's (the wrapper's prefix removed) and the state dict loads *strictly* into the model
the metadata names, built without a classifier: torchvision's ``resnet18()`` with ``fc``
replaced by ``nn.Identity()``; ``timm.create_model(name, num_classes=0, ...)``. A backbone
with no counterpart there is refused, with the reason and what to do instead:

- the small stem (3x3 stride-1 ``conv1``, no max-pool: what ``backbone.stem=auto`` picks for
  images of 64 px or less) is neither library's ResNet stem;
- ``small_resnet`` exists only here;
- torchvision's ResNets take 3 channels (timm's take ``in_chans``);
- torchvision has no ViT with small patches (timm builds one from ``patch_size``/``img_size``).

:func:`architecture` is the resolved architecture every export records (the stem actually
built, the blocks per stage, the feature width), where the config says only ``stem: auto``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from selfsup.backbones.config import BackboneConfig
from selfsup.backbones.resnet import use_small_stem
from selfsup.errors import CheckpointError

LIBRARIES = ("torchvision", "timm")


@dataclass
class LibraryExport:
    """A state dict in ``library``'s keys and how to build the model it loads into."""

    library: str
    state: dict[str, torch.Tensor]
    model: str  # the constructor call, e.g. timm.create_model("resnet18", num_classes=0)
    load: str  # a snippet that builds the model and loads the file strictly


def architecture(cfg: BackboneConfig, backbone: nn.Module, in_channels: int, image_size: int):
    """The architecture as built (not as configured): name, stem, blocks per stage, widths,
    input channels and size, feature width."""
    arch = {"name": cfg.name, "in_channels": in_channels, "image_size": image_size}
    arch["num_features"] = int(getattr(backbone, "num_features", 0)) or None
    if cfg.name == "vit_tiny_p4":
        vit = backbone.vit
        arch.update(patch_size=backbone.patch_size, depth=len(vit.blocks), heads=backbone.num_heads)
        return arch
    arch["stem"] = "small" if use_small_stem(cfg.stem, image_size) else "imagenet"
    net = getattr(backbone, "net", None)
    if net is not None:  # torchvision's ResNet: layer1 .. layer4
        layers = [getattr(net, f"layer{i}") for i in range(1, 5)]
        arch["depths"] = [len(layer) for layer in layers]
        arch["widths"] = [layer[-1].conv1.in_channels for layer in layers]
    else:
        arch["depths"], arch["widths"] = list(cfg.depths), list(cfg.widths)
    return arch


def to_library(
    library: str,
    cfg: BackboneConfig,
    state: dict[str, torch.Tensor],
    *,
    in_channels: int,
    image_size: int,
) -> LibraryExport:
    """``state`` (a selfsup backbone state dict of ``cfg``) as ``library``'s model, or a
    :class:`CheckpointError` saying why that library has no such model."""
    if library not in LIBRARIES:
        raise CheckpointError(f"unknown library {library!r}; valid: {', '.join(LIBRARIES)}")
    if cfg.name == "small_resnet":
        raise _refused(library, cfg.name, "small_resnet is selfsup's own network")
    if cfg.name == "vit_tiny_p4":
        return _vit(library, state, in_channels, image_size)
    if use_small_stem(cfg.stem, image_size):
        raise _refused(
            library,
            cfg.name,
            f"its small stem (3x3 stride-1 conv1 and no max-pool, which backbone.stem="
            f"{cfg.stem} chose for {image_size}-px images) is not {library}'s ResNet stem; "
            "pretrain with backbone.stem=imagenet for a backbone that library can load",
        )
    if library == "torchvision" and in_channels != 3:
        raise _refused(
            library,
            cfg.name,
            f"torchvision's {cfg.name} takes 3 input channels and this one takes "
            f"{in_channels}; --format timm builds it with in_chans={in_channels}",
        )
    keys = {k.removeprefix("net."): v for k, v in state.items() if not k.startswith("net.fc.")}
    if library == "torchvision":
        model = f"torchvision.models.{cfg.name}(); model.fc = torch.nn.Identity()"
        load = (
            f"model = {model}\nmodel.load_state_dict(torch.load(PATH, weights_only=True))  # strict"
        )
    else:
        model = f'timm.create_model("{cfg.name}", num_classes=0, in_chans={in_channels})'
        load = (
            f"model = {model}\nmodel.load_state_dict(safetensors.torch.load_file(PATH))  # strict"
        )
    return LibraryExport(library, keys, model, load)


def _vit(
    library: str, state: dict[str, torch.Tensor], in_channels: int, image_size: int
) -> LibraryExport:
    if library == "torchvision":
        raise _refused(
            library,
            "vit_tiny_p4",
            "torchvision has no ViT-Tiny with 4-px patches; --format timm builds it",
        )
    patch = state["vit.patch_embed.proj.weight"].shape[-1]
    model = (
        f'timm.create_model("vit_tiny_patch16_224", patch_size={patch}, img_size={image_size}, '
        f"in_chans={in_channels}, num_classes=0)"
    )
    load = f"model = {model}\nmodel.load_state_dict(safetensors.torch.load_file(PATH))  # strict"
    keys = {k.removeprefix("vit."): v for k, v in state.items()}
    return LibraryExport(library, keys, model, load)


def _refused(library: str, name: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"cannot export this {name} for {library}: {why}. `selfsup export --format selfsup` "
        "writes it for selfsup (backbone.weights=...)"
    )
