"""Semi-supervised pseudo-labelling (the ``pseudo-label`` protocol).

Where the labelled images and the unlabeled pool come from (``eval.pseudo.pool``):

* ``fraction`` (the default): from the training split, a class-balanced ``eval.pseudo.fraction``
  keeps its labels; the rest is the pool (its true labels are hidden from training and only
  used to report how accurate the pseudo-labels were).
* ``unlabeled``: every labelled training image keeps its label, and the pool is drawn (seeded)
  from the dataset's separate split ``eval.pseudo.pool_split`` (STL-10's 100k ``unlabeled``
  images, as in the STL-10 protocol of Coates et al. 2011). A split holding training or test
  images is refused.

A teacher labels ``ratio x n_labelled`` pool images (``eval.pseudo.teacher``): ``pretrained``,
the backbone's linear probe fitted on the labelled images; ``finetuned``, the backbone
fine-tuned on them; ``scratch``, the same architecture from a random init fine-tuned on them
the same way (the teacher without pretraining); or the classifier of a
supervised / joint run directory (it should have been trained without the pool's labels to keep
the premise). Those with confidence >= ``eval.pseudo.threshold`` join the labelled set
(``n_pseudo`` of the record: the images kept), and a student (the backbone fine-tuned with a
fresh head) is trained on both. One student per ratio of ``eval.pseudo.ratios`` (1:0, 1:0.4,
1:1, 1:2, 1:10 by default); ratio 0 is the labelled-only baseline. Every student takes the
same number of optimizer steps (``eval.pseudo.steps=equal``); a ratio the pool cannot supply
is named by the ratio it got. Each student's lr is chosen on held-out training images; the
test split only scores the students.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data.array import ImageArray
from selfsup.data.sampling import class_balanced_indices, complement
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError
from selfsup.evaluate.context import PROTOCOLS, EvalContext, Fitted
from selfsup.evaluate.protocols import held_out, train_choosing_lr
from selfsup.features import run_logits


def select_confident(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep (N,) bool, pseudo-labels (N,)) of class probabilities (N, K): the argmax class,
    kept where its probability is at least ``threshold``."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"the confidence threshold must be in [0, 1], got {threshold}")
    conf, pseudo = probs.max(dim=1)
    return conf >= threshold, pseudo


Teacher = Callable[[ImageArray], torch.Tensor]


def pseudo_label_teacher(
    backbone: nn.Module, ctx: EvalContext, labelled: ImageArray, val: ImageArray, pool: ImageArray
) -> tuple[str, Teacher, dict]:
    """(name, images -> class probabilities (N, K) on the CPU, record fields) for
    ``eval.pseudo.teacher``:
    ``pretrained`` (or None), the backbone's linear probe fitted on ``labelled``;
    ``finetuned``, the backbone fine-tuned on ``labelled``, and ``scratch``, a random-init copy
    of the architecture fine-tuned the same way (the lr chosen on ``val``, held-out training
    images); else the classifier of that run directory (a
    supervised or joint run, with its own normalisation; refused if it was trained on the
    label of any ``pool`` image)."""
    c = ctx.cfg
    if c.pseudo.teacher in (None, "pretrained"):
        # the penalty is chosen on the held-out images, not on a tenth of the labelled set:
        # on 50 of 500 images penalties 1e-4..1 tied at 68% and the tie kept 1.0, a probe so
        # smooth that no pool image reached the 0.9 threshold (max probability median 0.24)
        probe, choice = ctx.fit_probe(backbone, labelled, val if _val_held_out(c) else None)

        def probe_probs(data: ImageArray) -> torch.Tensor:
            return probe.predict(ctx.features(backbone, data, probe=True)).softmax(1).cpu()

        return "probe", probe_probs, {"teacher_l2": choice["l2"], "teacher_n_val": choice["n_val"]}
    if c.pseudo.teacher in ("finetuned", "scratch"):
        net = backbone
        if c.pseudo.teacher == "scratch":
            torch.manual_seed(ctx.seed)
            net = build_backbone(
                ctx.run_cfg.backbone, in_channels=ctx.channels, image_size=ctx.size
            )
        name = f"pseudo-teacher-{c.pseudo.teacher}-s{ctx.seed}"
        model, _ = train_choosing_lr(
            ctx,
            net,
            labelled,
            val,
            name=name,
            frozen=False,
            epochs=c.finetune.epochs,
            lrs=c.finetune.lrs,
            weight_decay=c.finetune.weight_decay,
        )
        logits = ctx.classifier_scores(model)
        return c.pseudo.teacher, lambda data: logits(data).float().softmax(1).cpu(), {}
    run = Path(ctx.cfg.pseudo.teacher)
    if ctx.load_run is None:
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r}: a run directory as teacher needs a run's "
            "evaluation (selfsup eval / pretrain); here use pretrained, finetuned or scratch"
        )
    tcfg, method, seen = ctx.load_run(run)
    head = getattr(method, "head", None)
    if not isinstance(head, nn.Linear) or head.out_features != ctx.num_classes:
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r} must be a supervised or joint run with "
            f"{ctx.num_classes} classes (selfsup supervised --config ...), or one of the "
            "teachers pretrained (the probe), finetuned and scratch"
        )
    check_teacher_never_saw(run, seen, pool, ctx)

    def probs(data: ImageArray) -> torch.Tensor:
        logits = run_logits(
            method, tcfg, data.images, batch_size=ctx.cfg.batch_size, device=ctx.device
        )
        return logits.softmax(1).cpu()

    return str(run), probs, {}


def check_teacher_never_saw(
    run: Path, seen: np.ndarray | None, pool: ImageArray, ctx: EvalContext
) -> None:
    """Refuse a teacher run that was trained on the labels of pool images (``seen``: the
    fingerprints of those images, None when the run does not record them): its pseudo-labels
    would be memorised labels, and the students' gain would be leakage, not semi-supervision."""
    if seen is None:
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r} does not record which images' labels it trained "
            "on (labelled_images.npy, written by selfsup since this check exists); train the "
            "teacher again with selfsup supervised"
        )
    overlap = int(np.isin(pool.fingerprints(), seen).sum())
    if overlap:
        c = ctx.cfg
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r} was trained on the labels of {overlap} of the "
            f"{len(pool)} pool images it would pseudo-label, so its labels are not predictions. "
            "Train the teacher on the labelled part only: selfsup supervised --config ... "
            f"method.label_fraction={c.pseudo.fraction} seed={ctx.seed} (and data.limit equal "
            "to eval.train_limit), or leave eval.pseudo.teacher unset to use the probe"
        )


