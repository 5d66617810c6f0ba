"""Optimizers: LARS (as in facebookresearch/vicreg), AdamW and SGD over a method's groups."""

from __future__ import annotations

import torch

from selfsup.config import TrainConfig
from selfsup.errors import ConfigError

OPTIMIZERS = ("lars", "adamw", "sgd")


class LARS(torch.optim.Optimizer):
    """LARS of facebookresearch/vicreg main_vicreg.py.

    For each parameter: add weight decay to the gradient, scale the update by the trust ratio
    ``eta * ||p|| / ||update||`` (1 where either norm is 0), then heavy-ball momentum. Groups with
    ``exclude=True`` (biases and norm parameters) get neither weight decay nor the trust ratio,
    as the official ``exclude_bias_and_norm`` filter does.
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not g["exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one),
                        one,
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def build_optimizer(groups: list[dict], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over parameter groups (see ``Method.param_groups``)."""
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum)
    plain = [{k: v for k, v in g.items() if k != "exclude"} for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(plain, lr=lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(plain, lr=lr, momentum=cfg.momentum)
    raise ConfigError(f"unknown train.optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
