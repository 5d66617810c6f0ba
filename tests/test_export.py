"""``selfsup export --format torchvision|timm`` (issue #25.4): a run's backbone as a state dict
that loads strictly into the named library's model and computes the same features; a backbone
with no counterpart there is refused with the reason; every export records the architecture
as built (not ``stem: auto``, not small_resnet's default depths for a ResNet-18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

from selfsup.backbones import build_backbone
from selfsup.backbones.export import architecture, to_library
from selfsup.cli import main
from selfsup.config import BackboneConfig
from selfsup.errors import CheckpointError
from selfsup.rundir import load_run
from tiny import TINY

RESNET = ["backbone.name=resnet18", "data.image_size=32", "data.limit=64", "train.epochs=1"]
RESNET += ["eval.protocols=[]", "eval.compare_random=false", "eval.compare_pixels=false"]


def pretrain(out: Path, *extra: str) -> Path:
    assert (
        main(["pretrain", "--config", "defaults", "--out", str(out), *TINY, *RESNET, *extra]) == 0
    )
    return out


@pytest.fixture(scope="module")
def imagenet_stem_run(tmp_path_factory) -> Path:
    return pretrain(tmp_path_factory.mktemp("export") / "run", "backbone.stem=imagenet")


def ours(run: Path) -> torch.nn.Module:
    return load_run(run)[1].backbone.eval().float()


def test_torchvision_export_loads_strictly_and_gives_the_same_features(imagenet_stem_run, capsys):
    run = imagenet_stem_run
    assert main(["export", str(run), "--format", "torchvision"]) == 0
    said = capsys.readouterr().out
    path = run / "export" / "backbone-torchvision.pth"
    assert "torchvision.models.resnet18()" in said and str(path) in said
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(path, weights_only=True))  # strict: every key, no more
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ours(run)(x), atol=1e-5)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    arch = meta["architecture"]
    assert arch["stem"] == "imagenet" and arch["depths"] == [2, 2, 2, 2]
    assert arch["widths"] == [64, 128, 256, 512] and arch["num_features"] == 512
    assert meta["format"] == "torchvision-state-dict" and meta["mean"] and meta["std"]


def test_timm_export_loads_strictly_and_gives_the_same_features(imagenet_stem_run) -> None:
    run = imagenet_stem_run
    assert main(["export", str(run), "--format", "timm"]) == 0
    path = run / "export" / "backbone-timm.safetensors"
    model = timm.create_model("resnet18", num_classes=0, in_chans=3)
    model.load_state_dict(load_file(str(path)))  # strict
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ours(run)(x), atol=1e-5)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert "timm.create_model" in json.loads(meta["model"])


def test_the_small_stem_is_refused_naming_why_and_nothing_is_written(tmp_path, capsys) -> None:
    run = pretrain(tmp_path / "run")  # stem auto: the small stem at 32 px
    for library in ("torchvision", "timm"):
        assert main(["export", str(run), "--format", library]) == 2
        err = capsys.readouterr().err
        assert "small stem" in err and "backbone.stem=imagenet" in err and "--format selfsup" in err
    assert not list(run.glob("export/backbone-*"))
    # selfsup's own export records the stem and blocks as built
    assert main(["export", str(run)]) == 0
    with safe_open(str(run / "export" / "backbone.safetensors"), "pt") as f:
        arch = json.loads(f.metadata()["architecture"])
    assert arch["stem"] == "small" and arch["depths"] == [2, 2, 2, 2]


def state_of(cfg: BackboneConfig, channels: int, size: int) -> tuple[torch.nn.Module, dict]:
    net = build_backbone(cfg, in_channels=channels, image_size=size).eval()
    return net, net.state_dict()


def test_one_channel_resnet_goes_to_timm_not_torchvision() -> None:
    cfg = BackboneConfig(name="resnet18", stem="imagenet")
    net, state = state_of(cfg, 1, 32)
    with pytest.raises(CheckpointError, match=r"3 input channels.*--format timm"):
        to_library("torchvision", cfg, state, in_channels=1, image_size=32)
    lib = to_library("timm", cfg, state, in_channels=1, image_size=32)
    model = timm.create_model("resnet18", num_classes=0, in_chans=1)
    model.load_state_dict(lib.state)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), net(x), atol=1e-5)


def test_vit_tiny_p4_goes_to_timm_with_its_patch_and_image_size() -> None:
    cfg = BackboneConfig(name="vit_tiny_p4")
    net, state = state_of(cfg, 3, 16)
    lib = to_library("timm", cfg, state, in_channels=3, image_size=16)
    assert "patch_size=4" in lib.model and "img_size=16" in lib.model
    model = timm.create_model(
        "vit_tiny_patch16_224", patch_size=4, img_size=16, in_chans=3, num_classes=0
    )
    model.load_state_dict(lib.state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), net(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="torchvision has no ViT-Tiny"):
        to_library("torchvision", cfg, state, in_channels=3, image_size=16)
    assert architecture(cfg, net, 3, 16)["patch_size"] == 4


def test_small_resnet_is_selfsup_only() -> None:
    cfg = BackboneConfig(name="small_resnet", depths=[1, 1], widths=[8, 16])
    _, state = state_of(cfg, 3, 16)
    for library in ("torchvision", "timm"):
        with pytest.raises(CheckpointError, match="selfsup's own network"):
            to_library(library, cfg, state, in_channels=3, image_size=16)


def test_weights_say_which_normalisation_they_were_trained_with(imagenet_stem_run, tmp_path):
    """Issue #24.2: evaluation uses the backbone's own input statistics: a selfsup run's or
    export's are recorded with it; an external checkpoint is taken as ImageNet-trained."""
    from selfsup.backbones.weights import IMAGENET_MEAN, weights_normalisation

    run = imagenet_stem_run
    saved = json.loads(json.dumps(load_run(run)[0].data.mean))
    mean, _, source = weights_normalisation(run)
    assert mean == saved and "run's own" in source
    assert main(["export", str(run), "--out", str(tmp_path / "b.safetensors")]) == 0
    mean, _, source = weights_normalisation(tmp_path / "b.safetensors")
    assert mean == saved and "recorded in b.safetensors" in source
    torch.save({"state_dict": {}}, tmp_path / "official.pth")
    assert weights_normalisation(tmp_path / "official.pth")[0] == IMAGENET_MEAN