def _join(labelled: ImageArray, extra: ImageArray, labels: torch.Tensor) -> ImageArray:
    return ImageArray(
        torch.cat([labelled.images, extra.images]),
        torch.cat([labelled.labels, labels.to(labelled.labels.dtype)]),
        list(labelled.classes),
        labelled.name,
        labelled.split,
    )


def _val_held_out(c: Any) -> bool:
    """Whether :func:`split_pool`'s validation images are apart from the labelled ones (with
    ``pool=unlabeled`` and a single lr they are the labelled images themselves)."""
    return c.pseudo.pool == "fraction" or len(c.finetune.lrs) > 1


def split_pool(ctx: EvalContext) -> tuple[ImageArray, ImageArray, ImageArray]:
    """(labelled, validation, pool in a seeded random order) as ``eval.pseudo.pool`` says. The
    validation images (held-out training images) only choose each student's lr; with
    ``pool=unlabeled`` and a single lr nothing is chosen, so every training image is kept."""
    c = ctx.cfg
    order = torch.Generator().manual_seed(ctx.seed)
    if c.pseudo.pool == "fraction":
        lab_idx = class_balanced_indices(ctx.train.labels, c.pseudo.fraction, ctx.seed)
        lab_idx, val_idx = held_out(ctx, lab_idx)
        pool = complement(len(ctx.train), torch.cat([lab_idx, val_idx]))
        pool = pool[torch.randperm(len(pool), generator=order)]
        return ctx.train.subset(lab_idx), ctx.train.subset(val_idx), ctx.train.subset(pool)
    everything = torch.arange(len(ctx.train))
    lab_idx, val_idx = held_out(ctx, everything) if _val_held_out(c) else (everything,) * 2
    labelled = ctx.train.subset(lab_idx)
    unlabeled = load_pool_split(ctx)
    need = min(len(unlabeled), round(max(c.pseudo.ratios) * len(labelled)))
    chosen = torch.randperm(len(unlabeled), generator=order)[:need]
    pool = unlabeled.subset(chosen.sort().values)  # read in file order (a memmap), then shuffle
    return labelled, ctx.train.subset(val_idx), pool.subset(torch.randperm(need, generator=order))


def load_pool_split(ctx: EvalContext) -> ImageArray:
    """The split ``eval.pseudo.pool_split`` of the evaluation dataset, refused when it holds
    training or test images (the pool must be new images, and the test split is never fitted
    on)."""
    split, d = ctx.cfg.pseudo.pool_split, ctx.run_cfg.data
    if {"train", "test"} & set(split.split("+")):
        raise ConfigError(
            f"eval.pseudo.pool_split={split!r} holds training or test images; the pool must be "
            "a separate split of unlabeled images, e.g. eval.pseudo.pool_split=unlabeled "
            "(stl10), or use eval.pseudo.pool=fraction"
        )
    return load_dataset(
        ctx.dataset, split, root=d.root, download=d.download, image_size=d.image_size
    )


