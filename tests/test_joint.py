"""``Joint`` (SSL + a classifier head) and ``Classifier`` (supervised / fine-tuning), each on
its own: one backbone pass per view, the loss the docstring states, frozen means frozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.methods.joint import Joint
from selfsup.methods.supervised import Classifier
from selfsup.rundir import make_method
from tiny import TINY

RESOLVED = ["views.size=16", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def ssl_method(name: str):
    tiny = [o for o in TINY if not o.startswith("method.")]
    extra = ["method.projector=32-32"] if name in ("vicreg", "barlow_twins", "simclr") else []
    if name in ("moco", "isd"):
        extra = ["method.queue_size=64"]
    if name == "dino":
        extra = [
            "method.local_crops=0",
            "method.out_dim=64",
            "method.hidden_dim=32",
            "method.bottleneck_dim=16",
        ]
    return make_method(load_config(None, [*tiny, *RESOLVED, f"method.name={name}", *extra]), 3)


def views_for(method, batch: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, s.size, s.size, generator=g) for s in method.view_specs]


def count_backbone_calls(method, backbone) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    backbone.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins", "simclr", "moco", "isd", "dino"])
def test_joint_runs_the_backbone_no_more_often_than_its_ssl_method(name) -> None:
    ssl = ssl_method(name)
    views = views_for(ssl)
    calls = count_backbone_calls(ssl, ssl.backbone)
    ssl(views)
    alone = calls[0]
    joint = Joint(ssl, num_classes=4)
    calls[0] = 0
    out = joint(views, torch.tensor([0, 1, 2, 3, -1, -1, 0, 1]))
    assert calls[0] == alone  # the head reads the SSL step's view-0 features
    assert out.features is not None and out.features.shape == (8, ssl.backbone.num_features)


def test_joint_loss_is_cross_entropy_on_the_labelled_images_plus_weighted_ssl() -> None:
    torch.manual_seed(0)
    ssl = ssl_method("vicreg")
    joint = Joint(ssl, num_classes=4, ssl_weight=0.5)
    views = views_for(ssl)
    labels = torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])
    out = joint(views, labels)
    feats = ssl.backbone(views[0])
    want_ce = F.cross_entropy(joint.head(feats)[:4], labels[:4])
    torch.testing.assert_close(out.parts["cross_entropy"], want_ce.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        out.loss, want_ce + 0.5 * out.parts["ssl_loss"], rtol=1e-4, atol=1e-5
    )
    other = labels.clone()
    other[4:] = -1  # unlabeled images' would-be labels never enter the loss
    assert torch.allclose(joint(views, other).parts["cross_entropy"], out.parts["cross_entropy"])


def test_a_frozen_classifier_leaves_its_backbone_and_batch_norm_statistics_alone() -> None:
    ssl = ssl_method("vicreg")
    model = Classifier(ssl.backbone, ssl.view_specs[:1], 4, frozen=True).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    head_before = model.head.weight.detach().clone()
    out = model(views_for(ssl)[:1], torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    out.loss.backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats
    assert not torch.equal(model.head.weight, head_before)  # the head trained
    assert set(out.parts) == {"cross_entropy", "train_top1"}
