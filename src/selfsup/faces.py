"""``selfsup faces``: a pretrained backbone on faces (LFW), before and after fine-tuning.

The face study of the VICReg paper's style of analysis, as one command: build the backbone
(ResNet-50 by default), start it from pretrained weights in any format ``backbone.weights``
reads (VICReg's / Barlow Twins' / DINO's ``resnet50.pth``, torchvision, a selfsup run), fine-tune
it on the identities of LFW's people with at least ``min_images`` images (the ``finetune``
evaluation's classifier training: SGD, cosine schedule, crop + flip views, the lr chosen on
held-out training images when ``eval.finetune.lrs`` lists several), and measure, for the
pretrained (frozen) and the fine-tuned backbone:

* identification: kNN on identities, the training images as the bank and the test images as
  queries (1-NN and DINO's weighted kNN for each ``eval.knn.k``); the fine-tuned classifier's
  own top-1 too;
* verification: the 10-fold accuracy on ``pairs.txt`` (:mod:`selfsup.evaluate.verification`);
  pairs may show people the fine-tuning saw (``pairs_seen_in_finetuning`` counts them);
* grids of the most similar and least similar training faces of a few test queries.

Without weights the backbone starts from random init, and its records say ``random-init``.

Writes ``RUN_DIR/config.yaml``, ``results.json``, ``plots/faces-{pretrained,finetuned}.png``
and the fine-tuning's metrics and checkpoint under ``RUN_DIR/evals/``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.analysis.retrieval import draw_grid, exact_neighbours, precision_at_k
from selfsup.atomic import write_json_atomic
from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights, weights_normalisation
from selfsup.config import Config, load_config, save_config
from selfsup.data.array import ImageArray, channel_stats
from selfsup.data.lfw import (
    LFW,
    LFW_TEST_FRACTION,
    Pair,
    load_faces,
    load_lfw,
    pairs_file,
    read_pairs,
)
from selfsup.errors import DataError
from selfsup.evaluate.context import EvalContext
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import carve_validation
from selfsup.evaluate.protocols import train_choosing_lr
from selfsup.evaluate.verification import pair_scores, verification_accuracy
from selfsup.layout import RunDir
from selfsup.precision import resolve_device

FACE_DEFAULTS = [
    "backbone.name=resnet50",  # the published checkpoints' architecture
    "data.dataset=lfw",
    "data.image_size=112",  # the usual face-recognition input side (e.g. 112 x 112 ArcFace)
]
"""Defaults of the faces workflow, before the command line's ``key=value`` overrides."""


def faces_config(
    overrides: list[str], weights: str | None, data_root: Path, min_images: int
) -> Config:
    """The workflow's config: its defaults, then the command line's overrides; the weights,
    data root and LFW subset recorded in it (``config.yaml``) for provenance."""
    cfg = load_config(None, [*FACE_DEFAULTS, *overrides])
    cfg.backbone.weights = weights or cfg.backbone.weights
    cfg.data.root, cfg.data.dataset = str(data_root), f"lfw:{min_images}"
    return cfg


def run_faces(
    cfg: Config,
    data_root: Path,
    out: Path,
    *,
    min_images: int,
    n_queries: int = 6,
    k: int = 8,
) -> dict[str, Any]:
    """The whole workflow (see the module docstring); returns what it writes to results.json."""
    size = cfg.data.image_size or 112
    device = resolve_device(cfg.train.device)
    lfw = load_lfw(data_root, min_images=min_images, image_size=size, download=cfg.data.download)
    train = lfw.split("train", LFW_TEST_FRACTION, cfg.seed)
    test = lfw.split("test", LFW_TEST_FRACTION, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, RunDir(out).config)
    backbone = _start_backbone(cfg, size)
    mean, std, norm = _normalisation(cfg, train)
    ctx = EvalContext(
        dataset=train.name,
        train=train,
        num_classes=len(lfw.images.classes),
        size=size,
        mean=list(mean),
        std=list(std),
        channels=3,
        device=device,
        seed=cfg.seed,
        cfg=cfg.eval,
        run_cfg=cfg,
        work_dir=RunDir(out).evals,
    )
    pairs = _pair_images(lfw, size, data_root)  # a bad pairs file fails before training
    model, info = _finetune(ctx, backbone)
    start = "pretrained" if cfg.backbone.weights else "random-init"
    results: dict[str, Any] = {
        "weights": cfg.backbone.weights,
        "backbone": cfg.backbone.name,
        "min_images": min_images,
        "normalisation": {"mean": list(mean), "std": list(std), "source": norm},
        "n_people": len(lfw.images.classes),
        "n_train": len(train),
        "n_test": len(test),
        "finetune": info,
        "identification": {},
        "verification": {},
        "grids": {},
    }
    for init, net in ((start, backbone), ("finetuned", model.backbone)):
        bank, query = ctx.extract(net, train), ctx.extract(net, test)
        results["identification"][init] = _identify(ctx, bank, train, query, test)
        if pairs is not None:
            results["verification"][init] = _verify(ctx, net, pairs, lfw.images.classes)
        path = RunDir(out).plot(f"faces-{init}.png")
        results["grids"][init] = _grid(bank, train, query, test, path, k, n_queries, init, cfg)
    scores = ctx.classifier_scores(model)(test).argmax(1).cpu()
    results["identification"]["classifier_top1"] = float((scores == test.labels).float().mean())
    if pairs is None:
        results["verification"] = None
    write_json_atomic(RunDir(out).results, results)
    return results


