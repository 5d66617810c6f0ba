"""The protocols that fit on the training split: ``knn``, ``linear``, ``linear-aug`` and
``finetune`` (``pseudo-label`` is in :mod:`selfsup.evaluate.semisupervised`), and the trained
classifier they share. Each receives the backbone and an :class:`EvalContext` and returns
:class:`Fitted` predictors; :mod:`selfsup.evaluate.harness` scores them on the test split."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from selfsup.data.array import ImageArray
from selfsup.data.recipes import crop_flip_view
from selfsup.data.sampling import class_balanced_indices, complement
from selfsup.evaluate.context import PROTOCOLS, EvalContext, Fitted
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import (
    carve_validation,
    epochs_for,
)
from selfsup.methods.supervised import Classifier
from selfsup.precision import resolve_device
from selfsup.train.config import TrainConfig
from selfsup.train.heldout import classification_curves, curve_samples
from selfsup.train.loop import fit


def _classifier_schedule(
    ctx: EvalContext, n: int, epochs: int, lr: float, weight_decay: float, *, frozen: bool
) -> TrainConfig:
    """A trained evaluation's train settings: SGD, cosine without warm-up, the finetune batch
    (at most the ``n`` images), epochs raised to reach ``eval.min_steps``, and the run's own
    device, precision, memory layout, logging and progress bar.

    A fine-tune on the CPU (the backbone trained) runs in the contiguous layout whatever
    ``train.channels_last`` says: torch's CPU channels_last backward aborts the process at some
    batch sizes (2.14.1, two threads, a batch of 63: docs/reliability.md), and the layout's
    CPU gain is within the noise (benchmarks/RESULTS.md). A linear probe (frozen backbone, no
    backward through it) and every GPU run keep the run's setting."""
    rc = ctx.run_cfg
    batch = min(ctx.cfg.finetune.batch_size, n)
    cpu_backward = not frozen and resolve_device(rc.train.device).type == "cpu"
    return TrainConfig(
        epochs=epochs_for(n // batch, epochs, ctx.cfg.min_steps),
        batch_size=batch,
        optimizer="sgd",
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=0.0,
        final_lr_ratio=0.0,
        device=rc.train.device,
        precision=rc.train.precision,
        channels_last=rc.train.channels_last and not cpu_backward,
        log_every=rc.train.log_every,
        progress=rc.train.progress,
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
    val: ImageArray | None = None,
    label: str | None = None,
) -> tuple[Classifier, int]:
    """Train a copy of ``backbone`` + a linear head on ``data`` (labels >= 0) with the crop +
    flip view, SGD and a cosine schedule (and, fine-tuned, ``backbone.dropout`` before the
    head), through the training loop; its metrics and checkpoint
    go to ``ctx.work_dir / name``. Returns the model and the epochs it trained (raised to take
    at least ``eval.min_steps`` steps). With held-out training images ``val`` and
    ``eval.val_images`` > 0, each epoch also logs train / val loss and top-1 on at most that many
    of them (:mod:`selfsup.train.heldout`; the run's plots draw them). ``label``
    names it on the progress bar (default: ``name`` and the evaluated dataset and init)."""
    view = crop_flip_view(ctx.size, ctx.mean, ctx.std, ctx.cfg.crop_scale)
    torch.manual_seed(ctx.seed)
    model = Classifier(
        copy.deepcopy(backbone),
        [view],
        ctx.num_classes,
        frozen=frozen,
        head_lr_scale=1.0 if frozen else ctx.cfg.finetune.head_lr_scale,
        dropout=0.0 if frozen else ctx.run_cfg.backbone.dropout,  # no dropout in a linear probe
    )
    train = _classifier_schedule(ctx, len(data), epochs, lr, weight_decay, frozen=frozen)
    epochs = train.epochs
    out = ctx.work_dir / name
    shutil.rmtree(out, ignore_errors=True)  # a derived artefact: always trained afresh
    # what its checkpoint records: this classifier, not the pretraining run
    identity = {
        "method": {"name": "classifier", "frozen": frozen, "num_classes": ctx.num_classes},
        "backbone": dataclasses.asdict(ctx.run_cfg.backbone),
        "data": {"dataset": ctx.dataset, "n_images": len(data)},
        "train": dataclasses.asdict(train),
        "seed": ctx.seed,
    }
    monitor = _curves_monitor(ctx, model, data, val)
    fit(
        model,
        ctx.images(data),
        train,
        out,
        seed=ctx.seed,
        identity=identity,
        labels=data.labels,
        on_device=ctx.run_cfg.data.on_device,
        monitor=monitor,
        monitor_every=1 if monitor else 0,
        label=label or f"{name} ({ctx.work_dir.name})",
    )
    return model.eval(), epochs


def _curves_monitor(
    ctx: EvalContext, model: Classifier, data: ImageArray, val: ImageArray | None
) -> Callable[[nn.Module, float], dict[str, float]] | None:
    """With held-out images and ``eval.val_images``: the per-epoch train / val loss and top-1
    of ``model`` on at most that many of them (:mod:`selfsup.train.heldout`)."""
    if val is None or not ctx.cfg.val_images:
        return None
    train_s, val_s = curve_samples(data, val, ctx.cfg.val_images, ctx.seed)
    scores = ctx.classifier_scores(model)
    return lambda _backbone, _epoch: classification_curves(scores, train_s, val_s)


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
    per_epoch = len(data) // min(ctx.cfg.finetune.batch_size, len(data))
    planned = epochs_for(per_epoch, epochs, ctx.cfg.min_steps)
    raised = (
        f", raised from {epochs} by eval.min_steps={ctx.cfg.min_steps}" if planned > epochs else ""
    )
    print(
        f"selfsup: {name} ({ctx.work_dir.name}): {len(data):,} labelled images, {planned} epochs "
        f"of {per_epoch} steps{raised}, for each of {len(lrs)} lr(s) {list(lrs)}",
        file=sys.stderr,
        flush=True,
    )
    for lr in lrs:
        model, n_epochs = train_classifier(
            ctx,
            backbone,
            data,
            name=f"{name}-lr{lr:g}",
            frozen=frozen,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            val=val,
            label=f"{name} lr={lr:g} ({ctx.work_dir.name})",
        )
        acc = 0.0
        if len(lrs) > 1:
            pred = ctx.classifier_scores(model)(val).argmax(1).cpu()
            acc = float((pred == val.labels.cpu()).float().mean())
            sweep.append([lr, acc])
        if best is None or acc > best[0]:
            best = (acc, lr, model, n_epochs)
    assert best is not None, "eval.finetune.lrs is checked to be non-empty"
    acc, lr, model, n_epochs = best
    batch = min(ctx.cfg.finetune.batch_size, len(data))
    info: dict[str, Any] = {"lr": lr, "epochs": n_epochs, "steps": n_epochs * (len(data) // batch)}
    if sweep:  # n_val: the labelled images that chose the lr (1% labels: 10x the training ones)
        info.update(val_top1=acc, lr_sweep=sweep, n_val=len(val))
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
    for k in ctx.cfg.knn.k:
        requested.setdefault(min(k, len(bank)), []).append(k)
    fitted = []
    for k, asked in requested.items():

        def scores(test: ImageArray, k: int = k) -> torch.Tensor:
            query = ctx.features(backbone, test)
            t, c = ctx.cfg.knn.temperature, ctx.num_classes
            return knn_predict(bank, ctx.train.labels, query, k=k, temperature=t, num_classes=c)

        info: dict[str, Any] = {"k": k, "temperature": ctx.cfg.knn.temperature}
        if set(asked) != {k}:
            info["k_requested"] = sorted(set(asked))
        fitted.append(Fitted(info, scores))
    return fitted


@PROTOCOLS.register("linear")
def linear_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """L2-regularised logistic regression on precomputed frozen features (no augmentation; a
    ViT's last ``eval.vit_last_blocks`` CLS tokens, :meth:`EvalContext.probe_net`); the penalty
    is chosen on a validation split carved from the training split."""
    probe, choice = ctx.fit_probe(backbone, ctx.train)
    info = {"l2": choice["l2"], "val_top1": choice["val_top1"], "n_val": choice["n_val"]}
    return [Fitted(info, lambda test: probe.predict(ctx.features(backbone, test, probe=True)))]


@PROTOCOLS.register("linear-aug")
def linear_aug_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """A linear head on the frozen backbone's probe feature (a ViT's last
    ``eval.vit_last_blocks`` CLS tokens, as DINO's eval_linear.py), trained on random resized
    crops + flips with SGD and a cosine schedule; each lr of ``eval.linear_aug.lrs`` is tried
    and the best on held-out training images kept (the model then trained on the rest of the
    split)."""
    c = ctx.cfg
    fit_idx = val_idx = torch.arange(len(ctx.train))
    if len(c.linear_aug.lrs) > 1 or c.val_images:  # held-out images to choose on / for curves
        fit_idx, val_idx = held_out(ctx, fit_idx)
    model, info = train_choosing_lr(
        ctx,
        ctx.probe_net(backbone),
        ctx.train.subset(fit_idx),
        ctx.train.subset(val_idx),
        name=f"linear-aug-s{ctx.seed}",
        frozen=True,
        epochs=c.linear_aug.epochs,
        lrs=c.linear_aug.lrs,
        weight_decay=c.linear_aug.weight_decay,
    )
    return [Fitted(info, ctx.classifier_scores(model))]


@PROTOCOLS.register("finetune")
def finetune_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """The whole network fine-tuned on each class-balanced label fraction (the same subset for
    every method at a given seed), the lr chosen from ``eval.finetune.lrs`` for each (init,
    fraction) on held-out training images outside the fraction. Pretrained and random-init
    arms take the same number of steps (recorded)."""
    c = ctx.cfg
    fitted = []
    for fraction in c.finetune.fractions:
        idx, val_idx = held_out(ctx, class_balanced_indices(ctx.train.labels, fraction, ctx.seed))
        model, info = train_choosing_lr(
            ctx,
            backbone,
            ctx.train.subset(idx),
            ctx.train.subset(val_idx),
            name=f"finetune-{fraction:g}-s{ctx.seed}",
            frozen=False,
            epochs=c.finetune.epochs,
            lrs=c.finetune.lrs,
            weight_decay=c.finetune.weight_decay,
        )
        info = {"fraction": fraction, "n_labelled": len(idx), **info}
        fitted.append(Fitted(info, ctx.classifier_scores(model)))
    return fitted
