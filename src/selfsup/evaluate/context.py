"""What a protocol receives and returns: :class:`EvalContext` (the training split only, and how
to feed images to a backbone), :class:`Fitted` predictors, and the ``PROTOCOLS`` registry that
:mod:`selfsup.evaluate.protocols` and :mod:`selfsup.evaluate.semisupervised` register into and
:mod:`selfsup.evaluate.harness` runs."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from selfsup.backbones.config import BackboneConfig
from selfsup.data.array import ImageArray
from selfsup.data.config import DataConfig
from selfsup.evaluate.config import EvalConfig
from selfsup.evaluate.linear import (
    LinearProbe,
    select_and_fit_linear,
)
from selfsup.features import (
    classifier_logits,
    extract_features,
    match_channels,
    probe_backbone,
)
from selfsup.methods.supervised import Classifier
from selfsup.registry import Registry
from selfsup.train.config import TrainConfig

Scores = Callable[[ImageArray], torch.Tensor]
# a finished run directory -> (its config, its trained method, the fingerprints of the images
# whose labels it trained on, or None when it does not record them): the run layer's reader,
# handed down so that a pseudo-label teacher can be a run (evaluate/ sits below run/)
LoadRun = Callable[[Path], tuple[Any, nn.Module, Any]]


class RunSettings(Protocol):
    """What an evaluation reads of the evaluated run's config: how it trained (the trained
    evaluations train on the same device, precision, ...), its backbone (dropout; a scratch
    teacher of the same architecture) and its data (root, download). The run's root config,
    :class:`selfsup.config.Config` (a layer above), has all three."""

    train: TrainConfig
    backbone: BackboneConfig
    data: DataConfig


@dataclass
class DefaultRun:
    """The settings of a backbone evaluated outside a run: every section at its defaults."""

    train: TrainConfig = field(default_factory=TrainConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)


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
    run_cfg: RunSettings
    work_dir: Path
    load_run: LoadRun | None = None
    _features: dict[tuple[int, int, bool], tuple[weakref.ref, weakref.ref, torch.Tensor]] = field(
        default_factory=dict
    )

    def images(self, data: ImageArray) -> torch.Tensor:
        return match_channels(data.images, self.channels)

    def probe_net(self, backbone: nn.Module) -> nn.Module:
        """What the linear probes (``linear``, ``linear-aug``, the pseudo-label probe teacher)
        read of ``backbone``: a ViT's last ``eval.vit_last_blocks`` CLS tokens (DINO
        eval_linear.py), any other backbone's own feature (:func:`probe_backbone`)."""
        return probe_backbone(backbone, self.cfg.vit_last_blocks, self.cfg.vit_avgpool)

    def features(
        self, backbone: nn.Module, data: ImageArray, *, probe: bool = False
    ) -> torch.Tensor:
        """Frozen features (N, D) of ``data``, extracted once per (backbone, split, kind): the
        backbone's own (kNN), or with ``probe`` the linear probes' (:meth:`probe_net`; the same
        entry where they are the same feature). The entry holds weak references to both, so
        that an object allocated where a freed one lived (same ``id``, e.g. the pseudo-label
        pool of the next ratio) is not given the stale features."""
        net = self.probe_net(backbone) if probe else backbone
        key = (id(backbone), id(data), net is not backbone)
        hit = self._features.get(key)
        if hit is None or hit[0]() is not backbone or hit[1]() is not data:
            feats = self.extract(net, data)
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

    def fit_probe(
        self, backbone: nn.Module, data: ImageArray, val: ImageArray | None = None
    ) -> tuple[LinearProbe, dict]:
        """The ``linear`` protocol's probe on ``data``'s frozen probe features
        (:meth:`probe_net`), L2 penalty chosen on ``val`` (other held-out training images) when
        given, else on a validation split carved from ``data``."""
        c = self.cfg
        held = None if val is None else (self.features(backbone, val, probe=True), val.labels)
        return select_and_fit_linear(
            self.features(backbone, data, probe=True),
            data.labels,
            self.num_classes,
            l2s=c.linear.l2,
            val_fraction=c.val_fraction,
            seed=self.seed,
            max_iter=c.linear.max_iter,
            val=held,
        )

    def classifier_scores(self, model: Classifier) -> Scores:
        """Test-time scores of a trained classifier (logits of the evaluation view)."""

        def scores(test: ImageArray) -> torch.Tensor:
            return classifier_logits(
                model.backbone,
                model.head,
                test.images,
                size=self.size,
                mean=self.mean,
                std=self.std,
                batch_size=self.cfg.batch_size,
                device=self.device,
                precision=self.run_cfg.train.precision,
            )

        return scores


PROTOCOLS: Registry[Callable[[nn.Module, EvalContext], list[Fitted]]] = Registry("eval protocol")
