"""Joint SSL + supervised training: any SSL method plus a linear classifier on its backbone.

``forward(views, labels)`` = cross-entropy of ``head(backbone(views[0]))`` over the labelled
images of the batch (labels >= 0; the rest are unlabeled) + ``ssl_weight`` x the SSL method's
loss on every image, the single-objective form of S4L (Zhai et al., ICCV 2019). The classifier
sees the method's first (augmented) view. The SSL method's hooks (teacher, queue, centre,
schedules) run unchanged.

Under torchrun the cross-entropy is the mean over the labelled images of the *global* batch,
whose count is summed over ranks (a rank may hold more of them than another): each rank's
value is ``world_size x (its sum) / (global count)``, so DDP's average of the ranks' gradients
is the gradient of the global mean (the one-process step on the whole batch), and the mean of
the ranks' values, which the loop logs, is the global mean itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.distributed import sum_across_ranks, world_size
from selfsup.fields import FRACTION, NON_NEGATIVE, setting
from selfsup.methods.base import Method, StepOutput


@dataclass
class JointConfig:
    """Joint SSL + supervised training (``selfsup joint``): loss = cross-entropy of a linear head
    on the labelled images of each batch + ``ssl_weight`` x the method's SSL loss on all."""

    enabled: bool = setting(False, arch=True)
    # class-balanced share of training images that keep labels
    label_fraction: float = setting(
        0.1, valid=FRACTION, what="the share of training images that keep labels"
    )
    ssl_weight: float = setting(1.0, valid=NON_NEGATIVE, what="weight of the SSL loss")
    # 0: from the data (written into the run's config.yaml)
    num_classes: int = setting(0, valid=NON_NEGATIVE, what="0 takes it from the data")


class Joint(Method):
    def __init__(self, ssl: Method, num_classes: int, ssl_weight: float = 1.0) -> None:
        nn.Module.__init__(self)  # the backbone is the SSL method's: registered once, there
        self.ssl = ssl
        self.view_specs = ssl.view_specs
        self.head = nn.Linear(ssl.backbone.num_features, num_classes)
        self.ssl_weight = ssl_weight

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        return self.ssl.backbone

    @property
    def official_eval(self) -> str:  # type: ignore[override]
        return self.ssl.official_eval

    def eval_backbones(self) -> dict[str, nn.Module]:
        return self.ssl.eval_backbones()

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> StepOutput:
        out = self.ssl(views)
        # the SSL step's own backbone pass over view 0: one forward, backward and batch-norm
        # update per view, not a second pass for the head
        feats = out.features if out.features is not None else self.backbone(views[0])
        logits = self.head(feats).float()
        known = labels >= 0
        ce_each = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        labelled = sum_across_ranks(known.sum())  # in the global batch (see the module doc)
        ce = world_size() * (ce_each * known).sum() / labelled.clamp(min=1)  # no host sync
        loss = ce + self.ssl_weight * out.loss
        parts = {**out.parts, "ssl_loss": out.loss.detach(), "cross_entropy": ce.detach()}
        return StepOutput(loss, parts, feats)

    def before_step(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        self.ssl.before_step(step, total_steps, steps_per_epoch)

    def after_backward(self) -> None:
        self.ssl.after_backward()

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.ssl.on_step_end(step, total_steps)
