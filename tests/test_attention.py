"""`selfsup viz attention`: the CLS attention maps of a tiny ViT run, and the error on a convnet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfsup.analysis.attention import cls_attention
from selfsup.backbones.vit import VIT_SIZES, ViT
from selfsup.cli import main
from selfsup.rundir import load_encoder
from tiny import TINY

QUICK = [
    *TINY,
    "data.limit=64",
    "train.epochs=1",
    "eval.protocols=[knn]",
    "eval.knn.k=[5]",
    "eval.compare_random=false",
    "eval.compare_pixels=false",
    "eval.monitor_every=0",
]

NEW = ["--config", "defaults"]  # a new run from the built-in defaults (tiny.py shrinks them)


def test_attention_maps_of_a_vit_run(tmp_path: Path, capsys) -> None:
    """One row per image (image, mean, one column per head); each head's map is the CLS row
    of the last block's attention over the patches, renormalised to sum to 1."""
    run = tmp_path / "vit"
    assert main(["pretrain", *NEW, "--out", str(run), *QUICK, "backbone.name=vit_tiny_p4"]) == 0
    capsys.readouterr()
    assert main(["viz", "attention", str(run), "--images", "3"]) == 0
    png = run / "plots" / "attention.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000
    assert str(png) in capsys.readouterr().out

    vit = load_encoder(run).backbone
    assert isinstance(vit, ViT)
    x = torch.randn(2, 3, 16, 16)
    maps = cls_attention(vit, x)
    assert maps.shape == (2, vit.num_heads, 4, 4)  # 16 px / 4-px patches
    assert torch.allclose(maps.sum((-2, -1)), torch.ones(2, vit.num_heads), atol=1e-5)
    # against timm's own attention: its unfused path, caught at the input of attn_drop
    last = vit.vit.blocks[-1].attn
    seen = []
    last.fused_attn = False
    hook = last.attn_drop.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        vit.eval()(x)
    hook.remove()
    cls_row = seen[0][:, :, 0, 1:]
    want = cls_row / cls_row.sum(-1, keepdim=True)
    assert torch.allclose(maps.flatten(2), want, atol=1e-5)
    assert not torch.allclose(maps[:, 0], maps[:, 1])  # heads differ: one map per head


def test_attention_maps_need_a_vit(tmp_path: Path, capsys) -> None:
    run = tmp_path / "resnet"
    assert main(["pretrain", *NEW, "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    assert main(["viz", "attention", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"attention maps need a ViT backbone ({', '.join(VIT_SIZES)})" in err
    assert "small_resnet" in err and not (run / "plots" / "attention.png").exists()


@pytest.mark.parametrize("images", [0, -1])
def test_attention_refuses_a_bad_image_count(tmp_path: Path, capsys, images: int) -> None:
    assert main(["viz", "attention", str(tmp_path), "--images", str(images)]) == 2
    assert "--images must be at least 1" in capsys.readouterr().err