def _start_backbone(cfg: Config, size: int) -> nn.Module:
    """The backbone to fine-tune: ``backbone.weights`` when given, else a seeded random init."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, in_channels=3, image_size=size)
    if cfg.backbone.weights:
        load_backbone_weights(backbone, cfg.backbone.weights)
    return backbone


def _normalisation(cfg: Config, train: ImageArray) -> tuple[Any, Any, str]:
    """(mean, std, where they come from): ``data.mean`` / ``data.std`` when set, else the
    inputs the starting weights were trained on (ImageNet: official checkpoints), else
    measured on the LFW training images."""
    if cfg.data.mean and cfg.data.std:
        return cfg.data.mean, cfg.data.std, "data.mean / data.std"
    if cfg.backbone.weights:
        own = weights_normalisation(cfg.backbone.weights)
        if own is not None and len(own[0]) == 3:
            return own
    return *channel_stats(train.images), "measured on the LFW training images"


def _finetune(ctx: EvalContext, backbone: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone + a linear identity head trained on the training split (lr chosen on a
    held-out carve of it when several are configured)."""
    c = ctx.cfg.finetune
    fit_idx = val_idx = torch.arange(len(ctx.train))
    if len(c.lrs) > 1:
        fit_idx, val_idx = carve_validation(len(ctx.train), ctx.cfg.val_fraction, ctx.seed)
    model, info = train_choosing_lr(
        ctx,
        backbone,
        ctx.train.subset(fit_idx.sort().values),
        ctx.train.subset(val_idx.sort().values),
        name="faces-finetune",
        frozen=False,
        epochs=c.epochs,
        lrs=c.lrs,
        weight_decay=c.weight_decay,
    )
    return model, info


def _identify(
    ctx: EvalContext, bank: torch.Tensor, train: ImageArray, query: torch.Tensor, test: ImageArray
) -> dict[str, float]:
    """Top-1 of identities by 1-NN and by the weighted kNN of each ``eval.knn.k``."""
    out = {}
    for k in sorted({1, *ctx.cfg.knn.k}):
        scores = knn_predict(
            bank,
            train.labels,
            query,
            k=k,
            temperature=ctx.cfg.knn.temperature,
            num_classes=ctx.num_classes,
        )
        out[f"knn{k}_top1"] = float((scores.argmax(1).cpu() == test.labels).float().mean())
    return out


@dataclass
class PairSet:
    """LFW's verification pairs and the images they name: rows ``first[i]`` and ``second[i]``
    of ``images`` are pair i."""

    pairs: list[Pair]
    images: ImageArray
    first: torch.Tensor
    second: torch.Tensor


def _pair_images(lfw: LFW, size: int, root: Path) -> PairSet | None:
    """The pairs of ``pairs.txt`` and their images, or None when the file is absent."""
    path = pairs_file(lfw.images_dir)
    if path is None:
        print(
            f"selfsup: no pairs.txt in {lfw.images_dir.parent}; verification skipped",
            file=sys.stderr,
        )
        return None
    pairs = read_pairs(path)
    names = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    files = [lfw.images_dir / n / f"{n}_{i:04d}.jpg" for n, i in names]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataError(f"pairs.txt names {len(absent)} missing image(s), e.g. {absent[0]}")
    images = load_faces(files, size, root / "cache")
    row = {name: i for i, name in enumerate(names)}
    return PairSet(
        pairs,
        ImageArray(images, torch.full((len(files),), -1, dtype=torch.long)),
        torch.tensor([row[p.first] for p in pairs]),
        torch.tensor([row[p.second] for p in pairs]),
    )


def _verify(ctx: EvalContext, net: nn.Module, pairs: PairSet, people: list[str]) -> dict[str, Any]:
    """10-fold verification accuracy of ``net``'s cosine scores; ``people`` are the identities
    the fine-tuning trained on (pairs showing one of them are counted)."""
    feats = ctx.extract(net, pairs.images)
    scores = pair_scores(feats[pairs.first], feats[pairs.second])
    same = torch.tensor([p.same for p in pairs.pairs])
    folds = torch.tensor([p.fold for p in pairs.pairs])
    result = verification_accuracy(scores, same, folds)
    seen = set(people)
    unseen = torch.tensor([p.first[0] not in seen and p.second[0] not in seen for p in pairs.pairs])
    result["pairs_seen_in_finetuning"] = int((~unseen).sum())
    # LFW's protocol keeps the people a model trained on out of its test pairs: the pairs of
    # people the fine-tuning never saw, the threshold still chosen on the other nine folds
    both = bool(same[unseen].any()) and bool((~same[unseen]).any())
    result["unseen_people"] = (
        verification_accuracy(scores[unseen], same[unseen], folds[unseen]) if both else None
    )
    return result


def _grid(
    bank: torch.Tensor,
    train: ImageArray,
    query: torch.Tensor,
    test: ImageArray,
    path: Path,
    k: int,
    n_queries: int,
    init: str,
    cfg: Config,
) -> dict[str, Any]:
    """The most and least similar training faces of ``n_queries`` seeded test queries."""
    near = exact_neighbours(bank, query, k)
    precision = precision_at_k(near, train.labels, test.labels)
    shown = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))
    shown = shown[: min(n_queries, len(test))]
    far = exact_neighbours(bank, query[shown], k, dissimilar=True)
    title = f"{init}: precision@{k} (same person) {100 * precision:.1f}%"
    draw_grid(test.subset(shown), train, near[shown], far, path, title=title)
    return {"path": str(path), "precision_at_k": precision, "k": k}