@PROTOCOLS.register("pseudo-label")
def pseudo_label_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    """One student per ratio of ``eval.pseudo.ratios``; with ``eval.pseudo.steps=equal`` each
    takes the optimizer steps of the largest student set (see :func:`student_epochs`). A ratio
    the pool cannot supply is named by the ratio it got (``ratio``), the asked one kept as
    ``ratio_requested``, and said on stderr."""
    c = ctx.cfg
    labelled, val, pool = split_pool(ctx)
    teacher_name, teacher, teacher_info = pseudo_label_teacher(backbone, ctx, labelled, val, pool)
    arms = [
        _student_set(ctx, ratio, labelled, pool, teacher, teacher_name) for ratio in c.pseudo.ratios
    ]
    for info, _ in arms:
        info.update(teacher_info)
    epochs = student_epochs(ctx, [len(data) for _, data in arms])
    fitted = []
    for (info, student_data), n_epochs in zip(arms, epochs, strict=True):
        model, trained = train_choosing_lr(
            ctx,
            backbone,
            student_data,
            val,
            name=f"pseudo-label-{info['ratio']:g}-s{ctx.seed}",
            frozen=False,
            epochs=n_epochs,
            lrs=c.finetune.lrs,
            weight_decay=c.finetune.weight_decay,
        )
        info.update(trained)
        fitted.append(Fitted(info, ctx.classifier_scores(model)))
    return fitted


def student_epochs(ctx: EvalContext, sizes: list[int]) -> list[int]:
    """Each student's epochs. ``equal``: the largest set's ``finetune.epochs`` x its steps
    per epoch is every student's step budget (a smaller set repeats more epochs: the 1:10 arm
    took 5x and more the steps of 1:0, so its gain mixed data with compute); ``epochs``:
    ``finetune.epochs`` for all."""
    c = ctx.cfg
    if c.pseudo.steps == "epochs":
        return [c.finetune.epochs] * len(sizes)

    def per_epoch(n: int) -> int:
        return max(1, n // min(c.finetune.batch_size, n))

    budget = c.finetune.epochs * per_epoch(max(sizes))
    return [math.ceil(budget / per_epoch(n)) for n in sizes]


def _student_set(
    ctx: EvalContext,
    ratio: float,
    labelled: ImageArray,
    pool: ImageArray,
    teacher: Teacher,
    teacher_name: str,
) -> tuple[dict, ImageArray]:
    """(record fields, the student's training set) of one ratio: the labelled images plus
    the pool's first ``ratio x n_labelled`` images the teacher labels with confidence >=
    ``eval.pseudo.threshold``."""
    c = ctx.cfg
    asked = round(ratio * len(labelled))
    unlabeled = pool.subset(slice(0, min(len(pool), asked)))
    info: dict = {
        "ratio": ratio,
        "pool": c.pseudo.pool,
        "fraction": c.pseudo.fraction if c.pseudo.pool == "fraction" else None,
        "threshold": c.pseudo.threshold,
        "n_labelled": len(labelled),
        "n_unlabeled": len(unlabeled),
        "n_pseudo": 0,  # the pool images kept (teacher confidence >= threshold)
        "kept_share": None,
        "pseudo_label_acc": None,
        "teacher": teacher_name,
    }
    if len(unlabeled) < asked:  # e.g. fraction 0.1: a 48k pool gives 1:8, not 1:10
        got = round(len(unlabeled) / len(labelled), 2)
        print(
            f"selfsup: pseudo-label 1:{ratio:g} asks {asked:,} pool images, the pool has "
            f"{len(unlabeled):,}: the arm is 1:{got:g} and named so",
            file=sys.stderr,
        )
        info.update(ratio=got, ratio_requested=ratio)
    if c.pseudo.pool == "unlabeled":
        info["pool_split"] = c.pseudo.pool_split
    student_data = labelled
    if len(unlabeled):
        probs = teacher(unlabeled)
        keep, pseudo = select_confident(probs, c.pseudo.threshold)
        info["n_pseudo"] = int(keep.sum())
        info["kept_share"] = info["n_pseudo"] / len(unlabeled)
        if keep.any():
            if unlabeled.has_labels:  # the pool's hidden labels: only to score the teacher
                truth = unlabeled.labels[keep]
                info["pseudo_label_acc"] = float((pseudo[keep] == truth).float().mean())
            student_data = _join(
                labelled, unlabeled.subset(keep.nonzero().squeeze(1)), pseudo[keep]
            )
    return info, student_data
