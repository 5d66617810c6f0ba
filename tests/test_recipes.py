"""Shipped recipes train as the sources they cite: LARS rule per config, DINO's ResNet crops,
zero-init residuals, the Barlow Twins loss scale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from selfsup.config import load_config
from selfsup.data.views import make_views
from selfsup.methods import build_method
from selfsup.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
LARS_CONFIGS = [p for p in CONFIGS if load_config(p).train.optimizer == "lars"]
# the rule each source publishes: (eta, clipped)
RULES = {"solo-learn": (0.02, True), "official": (0.001, False)}


def _rule_of(path: Path) -> str:
    m = re.search(r"^# LARS rule: (solo-learn|official)\b", path.read_text(), re.MULTILINE)
    assert m, f"{path} uses LARS but has no '# LARS rule: solo-learn|official' line"
    return m.group(1)


def _expected_update(p: torch.Tensor, g: torch.Tensor, *, lr, wd, eta, clip, exclude):
    """The first step of the cited rule (momentum buffer empty), from the published formulas:
    official u * lr * eta |p| / |u|; solo-learn u * min(eta |p| / (|g| + wd |p|), lr)."""
    if exclude:
        return lr * g
    u = g + wd * p
    if clip:
        return u * min(eta * p.norm() / (g.norm() + wd * p.norm() + 1e-8), lr)
    return u * lr * eta * p.norm() / u.norm()


@pytest.mark.parametrize("path", LARS_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_lars_config_steps_by_the_rule_it_cites(path: Path) -> None:
    eta, clip = RULES[_rule_of(path)]
    cfg = load_config(path, ["views.size=16"])
    assert (cfg.train.lars_eta, cfg.train.lars_clip) == (eta, clip), (
        f"{path}: train.lars_eta / lars_clip do not match the {_rule_of(path)} rule it cites"
    )
    channels = 1 if cfg.data.dataset == "fashion-mnist" else 3
    torch.manual_seed(0)
    method = build_method(
        cfg, in_channels=channels, image_size=16, mean=[0.5] * channels, std=[0.25] * channels
    )
    method.double()  # float64 parameters: the update is measured without float32 rounding
    lr = cfg.train.lr * cfg.train.batch_size / 256
    groups = method.param_groups(cfg.train.weight_decay)
    opt = build_optimizer(groups, cfg.train, lr)
    for group in opt.param_groups:  # what the loop sets at a step after warm-up
        group["lr"] = lr * (cfg.train.bias_lr_scale if group["exclude"] else 1.0)
    images = torch.randint(0, 256, (8, channels, 16, 16), dtype=torch.uint8)
    views = make_views(images, method.view_specs, torch.Generator().manual_seed(0))
    views = [v.double() for v in views]
    method.before_step(100, 1000, 10)
    method(views).loss.backward()
    method.after_backward()
    before = {
        p: (p.detach().clone(), p.grad.clone())
        for g in groups
        for p in g["params"]
        if p.grad is not None
    }
    opt.step()
    checked = 0
    for group in opt.param_groups:
        for p in group["params"]:
            if p not in before:
                continue
            p0, grad = before[p]
            want = _expected_update(
                p0,
                grad,
                lr=group["lr"],
                wd=group["weight_decay"],
                eta=eta,
                clip=clip,
                exclude=group["exclude"],
            )
            moved = p0 - p.detach()
            if not group["exclude"]:  # the relative update of each weight tensor
                rel, rel_want = moved.norm() / p0.norm(), want.norm() / p0.norm()
                torch.testing.assert_close(rel, rel_want, rtol=1e-6, atol=0.0)
            torch.testing.assert_close(moved, want, rtol=1e-6, atol=1e-12)
            checked += not group["exclude"]
    assert checked > 0


def test_dino_on_a_resnet_takes_the_readme_convnet_crops() -> None:
    for backbone, glob, local in (
        ("resnet18", (0.14, 1.0), (0.05, 0.14)),
        ("vit_tiny_p4", (0.4, 1.0), (0.05, 0.4)),
    ):
        cfg = load_config(
            None,
            [
                "method.name=dino",
                f"backbone.name={backbone}",
                "method.out_dim=64",
                "method.local_crops=2",
            ],
        )
        method = build_method(cfg, in_channels=3, image_size=32, mean=[0.5] * 3, std=[0.2] * 3)
        specs = method.view_specs
        assert tuple(specs[0].crop_scale) == glob and tuple(specs[-1].crop_scale) == local
    cfg = load_config(
        None,
        [
            "method.name=dino",
            "views.crop_scale=[0.3,1.0]",
            "method.local_scale=[0.1,0.2]",
            "method.out_dim=64",
        ],
    )
    specs = build_method(
        cfg, in_channels=3, image_size=32, mean=[0.5] * 3, std=[0.2] * 3
    ).view_specs
    assert tuple(specs[0].crop_scale) == (0.3, 1.0) and tuple(specs[-1].crop_scale) == (0.1, 0.2)


@pytest.mark.parametrize("name", ["resnet18", "small_resnet"])
def test_zero_init_residual_starts_each_block_as_identity(name: str) -> None:
    from torchvision.models.resnet import BasicBlock

    from selfsup.backbones import build_backbone

    for zero in (True, False):
        cfg = load_config(None, [f"backbone.name={name}", f"backbone.zero_init_residual={zero}"])
        net = build_backbone(cfg.backbone, in_channels=3, image_size=32)
        last_bns = [m.bn2.weight for m in net.modules() if isinstance(m, BasicBlock)]
        assert last_bns and all(bool((w == 0).all()) == zero for w in last_bns)


def test_barlow_twins_scale_loss_scales_loss_and_gradient() -> None:
    from selfsup.losses import barlow_twins_loss

    z_a, z_b = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8)
    full, _ = barlow_twins_loss(z_a, z_b)
    (g_full,) = torch.autograd.grad(full, z_a)
    scaled, _ = barlow_twins_loss(z_a, z_b, scale=0.1)
    (g_scaled,) = torch.autograd.grad(scaled, z_a)
    torch.testing.assert_close(scaled, 0.1 * full)
    torch.testing.assert_close(g_scaled, 0.1 * g_full)
