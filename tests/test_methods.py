"""Every method on every backbone family: two CPU training steps, then the teacher parts."""

from __future__ import annotations

import pytest
import torch

from selfsup.checkpoint import load_checkpoint
from selfsup.config import load_config
from selfsup.data.array import seeded_subset
from selfsup.data.sources import load_dataset
from selfsup.methods import METHODS
from selfsup.pipeline import resolve, train_run
from selfsup.rundir import make_method

SMALL_HEADS = {
    "vicreg": ["method.projector=32-32"],
    "barlow_twins": ["method.projector=32-32"],
    "simclr": ["method.projector=32-16"],
    "moco": ["method.projector=32-16", "method.queue_size=40", "method.momentum=0.9"],
    "isd": ["method.queue_size=40"],
    "byol": ["method.projector=32-16", "method.predictor=32-16", "method.momentum=0.9"],
    "dino": [
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "method.local_crops=2",
        "method.freeze_last_layer=0",
    ],
    "dino_twins": [
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "method.local_crops=2",
        "method.bt_projector=32-32",
        "method.freeze_last_layer=0",
    ],
}
BACKBONES = {
    "small_resnet": ["backbone.depths=[1,1]", "backbone.widths=[8,16]"],
    "resnet18": [],
    "vit_tiny_p4": [],
}


def setup(method: str, backbone: str, extra: list[str] | None = None):
    overrides = [
        f"method.name={method}",
        *SMALL_HEADS[method],
        f"backbone.name={backbone}",
        *BACKBONES[backbone],
        "data.dataset=synthetic",
        "data.image_size=16",
        "train.epochs=1",
        "train.batch_size=8",
        "train.warmup_epochs=0",
        "train.optimizer=sgd",
        "train.lr=0.5",
        "train.log_every=1",
        "train.progress=false",
        *(extra or []),
    ]
    cfg = load_config(None, overrides)
    data = seeded_subset(load_dataset("synthetic", "train", image_size=16), 16, 0)
    return resolve(cfg, data), data


def test_every_method_is_registered() -> None:
    assert set(SMALL_HEADS) | {"supervised"} == set(METHODS.names())


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("method", list(SMALL_HEADS))
def test_two_steps_and_checkpoint_round_trip(method: str, backbone: str, tmp_path) -> None:
    cfg, data = setup(method, backbone)
    model = make_method(cfg, data.channels)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_run(model, data.images, cfg, tmp_path)  # 16 images / batch 8 = 2 steps
    losses = [r["loss"] for r in map(eval_json, (tmp_path / "metrics.jsonl").open())]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    backbone_changed = [
        not torch.equal(before[n], after[n]) for n in before if n.startswith("backbone.")
    ]
    assert any(backbone_changed), "the backbone did not learn"
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    fresh = make_method(cfg, data.channels)
    fresh.load_state_dict(ckpt["model"])
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


