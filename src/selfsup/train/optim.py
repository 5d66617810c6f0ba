"""Optimizers: LARS (both published semantics), AdamW and SGD over a method's groups."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.fields import check_choice, choices_of
from selfsup.train.config import TrainConfig


class LARS(torch.optim.Optimizer):
    """LARS with the two trust-ratio rules that SSL recipes use.

    ``clip=False`` is facebookresearch/vicreg ``main_vicreg.py`` (and facebookresearch/barlowtwins
    ``main.py``): add weight decay to the gradient, ``u = g + wd * p``, scale it by
    ``eta * ||p|| / ||u||`` (1 where either norm is 0), then heavy-ball momentum
    ``mu = m * mu + u'`` and ``p -= lr * mu``. Every step moves a tensor by about
    ``lr * eta * ||p||``, whatever the gradient's size (eta 0.001 in both official codes).

    ``clip=True`` is solo-learn ``solo/utils/lars.py`` (from PyTorch Lightning Bolts) with
    ``clip_lr: True``: the ratio is ``eta * ||p|| / (||g|| + wd * ||p|| + eps)`` and, clipped,
    ``min(ratio / lr, 1)``, so the step before momentum is
    ``min(eta * ||p|| * u / (||g|| + wd ||p||), lr * u)``: about ``min(eta * ||p||, lr * ||u||)``.
    solo-learn's CIFAR / ImageNet-100 recipes use eta 0.02 with it, i.e. some 2% of the norm
    per step where the unclipped rule at eta 0.001 moves ``lr * 0.1%``. Its momentum buffer
    starts as the first update (the same as ``0 * m + u'``).

    Groups with ``exclude=True`` (biases and norm parameters, the ``exclude_bias_and_norm``
    filter of the official code and solo-learn's ``exclude_bias_n_norm``) get neither weight
    decay nor the trust ratio.
    """

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        clip: bool = False,
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            eta=eta,
            clip=clip,
            eps=eps,
            exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            updates = grads
            if not g["exclude"]:
                updates = torch._foreach_add(grads, params, alpha=g["weight_decay"])
                torch._foreach_mul_(updates, self._trust_ratios(params, grads, updates, g))
            mus = []
            for p in params:
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mus.append(state["mu"])
            torch._foreach_mul_(mus, g["momentum"])
            torch._foreach_add_(mus, updates)
            torch._foreach_add_(params, mus, alpha=-g["lr"])
        return loss

    @staticmethod
    def _trust_ratios(
        params: list[torch.Tensor], grads: list[torch.Tensor], updates: list[torch.Tensor], g: dict
    ) -> list[torch.Tensor]:
        """The factor applied to each ``update = grad + wd * p`` (0-d tensors: no host sync),
        for a group's tensors at once (``_foreach`` norms: a few ops a group, not ten a tensor;
        the optimizer step of the demo recipe went from 6 to 5 ms on the 2-core CPU)."""
        p_norm = torch.stack(torch._foreach_norm(params))
        one = torch.ones_like(p_norm)
        if not g["clip"]:
            u_norm = torch.stack(torch._foreach_norm(updates))
            ratio = g["eta"] * p_norm / u_norm
            return list(torch.where((p_norm > 0) & (u_norm > 0), ratio, one).unbind())
        g_norm = torch.stack(torch._foreach_norm(grads))
        ratio = g["eta"] * p_norm / (g_norm + g["weight_decay"] * p_norm + g["eps"])
        ratio = torch.clamp(ratio / g["lr"], max=1.0) if g["lr"] > 0 else one
        return list(torch.where((p_norm > 0) & (g_norm > 0), ratio, one).unbind())


def build_optimizer(groups: list[dict], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over parameter groups (see ``Method.param_groups``).
    The loop sets each group's lr every step (the schedule, times the group's ``lr_scale`` if it
    has one, times ``train.bias_lr_scale`` for the excluded groups)."""
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta, clip=cfg.lars_clip)
    plain = [{k: v for k, v in g.items() if k != "exclude"} for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(plain, lr=lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(plain, lr=lr, momentum=cfg.momentum)
    check_choice("train.optimizer", cfg.optimizer, choices_of(TrainConfig, "optimizer"))
    raise AssertionError(f"train.optimizer={cfg.optimizer!r} is a choice without an optimizer")


STATE_PER_PARAMETER = {"lars": 1, "sgd": 1, "adamw": 2}
"""Tensors of optimizer state per trainable parameter: a momentum buffer; Adam's two moments."""


def model_footprint(method: nn.Module, optimizer: str) -> int:
    """Bytes ``method`` takes on the device once it trains with ``optimizer``: its weights and
    buffers (a frozen teacher's too), and for each trainable parameter its gradient and the
    optimizer's state (:data:`STATE_PER_PARAMETER`). Activations are not counted: they depend
    on the batch and the step, and :func:`selfsup.train.loop.images_on_device` leaves them
    as much room as the images take."""
    tensors = [*method.parameters(), *method.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    trainable = sum(p.numel() * p.element_size() for p in method.parameters() if p.requires_grad)
    return weights + trainable * (1 + STATE_PER_PARAMETER[optimizer])
