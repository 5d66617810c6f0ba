"""Evaluation protocols, and the harness that keeps the test split out of their reach.

A protocol receives the backbone and an :class:`EvalContext` that holds the *training* split
only (fitting, validation carving, label fractions, pseudo-label pools) and returns
:class:`Fitted` predictors. Only then does :func:`evaluate_backbone` open the test split and
score it, once per predictor, so no protocol can fit, select or stop early on test data (a test
plants a marker in the test split to check it). Records go to ``results.json``:
``{"protocol", "dataset", "init", "seed", "top1", "top1_ci95", "top5", "balanced_acc",
"f1_macro", "per_class_acc", "confusion", "n_train", "n_test", "fit_seconds" (wall time of
fitting, shared equally by the predictors one protocol call fits), "score_seconds",
...protocol fields}``.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.config import Config, EvalConfig, TrainConfig
from selfsup.data.array import ImageArray
from selfsup.data.recipes import crop_flip_view
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.evaluate.features import extract_features, input_channels, match_channels
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import (
    LinearProbe,
    carve_validation,
    epochs_for,
    select_and_fit_linear,
)
from selfsup.evaluate.metrics import classification_metrics
from selfsup.evaluate.sampling import class_balanced_indices, complement
from selfsup.evaluate.table import eval_settings, settings_id
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
        )

    def fit_probe(self, backbone: nn.Module, data: ImageArray) -> tuple[LinearProbe, dict]:
        """The ``linear`` protocol's probe on ``data``'s frozen features, L2 penalty chosen on
        a validation split carved from ``data``."""
        c = self.cfg
        return select_and_fit_linear(
            self.features(backbone, data),
            data.labels,
            self.num_classes,
            l2s=c.linear_l2,
            val_fraction=c.val_fraction,
            seed=self.seed,
            max_iter=c.linear_max_iter,
        )

    def classifier_scores(self, model: Classifier) -> Scores:
        """Test-time scores of a trained classifier (logits of the evaluation view)."""
        net = nn.Sequential(model.backbone, model.head)

        def scores(test: ImageArray) -> torch.Tensor:
            return self.extract(net, test)

        return scores


PROTOCOLS: Registry[Callable[[nn.Module, EvalContext], list[Fitted]]] = Registry("eval protocol")


EVAL_SUBSET_SEED = 0  # every run's evaluation subsets are the same images


def seeded_subset(data: ImageArray, limit: int | None, seed: int) -> ImageArray:
    """At most ``limit`` images of ``data``, a seeded random subset in the original order."""
    if limit is None or limit >= len(data):
        return data
    if limit < 1:
        raise ConfigError(f"a limit must be a positive number of images, got {limit}")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
    return data.subset(idx.sort().values)


def channel_stats(
    images: torch.Tensor, max_images: int = 10_000
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of uint8 images (N, C, H, W)."""
    step = max(1, len(images) // max_images)
    x = images[::step].float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()


def labelled(data: ImageArray) -> ImageArray:
    """The labelled images of a split, or a DataError when it has none."""
    keep = data.labels >= 0
    if not bool(keep.any()):
        raise DataError(
            f"{data.name} split {data.split!r} has no labels and cannot be used for evaluation"
        )
    return data if bool(keep.all()) else data.subset(keep.nonzero().squeeze(1))


def load_eval_splits(
    dataset: str,
    cfg: EvalConfig,
    *,
    root: str | None,
    download: bool,
    image_size: int | None,
) -> tuple[ImageArray, ImageArray]:
    """The (train, test) splits used to evaluate on ``dataset``, limited as configured.

    The ``eval.train_limit`` / ``eval.test_limit`` subsets are drawn with a fixed seed, not the
    run's, so runs with different seeds are scored on the same images and compare."""
    train, test = (
        labelled(load_dataset(dataset, s, root=root, download=download, image_size=image_size))
        for s in ("train", "test")
    )
    return seeded_subset(train, cfg.train_limit, EVAL_SUBSET_SEED), seeded_subset(
        test, cfg.test_limit, EVAL_SUBSET_SEED + 1
    )


def train_classifier(
    ctx: EvalContext,
    backbone: nn.Module,
    data: ImageArray,
    *,
    name: str,
    frozen: bool,
    epochs: int,
    lr: float,
    weight_decay: float,
) -> tuple[Classifier, int]:
    """Train a copy of ``backbone`` + a linear head on ``data`` (labels >= 0) with the crop +
    flip view, SGD and a cosine schedule, through the training loop; its metrics and checkpoint
    go to ``ctx.work_dir / name``. Returns the model and the epochs it trained (raised to take
    at least ``eval.min_steps`` steps)."""
    from selfsup.train.loop import fit  # the loop imports this package's siblings

    view = crop_flip_view(ctx.size, ctx.mean, ctx.std, ctx.cfg.crop_scale)
    torch.manual_seed(ctx.seed)
    model = Classifier(
        copy.deepcopy(backbone), [view], ctx.num_classes, frozen=frozen,
        head_lr_scale=1.0 if frozen else ctx.cfg.finetune_head_lr_scale,
    )  # fmt: skip
    rc = ctx.run_cfg
    batch = min(ctx.cfg.finetune_batch_size, len(data))
    epochs = epochs_for(len(data) // batch, epochs, ctx.cfg.min_steps)
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        optimizer="sgd",
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=0.0,
        final_lr_ratio=0.0,
        device=rc.train.device,
        precision=rc.train.precision,
        channels_last=rc.train.channels_last,
        log_every=rc.train.log_every,
        progress=rc.train.progress,
    )
    cfg = dataclasses.replace(rc, train=train, seed=ctx.seed)
    out = ctx.work_dir / name
    shutil.rmtree(out, ignore_errors=True)  # a derived artefact: always trained afresh
    fit(model, ctx.images(data), cfg, out, labels=data.labels)
    return model.eval(), epochs


def held_out(ctx: EvalContext, labelled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) for choosing a trained evaluation's lr: the
    ``labelled`` indices and ``eval.val_fraction`` of the training split drawn (seeded) from
    the images outside them; their labels only score the lr candidates. When too few images
    lie outside (a fraction near 1), the validation images are carved from ``labelled``."""
    n_val = max(1, round(ctx.cfg.val_fraction * len(ctx.train)))
    rest = complement(len(ctx.train), labelled)
    g = torch.Generator().manual_seed(ctx.seed + 7919)
    if len(rest) >= n_val:
        return labelled, rest[torch.randperm(len(rest), generator=g)[:n_val]].sort().values
    fit_part, val_part = carve_validation(len(labelled), ctx.cfg.val_fraction, ctx.seed)
    return labelled[fit_part.sort().values], labelled[val_part.sort().values]


def train_choosing_lr(
    ctx: EvalContext,
    backbone: nn.Module,
    data: ImageArray,
    val: ImageArray,
    *,
    name: str,
    frozen: bool,
    epochs: int,
    lrs: Sequence[float],
    weight_decay: float,
) -> tuple[Classifier, dict[str, Any]]:
    """:func:`train_classifier` once per lr of ``lrs``, keeping the model with the best top-1
    on ``val`` (held-out training images): the lr is chosen for each arm (init, fraction,
    ratio) on its own. Returns the model and the record fields ``lr``, ``epochs``, ``steps``
    and, when there was a choice, ``val_top1`` and ``lr_sweep`` ([[lr, val top-1], ...])."""
    best: tuple[float, float, Classifier, int] | None = None
    sweep = []
    for lr in lrs:
        model, n_epochs = train_classifier(
            ctx, backbone, data, name=f"{name}-lr{lr:g}", frozen=frozen, epochs=epochs,
            lr=lr, weight_decay=weight_decay,
        )  # fmt: skip
        acc = 0.0
        if len(lrs) > 1:
            pred = ctx.classifier_scores(model)(val).argmax(1).cpu()
            acc = float((pred == val.labels.cpu()).float().mean())
            sweep.append([lr, acc])
        if best is None or acc > best[0]:
            best = (acc, lr, model, n_epochs)
    assert best is not None, "eval.finetune_lrs is checked to be non-empty"
    acc, lr, model, n_epochs = best
    batch = min(ctx.cfg.finetune_batch_size, len(data))
    info: dict[str, Any] = {"lr": lr, "epochs": n_epochs, "steps": n_epochs * (len(data) // batch)}
    if sweep:
        info.update(val_top1=acc, lr_sweep=sweep)
    return model, info


@PROTOCOLS.register("knn")
def knn_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """Weighted kNN on frozen features (DINO eval_knn.py), one predictor per k.

    A k larger than the bank (the training images, at most ``eval.train_limit``) cannot be
    used: every bank image votes, which is kNN with k = the bank size, and the record says so:
    ``k`` is the k used and ``k_requested`` lists the configured ks it stands for. Ks that come
    to the same k are evaluated once."""
    bank = ctx.features(backbone, ctx.train)
    requested: dict[int, list[int]] = {}  # k used -> the configured ks
    for k in ctx.cfg.knn_k:
        requested.setdefault(min(k, len(bank)), []).append(k)
    fitted = []
    for k, asked in requested.items():

        def scores(test: ImageArray, k: int = k) -> torch.Tensor:
            query = ctx.features(backbone, test)
            t, c = ctx.cfg.knn_temperature, ctx.num_classes
            return knn_predict(bank, ctx.train.labels, query, k=k, temperature=t, num_classes=c)

        info: dict[str, Any] = {"k": k, "temperature": ctx.cfg.knn_temperature}
        if set(asked) != {k}:
            info["k_requested"] = sorted(set(asked))
        fitted.append(Fitted(info, scores))
    return fitted


@PROTOCOLS.register("linear")
def linear_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """L2-regularised logistic regression on precomputed frozen features (no augmentation);
    the penalty is chosen on a validation split carved from the training split."""
    probe, choice = ctx.fit_probe(backbone, ctx.train)
    info = {"l2": choice["l2"], "val_top1": choice["val_top1"]}
    return [Fitted(info, lambda test: probe.predict(ctx.features(backbone, test)))]


@PROTOCOLS.register("linear-aug")
def linear_aug_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """A linear head on the frozen backbone, trained on random resized crops + flips with SGD
    and a cosine schedule; each lr of ``eval.linear_aug_lrs`` is tried and the best on
    held-out training images kept (the model then trained on the rest of the split)."""
    c = ctx.cfg
    fit_idx = val_idx = torch.arange(len(ctx.train))
    if len(c.linear_aug_lrs) > 1:
        fit_idx, val_idx = held_out(ctx, fit_idx)
    model, info = train_choosing_lr(
        ctx,
        backbone,
        ctx.train.subset(fit_idx),
        ctx.train.subset(val_idx),
        name=f"linear-aug-s{ctx.seed}",
        frozen=True,
        epochs=c.linear_aug_epochs,
        lrs=c.linear_aug_lrs,
        weight_decay=c.linear_aug_weight_decay,
    )
    return [Fitted(info, ctx.classifier_scores(model))]


@PROTOCOLS.register("finetune")
def finetune_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """The whole network fine-tuned on each class-balanced label fraction (the same subset for
    every method at a given seed), the lr chosen from ``eval.finetune_lrs`` for each (init,
    fraction) on held-out training images outside the fraction. Pretrained and random-init
    arms take the same number of steps (recorded)."""
    c = ctx.cfg
    fitted = []
    for fraction in c.finetune_fractions:
        idx, val_idx = held_out(ctx, class_balanced_indices(ctx.train.labels, fraction, ctx.seed))
        model, info = train_choosing_lr(
            ctx,
            backbone,
            ctx.train.subset(idx),
            ctx.train.subset(val_idx),
            name=f"finetune-{fraction:g}-s{ctx.seed}",
            frozen=False,
            epochs=c.finetune_epochs,
            lrs=c.finetune_lrs,
            weight_decay=c.finetune_weight_decay,
        )
        info = {"fraction": fraction, "n_labelled": len(idx), **info}
        fitted.append(Fitted(info, ctx.classifier_scores(model)))
    return fitted


def check_protocols(names: Sequence[str]) -> None:
    for name in names:
        PROTOCOLS.get(name)


def evaluate_backbone(
    backbone: nn.Module,
    cfg: EvalConfig,
    *,
    datasets: Sequence[str],
    protocols: Sequence[str],
    size: int,
    init: str,
    root: str | None,
    download: bool,
    image_size: int | None,
    seed: int,
    device: torch.device,
    splits: dict[str, tuple[ImageArray, ImageArray]] | None = None,
    run_cfg: Config | None = None,
    work_dir: Path | None = None,
) -> list[dict]:
    """Run ``protocols`` on each dataset and seed for one backbone: fit on the training split,
    then score the test split once per fitted predictor. ``splits`` caches loaded data."""
    check_protocols(protocols)
    splits = {} if splits is None else splits
    seeds = cfg.seeds or [seed]
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="selfsup-eval-"))
    records = []
    for name in datasets:
        if name not in splits:
            splits[name] = load_eval_splits(
                name, cfg, root=root, download=download, image_size=image_size
            )
        train, test = splits[name]
        test_id = test.content_id()
        channels = input_channels(backbone)
        mean, std = channel_stats(match_channels(train.images, channels))
        for s in seeds:
            ctx = EvalContext(
                dataset=name,
                train=train,
                num_classes=max(len(train.classes), int(train.labels.max()) + 1),
                size=size,
                mean=mean,
                std=std,
                channels=channels,
                device=device,
                seed=s,
                cfg=cfg,
                run_cfg=run_cfg or Config(),
                work_dir=work / f"{name.replace(':', '-').replace('/', '_')}-{init}",
            )
            for protocol in protocols:
                t0 = time.perf_counter()
                predictors = PROTOCOLS.get(protocol)(backbone, ctx)  # fit: train split only
                fit_seconds = (time.perf_counter() - t0) / max(1, len(predictors))
                for fitted in predictors:
                    t0 = time.perf_counter()
                    scores = fitted.scores(test)  # the test split, once, to report
                    score_seconds = time.perf_counter() - t0
                    metrics = classification_metrics(scores, test.labels, ctx.num_classes)
                    settings = eval_settings(protocol, cfg)
                    records.append(
                        {
                            "protocol": protocol,
                            "dataset": name,
                            "init": init,
                            "settings": settings,
                            "settings_id": settings_id(settings),
                            **fitted.info,
                            **metrics,
                            "n_train": len(train),
                            "n_test": len(test),
                            "test_id": test_id,
                            "seed": s,
                            "fit_seconds": round(fit_seconds, 3),
                            "score_seconds": round(score_seconds, 3),
                        }
                    )
    return records
