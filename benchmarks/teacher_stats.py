"""An EMA teacher's batch-norm statistics: its own, or the student's copied in (issue #21).

Official DINO (and MoCo, ISD) move the teacher's *parameters* by EMA and leave its BN running
statistics to its own forward passes; selfsup used to copy the student's statistics into the
teacher after every step, so an evaluated teacher normalised with statistics of the student's
inputs (DINO's student also sees the local crops). Training is the same either way (in
training mode BN uses the batch's statistics), so one finished run answers the question: this
scores kNN-20 (DINO's weighted vote, all training images as the bank, the full test split) of
its teacher as trained (its own statistics) and with the student's copied in, and of the
student, side by side.

Usage: ``python benchmarks/teacher_stats.py RUN_DIR [RUN_DIR ...]``
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from selfsup.data.sources import load_dataset
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.metrics import classification_metrics
from selfsup.features import extract_features
from selfsup.rundir import load_run


def knn20(backbone: torch.nn.Module, cfg, train, test) -> float:
    opts = dict(
        size=cfg.views.size,
        mean=cfg.data.mean,
        std=cfg.data.std,
        precision=cfg.train.precision,
    )
    bank = extract_features(backbone, train.images, **opts)
    queries = extract_features(backbone, test.images, **opts)
    n = len(test.classes)
    scores = knn_predict(bank, train.labels, queries, k=20, num_classes=n)
    return classification_metrics(scores, test.labels, n)["top1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| run | teacher, own BN statistics | teacher, student's copied in | student |")
    print("|---|---|---|---|")
    for run in args.runs:
        cfg, method = load_run(run)
        train = load_dataset(cfg.data.dataset, "train", root=cfg.data.root)
        test = load_dataset(cfg.data.dataset, "test", root=cfg.data.root)
        teacher = method.teacher[0]
        copied = copy.deepcopy(teacher)
        for t_buf, s_buf in zip(copied.buffers(), method.backbone.buffers(), strict=True):
            t_buf.copy_(s_buf)
        scores = [knn20(m, cfg, train, test) for m in (teacher, copied, method.backbone)]
        print(f"| {run.name} | " + " | ".join(f"{100 * s:.1f}%" for s in scores) + " |")


if __name__ == "__main__":
    main()
