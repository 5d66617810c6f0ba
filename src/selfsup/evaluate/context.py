"""What a protocol receives and returns: :class:`EvalContext` (the training split only, and how
to feed images to a backbone), :class:`Fitted` predictors, and the ``PROTOCOLS`` registry that
:mod:`selfsup.evaluate.protocols` and :mod:`selfsup.evaluate.semisupervised` register into and
:mod:`selfsup.evaluate.harness` runs."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.config import Config, EvalConfig
from selfsup.data.array import ImageArray
from selfsup.evaluate.linear import (
    LinearProbe,
    select_and_fit_linear,
)
from selfsup.features import classifier_logits, extract_features, match_channels
from selfsup.methods.supervised import Classifier
from selfsup.registry import Registry

Scores = Callable[[ImageArray], torch.Tensor]


@dataclass
class Fitted:
    """A predictor fitted on training data: ``scores(test) -> (M, num_classes)`` and the
    protocol's own fields for the record (k, fraction, chosen weight decay, ...)."""

    info: dict[str, Any]
    scores: Scores


@dataclass
class EvalContext:
    """Everything a protocol may use: the labelled training split and how to feed images to a
    backbone (size, normalisation measured on that split, device, settings). Never the test
    split."""

    dataset: str
    train: ImageArray
    num_classes: int
    size: int
    mean: list[float]
    std: list[float]
    channels: int
    device: torch.device
    seed: int
    cfg: EvalConfig
    run_cfg: Config
    work_dir: Path
    _features: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, torch.Tensor]] = field(
        default_factory=dict
    )

    def images(self, data: ImageArray) -> torch.Tensor:
        return match_channels(data.images, self.channels)

    def features(self, backbone: nn.Module, data: ImageArray) -> torch.Tensor:
        """Frozen features (N, D) of ``data``, extracted once per (backbone, split). The entry
        holds weak references to both, so that an object allocated where a freed one lived (same
        ``id``, e.g. the pseudo-label pool of the next ratio) is not given the stale features."""
        key = (id(backbone), id(data))
        hit = self._features.get(key)
        if hit is None or hit[0]() is not backbone or hit[1]() is not data:
            feats = self.extract(backbone, data)
            self._features[key] = (weakref.ref(backbone), weakref.ref(data), feats)
        return self._features[key][2]

    def extract(self, net: nn.Module, data: ImageArray) -> torch.Tensor:
        """``net``'s outputs (N, D) on the evaluation view of ``data`` (resized, normalised)."""
        return extract_features(
            net,
            self.images(data),
            size=self.size,
            mean=self.mean,
            std=self.std,
            batch_size=self.cfg.batch_size,
            device=self.device,
            precision=self.run_cfg.train.precision,
        )

    def fit_probe(self, backbone: nn.Module, data: ImageArray) -> tuple[LinearProbe, dict]:
        """The ``linear`` protocol's probe on ``data``'s frozen features, L2 penalty chosen on
        a validation split carved from ``data``."""
        c = self.cfg
        return select_and_fit_linear(
            self.features(backbone, data),
            data.labels,
            self.num_classes,
            l2s=c.linear.l2,
            val_fraction=c.val_fraction,
            seed=self.seed,
            max_iter=c.linear.max_iter,
        )

    def classifier_scores(self, model: Classifier) -> Scores:
        """Test-time scores of a trained classifier (logits of the evaluation view)."""

        def scores(test: ImageArray) -> torch.Tensor:
            return classifier_logits(
                model.backbone, model.head, test.images, size=self.size, mean=self.mean,
                std=self.std, batch_size=self.cfg.batch_size, device=self.device,
                precision=self.run_cfg.train.precision,
            )  # fmt: skip

        return scores


PROTOCOLS: Registry[Callable[[nn.Module, EvalContext], list[Fitted]]] = Registry("eval protocol")