def one_step(method: str, extra: list[str] | None = None):
    cfg, data = setup(method, "small_resnet", extra)
    model = make_method(cfg, data.channels)
    from selfsup.data.views import make_views

    views = make_views(data.images[:8], model.view_specs, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.before_step(0, 10, 5)
    out = model(views)
    out.loss.backward()
    model.after_backward()
    return model, opt, out


@pytest.mark.parametrize("method", ["moco", "isd", "byol", "dino", "dino_twins"])
def test_teacher_has_no_grad_and_moves_toward_student(method: str) -> None:
    model, opt, _ = one_step(method)
    teacher = list(model.teacher.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher)
    student = list(model.student().parameters())
    assert all(torch.equal(t, s) for t, s in zip(teacher, student, strict=True))  # starts equal
    t_before = [p.clone() for p in teacher]
    opt.step()
    gap_before = sum((t - s).pow(2).sum() for t, s in zip(t_before, student, strict=True))
    model.on_step_end(0, 10)
    gap_after = sum((t - s).pow(2).sum() for t, s in zip(teacher, student, strict=True))
    assert gap_before > 0 and gap_after < gap_before
    assert any(not torch.equal(a, b) for a, b in zip(t_before, teacher, strict=True))


@pytest.mark.parametrize("method", ["moco", "isd"])
def test_queue_receives_the_teacher_keys(method: str) -> None:
    model, opt, _ = one_step(method)
    before = model.queue.queue.clone()
    opt.step()
    model.on_step_end(0, 10)
    changed = (model.queue.queue != before).any(1)
    n_keys = 16 if method == "moco" and model.cfg.symmetric else 8
    assert int(changed.sum()) == n_keys and int(model.queue.ptr) == n_keys
    norms = model.queue.queue[changed].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_dino_centre_updates_and_last_layer_is_frozen_in_the_first_epoch() -> None:
    model, opt, _ = one_step("dino", ["method.freeze_last_layer=1"])
    assert all(p.grad is None for p in model.head.last_layer.parameters())  # frozen: step 0 < 5
    assert model.head.mlp[0].weight.grad is not None
    opt.step()
    model.on_step_end(0, 10)
    assert model.center.abs().sum() > 0  # moved from zeros toward the teacher mean
    model.before_step(5, 10, 5)  # second epoch: the last layer learns again
    assert not model._frozen_last_layer


def test_dino_teacher_temperature_warms_up_and_ablations() -> None:
    model, _, out = one_step("dino", ["method.warmup_teacher_temp_epochs=2"])
    assert out.parts["teacher_temp"] == pytest.approx(0.04)
    model.before_step(5, 20, 5)  # np.linspace(0.04, 0.07, 10)[5], as the official schedule
    assert model._teacher_temp == pytest.approx(0.04 + 0.03 * 5 / 9)
    model.before_step(15, 20, 5)
    assert model._teacher_temp == pytest.approx(0.07)
    flat, opt, _ = one_step("dino", ["method.sharpen=false", "method.center=false"])
    assert flat._teacher_temp == pytest.approx(0.1)
    opt.step()
    flat.on_step_end(0, 10)
    assert flat.center.abs().sum() == 0


def test_dino_twins_weight_makes_barlow_twins_half_of_dino_at_the_start() -> None:
    _, _, out = one_step("dino_twins")
    p = {k: float(v) for k, v in out.parts.items()}
    assert p["bt_weight"] * p["barlow_twins"] == pytest.approx(0.5 * p["cross_entropy"], rel=1e-5)
    assert out.loss.item() == pytest.approx(1.5 * p["cross_entropy"], rel=1e-5)
    _, _, out = one_step("dino_twins", ["method.bt_weight=0.25"])
    assert float(out.parts["bt_weight"]) == pytest.approx(0.25)


# (not BYOL: its teacher embeds the student's two views in the same order with the same
# starting weights, so after one step both hold equal statistics; it shares the base, which
# keeps them apart, with MoCo and ISD)
@pytest.mark.parametrize("method", ["moco", "isd", "dino", "dino_twins"])
def test_the_teacher_keeps_its_own_batchnorm_statistics(method: str) -> None:
    """Issue #21: official DINO / MoCo / ISD move the teacher's parameters by EMA and leave its
    BN running statistics to its own forward passes; copying the student's (which DINO's see
    local crops too) made an evaluated teacher use statistics it never produced."""
    model, opt, _ = one_step(method)
    opt.step()
    model.on_step_end(0, 10)
    t_bn = [m for m in model.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    s_bn = [m for m in model.student().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert t_bn and len(t_bn) == len(s_bn)
    assert all(int(t.num_batches_tracked) >= 1 for t in t_bn)  # moved by its own passes
    assert not all(
        torch.equal(t.running_mean, s.running_mean) for t, s in zip(t_bn, s_bn, strict=True)
    )


@pytest.mark.parametrize("method", ["moco", "isd"])
def test_shuffle_bn_splits_both_encoders_and_can_be_turned_off(method: str) -> None:
    from selfsup.parts.shuffle_bn import SplitBatchNorm2d

    model, _, out = one_step(method)
    assert torch.isfinite(out.loss) and not model.sync_batchnorm
    splits = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    assert splits and all(m.num_splits == 8 for m in splits)
    assert any(isinstance(m, SplitBatchNorm2d) for m in model.teacher.modules())
    plain, _, _ = one_step(method, ["method.shuffle_bn=false"])
    assert plain.sync_batchnorm
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.modules())
    assert set(plain.state_dict()) == set(model.state_dict())  # checkpoints stay compatible


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_simclr_multi_crop_trains_every_crop_through_one_loss(backbone: str, tmp_path) -> None:
    from selfsup.losses import multi_crop_nt_xent_loss
    from selfsup.methods.siamese import Siamese
    from selfsup.methods.simclr import MultiCropSimCLR

    cfg, data = setup("simclr", backbone, ["method.local_crops=2"])
    model = make_method(cfg, data.channels)
    assert isinstance(model, MultiCropSimCLR)
    specs = model.view_specs
    assert [s.size for s in specs] == [16, 16, 8, 8]  # 96/224 of 16 px, in 4-px patches
    assert [s.blur_p for s in specs] == [0.5, 0.5, 0.0, 0.0]  # solo-learn: no blur on small
    assert {s.crop_scale for s in specs} == {(0.08, 1.0)}  # the views' own scale
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, data.channels, s.size, s.size, generator=g) for s in specs]
    out = model(views)
    z = [model.projector(model.backbone(v)) for v in views]
    expected, _ = multi_crop_nt_xent_loss(z, temperature=cfg.method.temperature)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    small = [views[0], views[1], views[2], views[3] + 1.0]  # a small crop moves the loss
    assert not torch.allclose(model(small).loss, out.loss)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_run(model, data.images, cfg, tmp_path)
    losses = [r["loss"] for r in map(eval_json, (tmp_path / "metrics.jsonl").open())]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    two, _ = setup("simclr", backbone)
    assert isinstance(make_method(two, data.channels), Siamese)  # 0 small crops: the pair


def test_small_crops_are_96_beside_224_for_dino_and_simclr() -> None:
    """main_dino.py crops its local views at 96 px beside 224 (solo-learn's multi-crop recipes
    too); both methods' default small crop follows that ratio, in whole 4-px patches."""
    from selfsup.data.recipes import small_crop_side

    assert [small_crop_side(s) for s in (224, 96, 32, 28, 16)] == [96, 40, 12, 12, 8]
    for method, crops in (("dino", "method.local_crops=2"), ("simclr", "method.local_crops=2")):
        cfg, data = setup(method, "small_resnet", [crops, "views.size=224"])
        sizes = [s.size for s in make_method(cfg, data.channels).view_specs]
        assert sizes == [224, 224, 96, 96], (method, sizes)
