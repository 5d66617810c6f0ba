"""Semi-supervised pseudo-labelling (the ``pseudo-label`` protocol).

From the training split, a class-balanced ``eval.pseudo.fraction`` keeps its labels; the rest is
the unlabeled pool (its true labels are hidden from training and only used to report how
accurate the pseudo-labels were). A teacher labels ``ratio x n_labelled`` pool images: the
backbone's linear probe fitted on the labelled part, or the classifier of a supervised / joint
run (``eval.pseudo.teacher=RUN_DIR``; it should have been trained without the pool's labels to
keep the premise). Those with confidence >= ``eval.pseudo.threshold`` join the labelled set, and
a student (the backbone fine-tuned with a fresh head) is trained on both. One student per ratio
of ``eval.pseudo.ratios`` (1:0, 1:0.4, 1:1, 1:2, 1:10 by default); ratio 0 is the labelled-only
baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.data.array import ImageArray
from selfsup.errors import ConfigError
from selfsup.evaluate.context import PROTOCOLS, EvalContext, Fitted
from selfsup.evaluate.features import run_logits
from selfsup.evaluate.protocols import held_out, train_choosing_lr
from selfsup.evaluate.sampling import class_balanced_indices, complement
from selfsup.rundir import LABELLED_IMAGES, load_run


def select_confident(probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep (N,) bool, pseudo-labels (N,)) of class probabilities (N, K): the argmax class,
    kept where its probability is at least ``threshold``."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"the confidence threshold must be in [0, 1], got {threshold}")
    conf, pseudo = probs.max(dim=1)
    return conf >= threshold, pseudo


Teacher = Callable[[ImageArray], torch.Tensor]


def pseudo_label_teacher(
    backbone: nn.Module, ctx: EvalContext, labelled: ImageArray, pool: ImageArray
) -> tuple[str, Teacher]:
    """(name, images -> class probabilities (N, K) on the CPU): the classifier of the run in
    ``eval.pseudo.teacher`` (a supervised or joint run, with its own normalisation; refused if
    it was trained on the label of any ``pool`` image), else the backbone's linear probe
    fitted on the labelled part."""
    if ctx.cfg.pseudo.teacher is None:
        probe, _ = ctx.fit_probe(backbone, labelled)
        return "probe", lambda data: probe.predict(ctx.features(backbone, data)).softmax(1).cpu()
    run = Path(ctx.cfg.pseudo.teacher)
    tcfg, method = load_run(run)
    head = getattr(method, "head", None)
    if not isinstance(head, nn.Linear) or head.out_features != ctx.num_classes:
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r} must be a supervised or joint run with "
            f"{ctx.num_classes} classes (selfsup supervised --config ...)"
        )
    check_teacher_never_saw(run, pool, ctx)

    def probs(data: ImageArray) -> torch.Tensor:
        logits = run_logits(
            method, tcfg, data.images, batch_size=ctx.cfg.batch_size, device=ctx.device
        )
        return logits.softmax(1).cpu()

    return str(run), probs


def check_teacher_never_saw(run: Path, pool: ImageArray, ctx: EvalContext) -> None:
    """Refuse a teacher run that was trained on the labels of pool images: its pseudo-labels
    would be memorised labels, and the students' gain would be leakage, not semi-supervision."""
    path = run / LABELLED_IMAGES
    if not path.is_file():
        raise ConfigError(
            f"eval.pseudo.teacher={str(run)!r} does not record which images' labels it trained "
            f"on ({LABELLED_IMAGES}, written by selfsup since this check exists); train the "
            "teacher again with selfsup supervised"
        )
    seen = np.load(path, allow_pickle=False)
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


@PROTOCOLS.register("pseudo-label")
def pseudo_label_protocol(backbone: nn.Module, ctx: EvalContext) -> list[Fitted]:
    c = ctx.cfg
    lab_idx = class_balanced_indices(ctx.train.labels, c.pseudo.fraction, ctx.seed)
    lab_idx, val_idx = held_out(ctx, lab_idx)  # held-out images to choose each student's lr
    val = ctx.train.subset(val_idx)
    pool = complement(len(ctx.train), torch.cat([lab_idx, val_idx]))
    pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed))]
    labelled = ctx.train.subset(lab_idx)
    teacher_name, teacher = pseudo_label_teacher(backbone, ctx, labelled, ctx.train.subset(pool))
    fitted = []
    for ratio in c.pseudo.ratios:
        unlabeled = ctx.train.subset(pool[: min(len(pool), round(ratio * len(labelled)))])
        info = {
            "ratio": ratio,
            "fraction": c.pseudo.fraction,
            "threshold": c.pseudo.threshold,
            "n_labelled": len(labelled),
            "n_unlabeled": len(unlabeled),
            "n_pseudo": 0,
            "pseudo_label_acc": None,
            "teacher": teacher_name,
        }
        student_data = labelled
        if len(unlabeled):
            probs = teacher(unlabeled)
            keep, pseudo = select_confident(probs, c.pseudo.threshold)
            info["n_pseudo"] = int(keep.sum())
            if keep.any():  # the pool's true labels: only to report the pseudo-labels' accuracy
                truth = unlabeled.labels[keep]
                info["pseudo_label_acc"] = float((pseudo[keep] == truth).float().mean())
                student_data = _join(
                    labelled, unlabeled.subset(keep.nonzero().squeeze(1)), pseudo[keep]
                )
        model, trained = train_choosing_lr(
            ctx,
            backbone,
            student_data,
            val,
            name=f"pseudo-label-{ratio:g}-s{ctx.seed}",
            frozen=False,
            epochs=c.finetune.epochs,
            lrs=c.finetune.lrs,
            weight_decay=c.finetune.weight_decay,
        )
        info.update(trained)
        fitted.append(Fitted(info, ctx.classifier_scores(model)))
    return fitted
