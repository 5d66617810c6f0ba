"""Adding a method is one file: its config, its loss, one ``register_method`` call. This file is
that file for a toy method (docs/architecture.md, "Adding a method", follows it), and checks
that the rest of selfsup picks it up: config parsing, the CLI's choices, views, training."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.heads import mlp
from selfsup.methods import METHOD_CONFIGS, METHODS, MethodConfig, MethodSpec, pair, register_method
from selfsup.methods.siamese import Siamese
from selfsup.methods.simclr import simclr_views
from selfsup.pipeline import train_run
from selfsup.rundir import make_method
from tiny import TINY


@dataclass
class ToyConfig(MethodConfig):
    """A toy: cosine invariance between two SimCLR views (it would collapse; it only has to
    train)."""

    name: str = "toy"
    projector: str = "16-16"


def toy_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    loss = 1 - F.cosine_similarity(z_a.float(), z_b.float(), dim=1).mean()
    return loss, {"cosine_loss": loss.detach()}


def build_toy(cfg, backbone, specs):
    return Siamese(backbone, specs, mlp(backbone.num_features, cfg.method.projector), toy_loss)


TOY = MethodSpec("toy", ToyConfig, (0.3, 1.0), pair(simclr_views), build_toy)


@pytest.fixture(autouse=True)
def toy_registered():
    """``register_method(TOY)`` as a method's module does at import; taken back afterwards so
    the other tests see only the built-in methods."""
    register_method(TOY)
    yield
    for registry in (METHODS, METHOD_CONFIGS):
        registry._items.pop("toy", None)


def test_a_method_registered_in_one_file_trains_two_steps(tmp_path) -> None:
    tiny = [o for o in TINY if not o.startswith("method.")]
    cfg = load_config(None, [*tiny, "method.name=toy", "train.epochs=1", "data.limit=64"])
    assert isinstance(cfg.method, ToyConfig)
    cfg.views.size, cfg.data.mean, cfg.data.std = 16, [0.5] * 3, [0.25] * 3
    method = make_method(cfg, 3)
    assert [s.crop_scale for s in method.view_specs] == [(0.3, 1.0)] * 2  # its own default
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    before = [p.detach().clone() for p in method.parameters()]
    train_run(method, images, cfg, tmp_path)  # 64 images / batch 32: two steps
    steps = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(steps) == 2 and "cosine_loss" in steps[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, method.parameters(), strict=True))


def test_a_method_registered_wrongly_fails_at_registration_with_a_message() -> None:
    @dataclass
    class Misnamed(MethodConfig):
        name: str = "other"

    with pytest.raises(TypeError, match="set name: str = 'bad'"):
        register_method(MethodSpec("bad", Misnamed, (0.3, 1.0), pair(simclr_views), build_toy))
    with pytest.raises(TypeError, match="crop_scale"):
        register_method(MethodSpec("toy2", ToyConfig, (0.0, 1.0), pair(simclr_views), build_toy))
    with pytest.raises(TypeError, match="registered twice"):
        register_method(MethodSpec("toy", ToyConfig, (0.3, 1.0), pair(simclr_views), build_toy))
    with pytest.raises(ConfigError, match=r"valid choices: .*toy"):
        load_config(None, ["method.name=nope"])
