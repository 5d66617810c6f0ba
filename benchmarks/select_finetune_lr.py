"""Choose ``eval.finetune_lr`` for a run on a validation split carved from the training split.

Fine-tunes the run's backbone on the class-balanced ``--fraction`` of the training split (the
``finetune`` protocol's subset at seed 0) with each candidate lr, and scores every candidate on
``--val`` other *training* images; the test split is never read. Prints one line per lr.

Usage: ``python benchmarks/select_finetune_lr.py RUN_DIR [--lrs 0.05,0.2,0.8,1.6,3.2]
[--fraction 0.1] [--val 2000]`` (the study's choice: ``runs/study-fm/vicreg``, lr 1.6).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from selfsup.evaluate.metrics import classification_metrics
from selfsup.evaluate.protocols import (
    EvalContext,
    channel_stats,
    load_eval_splits,
    train_classifier,
)
from selfsup.evaluate.sampling import class_balanced_indices, complement
from selfsup.pipeline import load_run
from selfsup.train.loop import resolve_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--lrs", default="0.05,0.2,0.8,1.6,3.2")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--val", type=int, default=2000, help="held-out training images")
    args = parser.parse_args(argv)
    cfg, method = load_run(args.run_dir)
    cfg.train.progress = False
    d = cfg.data
    train, _ = load_eval_splits(
        d.dataset, cfg.eval, root=d.root, download=False, image_size=d.image_size, seed=cfg.seed
    )
    idx = class_balanced_indices(train.labels, args.fraction, 0)
    rest = complement(len(train), idx)
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(1))[: args.val]
    val = train.subset(rest[pick])
    mean, std = channel_stats(train.images)
    num_classes = max(len(train.classes), int(train.labels.max()) + 1)
    for lr in (float(x) for x in args.lrs.split(",")):
        ctx = EvalContext(
            dataset=d.dataset,
            train=train,
            num_classes=num_classes,
            size=cfg.views.size,
            mean=mean,
            std=std,
            channels=train.channels,
            device=resolve_device(cfg.train.device),
            seed=0,
            cfg=dataclasses.replace(cfg.eval),
            run_cfg=cfg,
            work_dir=Path(tempfile.mkdtemp(prefix="selfsup-lr-")),
        )
        model, epochs = train_classifier(
            ctx,
            method.backbone,
            train.subset(idx),
            name=f"lr-{lr:g}",
            frozen=False,
            epochs=cfg.eval.finetune_epochs,
            lr=lr,
            weight_decay=cfg.eval.finetune_weight_decay,
        )
        m = classification_metrics(ctx.classifier_scores(model)(val), val.labels, num_classes)
        print(f"lr {lr:g}: validation top-1 {100 * m['top1']:.1f}% ({epochs} epochs)", flush=True)


if __name__ == "__main__":
    main()
