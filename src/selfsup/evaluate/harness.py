"""The harness that runs the protocols and keeps the test split out of their reach.

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

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.backbones.config import is_vit
from selfsup.data.array import ImageArray, channel_stats, labelled, seeded_subset
from selfsup.data.classes import select_classes
from selfsup.data.sources import load_dataset
from selfsup.data.views import eval_center_crop
from selfsup.errors import DataError
from selfsup.evaluate import protocols as _protocols  # noqa: F401  (registers knn, linear, ...)
from selfsup.evaluate import semisupervised as _semisupervised  # noqa: F401  (pseudo-label)
from selfsup.evaluate.config import EvalConfig
from selfsup.evaluate.context import PROTOCOLS, DefaultRun, EvalContext, LoadRun, RunSettings
from selfsup.evaluate.metrics import classification_metrics
from selfsup.evaluate.table import eval_settings, settings_id
from selfsup.features import input_channels, match_channels

EVAL_SUBSET_SEED = 0  # every run's evaluation subsets are the same images


def load_eval_splits(
    dataset: str,
    cfg: EvalConfig,
    *,
    root: str | None,
    download: bool,
    image_size: int | None,
) -> tuple[ImageArray, ImageArray]:
    """The (train, test) splits used to evaluate on ``dataset``: the classes of
    ``eval.classes`` (relabelled 0..K-1), limited as configured.

    The ``eval.train_limit`` / ``eval.test_limit`` subsets are drawn with a fixed seed, not the
    run's, so runs with different seeds are scored on the same images and compare."""
    train, test = (
        select_classes(
            labelled(load_dataset(dataset, s, root=root, download=download, image_size=image_size)),
            cfg.classes,
            "eval.classes",
        )
        for s in ("train", "test")
    )
    return seeded_subset(train, cfg.train_limit, EVAL_SUBSET_SEED), seeded_subset(
        test, cfg.test_limit, EVAL_SUBSET_SEED + 1
    )


def check_same_classes(dataset: str, train: ImageArray, test: ImageArray) -> None:
    """Refuse to score ``test`` unless label i names the same class as in ``train`` (the kNN
    bank, the probes' targets): misaligned splits score 0% for every backbone, silently."""
    if list(train.classes) == list(test.classes):
        return
    pairs = zip(train.classes, test.classes, strict=False)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    if first is None:
        diff = f"the train split has {len(train.classes)}, the test split {len(test.classes)}"
    else:
        a, b = train.classes[first], test.classes[first]
        diff = f"label {first} is {a!r} in the train split, {b!r} in the test split"
    raise DataError(
        f"{dataset}: the classes of the train split (the kNN bank and the probes' targets) and "
        f"of the test split differ ({diff}), so a label would name one class in fitting and "
        "another in scoring; make both splits hold the same classes (for an image folder, the "
        "same class folder names)"
    )


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
    run_cfg: RunSettings | None = None,
    work_dir: Path | None = None,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
    load_run: LoadRun | None = None,
) -> list[dict]:
    """Run ``protocols`` on each dataset and seed for one backbone: fit on the training split,
    then score the test split once per fitted predictor. ``splits`` caches loaded data.
    ``norm``: the (mean, std) the backbone was trained with, used on every dataset (a run's
    own, as its training saw its inputs); None (raw pixels, a backbone of unknown origin):
    measured on each dataset's training split. Records say which (``normalisation``)."""
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
        check_same_classes(name, train, test)
        test_id = test.content_id()
        channels = input_channels(backbone)
        mean, std, normalisation = _normalisation(norm, train, channels, name)
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
                run_cfg=run_cfg or DefaultRun(),
                load_run=load_run,
                work_dir=work / f"{name.replace(':', '-').replace('/', '_')}-{init}",
            )
            for protocol in protocols:
                where = {"init": init, "normalisation": normalisation, "test_id": test_id}
                records += _protocol_records(backbone, ctx, protocol, test, where)
    return records


def _normalisation(
    norm: tuple[Sequence[float], Sequence[float]] | None,
    train: ImageArray,
    channels: int,
    name: str,
) -> tuple[list[float], list[float], str]:
    """(mean, std, which): the backbone's own statistics when given for its channel count,
    else measured on ``train`` (after channel matching)."""
    if norm is not None and len(norm[0]) == channels:
        return list(norm[0]), list(norm[1]), "the backbone's own"
    mean, std = channel_stats(match_channels(train.images, channels))
    return mean, std, f"measured on {name} train"


def _protocol_records(
    backbone: nn.Module,
    ctx: EvalContext,
    protocol: str,
    test: ImageArray,
    where: dict[str, Any],
) -> list[dict]:
    """Fit ``protocol`` on the context's training split, then score ``test`` once per fitted
    predictor: one record each. ``where``: the record's ``init``, ``normalisation`` and
    ``test_id``."""
    init = where["init"]
    what = f"eval {protocol} ({init}) on {ctx.dataset}"
    _say(f"{what}: fitting on {len(ctx.train):,} training images ...")
    t0 = time.perf_counter()
    predictors = PROTOCOLS.get(protocol)(backbone, ctx)  # fit: train split only
    fit_seconds = (time.perf_counter() - t0) / max(1, len(predictors))
    # a ViT run's records (its baselines' too: one row) say which ViT feature its probes read
    vit = is_vit(ctx.run_cfg.backbone.name) or hasattr(backbone, "forward_last_blocks")
    settings = eval_settings(protocol, ctx.cfg, vit=vit, center_crop=eval_center_crop(ctx.size))
    records = []
    for fitted in predictors:
        t0 = time.perf_counter()
        scores = fitted.scores(test)  # the test split, once, to report
        score_seconds = time.perf_counter() - t0
        metrics = classification_metrics(scores, test.labels, ctx.num_classes)
        records.append(
            {
                "protocol": protocol,
                "dataset": ctx.dataset,
                "init": init,
                "settings": settings,
                "settings_id": settings_id(settings),
                **fitted.info,
                **metrics,
                "n_train": len(ctx.train),
                "n_test": len(test),
                "test_id": where["test_id"],
                "seed": ctx.seed,
                "normalisation": where["normalisation"],
                "fit_seconds": round(fit_seconds, 3),
                "score_seconds": round(score_seconds, 3),
            }
        )
        took = fit_seconds + score_seconds
        _say(
            f"{what}: top-1 {100 * metrics['top1']:.1f}% on {len(test):,} test images"
            f" ({_measured(fitted.info)}{took:.0f} s)"
        )
    return records


def _say(text: str) -> None:
    """A line on stderr between the phases of an evaluation (the table goes to stdout)."""
    print(f"selfsup: {text}", file=sys.stderr, flush=True)


def _measured(info: dict) -> str:
    """What a fitted predictor chose, for its phase line: "k=20, " or "l2=0.001, "."""
    shown = [f"{k}={info[k]:g}" for k in ("k", "l2", "lr") if isinstance(info.get(k), (int, float))]
    return "".join(f"{s}, " for s in shown)
