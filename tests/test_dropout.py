"""``backbone.dropout``: dropout on the pooled features before the classifier head of the
supervised baseline and of fine-tuned evaluations, active in train mode only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.config import load_config
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError
from selfsup.evaluate import protocols
from selfsup.evaluate.context import EvalContext
from selfsup.methods import build_method
from selfsup.methods.supervised import Classifier
from tiny import TINY


class Ones(nn.Module):
    """A backbone whose features are all ones: dropout's zeros and 1/(1-p) scaling show."""

    num_features = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), self.num_features)


def classifier(p: float) -> Classifier:
    torch.manual_seed(0)
    model = Classifier(Ones(), [], 3, dropout=p)
    nn.init.ones_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode() -> None:
    x = torch.zeros(8, 3, 4, 4)
    model = classifier(0.5).train()
    a, b = model.logits(x), model.logits(x)
    assert not torch.equal(a, b)  # a fresh mask each call
    # each logit sums the 64 features kept, each scaled by 1 / (1 - 0.5) = 2
    assert torch.all((a % 2 == 0) & (a < 128)) and a.std() > 0
    model.eval()
    assert torch.equal(model.logits(x), torch.full((8, 3), 64.0))  # the identity: sum of ones
    assert torch.equal(classifier(0.0).train().logits(x), torch.full((8, 3), 64.0))


def test_the_supervised_baseline_takes_backbone_dropout() -> None:
    tiny = [o for o in TINY if not o.startswith("method.")]
    overrides = [*tiny, "method.name=supervised", "method.num_classes=4", "backbone.dropout=0.3"]
    cfg = load_config(None, overrides)
    method = build_method(cfg, in_channels=3, image_size=16, mean=[0.5] * 3, std=[0.25] * 3)
    assert isinstance(method, Classifier) and method.dropout.p == 0.3


@pytest.mark.parametrize(("frozen", "expected"), [(False, 0.2), (True, 0.0)])
def test_fine_tuned_heads_take_it_linear_heads_do_not(
    frozen: bool, expected: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(None, [*TINY, "backbone.dropout=0.2"])
    monkeypatch.setattr(protocols, "fit", lambda model, *a, **kw: model)  # build, do not train
    data = load_dataset("synthetic", "train", image_size=16).subset(slice(0, 8))
    ctx = EvalContext(
        dataset="synthetic",
        train=data,
        num_classes=10,
        size=16,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        channels=3,
        device=torch.device("cpu"),
        seed=0,
        cfg=cfg.eval,
        run_cfg=cfg,
        work_dir=tmp_path,
    )
    model, _ = protocols.train_classifier(
        ctx, Ones(), data, name="x", frozen=frozen, epochs=1, lr=0.1, weight_decay=0.0
    )
    assert model.dropout.p == expected


@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5"])
def test_dropout_outside_zero_to_one_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"backbone\.dropout.*\[0, 1\)"):
        load_config(None, [f"backbone.dropout={value}"])
