"""Evaluation protocols on frozen features: one feature extraction feeds every protocol.

The training split fits (kNN bank, linear probe), any choice uses a validation split carved
from it, and the test split is touched once, to report. Each protocol returns records for
``results.json``: ``{"protocol", "dataset", "init", "top1", "f1_macro", "n_train", "n_test", ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.config import EvalConfig
from selfsup.data.array import ImageArray
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError, DataError
from selfsup.evaluate.features import extract_features, input_channels, match_channels
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import select_and_fit_linear
from selfsup.evaluate.metrics import classification_metrics
from selfsup.registry import Registry

PROTOCOLS: Registry[Callable[..., list[dict]]] = Registry("eval protocol")


@dataclass
class FeatureSplits:
    """Frozen features of one dataset's training and test splits."""

    dataset: str
    train: torch.Tensor  # (N, D)
    train_labels: torch.Tensor  # (N,)
    test: torch.Tensor  # (M, D)
    test_labels: torch.Tensor  # (M,)
    num_classes: int


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
    seed: int,
) -> tuple[ImageArray, ImageArray]:
    """The (train, test) splits used to evaluate on ``dataset``, limited as configured."""
    train = labelled(
        load_dataset(dataset, "train", root=root, download=download, image_size=image_size)
    )
    test = labelled(
        load_dataset(dataset, "test", root=root, download=download, image_size=image_size)
    )
    return seeded_subset(train, cfg.train_limit, seed), seeded_subset(
        test, cfg.test_limit, seed + 1
    )


def features_for(
    backbone: nn.Module,
    train: ImageArray,
    test: ImageArray,
    *,
    size: int,
    batch_size: int,
    device: torch.device,
) -> FeatureSplits:
    """Extract features of both splits, normalised with the training split's own statistics
    (after matching the backbone's channel count)."""
    channels = input_channels(backbone)
    mean, std = channel_stats(match_channels(train.images, channels))
    kw = dict(size=size, mean=mean, std=std, batch_size=batch_size, device=device)
    return FeatureSplits(
        dataset=train.name,
        train=extract_features(backbone, train.images, **kw),
        train_labels=train.labels,
        test=extract_features(backbone, test.images, **kw),
        test_labels=test.labels,
        num_classes=max(len(train.classes), int(train.labels.max()) + 1),
    )


@PROTOCOLS.register("knn")
def knn_protocol(f: FeatureSplits, cfg: EvalConfig, seed: int) -> list[dict]:
    records = []
    for k in cfg.knn_k:
        scores = knn_predict(
            f.train,
            f.train_labels,
            f.test,
            k=k,
            temperature=cfg.knn_temperature,
            num_classes=f.num_classes,
        )
        m = classification_metrics(scores.argmax(1), f.test_labels, f.num_classes)
        records.append({"protocol": "knn", "k": k, "temperature": cfg.knn_temperature, **m})
    return records


@PROTOCOLS.register("linear")
def linear_protocol(f: FeatureSplits, cfg: EvalConfig, seed: int) -> list[dict]:
    probe, choice = select_and_fit_linear(
        f.train,
        f.train_labels,
        f.num_classes,
        weight_decays=cfg.linear_weight_decays,
        val_fraction=cfg.val_fraction,
        seed=seed,
        epochs=cfg.linear_epochs,
        batch_size=cfg.linear_batch_size,
        lr=cfg.linear_lr,
    )
    pred = probe.predict(f.test).argmax(1)
    m = classification_metrics(pred, f.test_labels, f.num_classes)
    val = choice["val_top1"] if choice["val_top1"] >= 0 else None
    return [
        {
            "protocol": "linear",
            "epochs": cfg.linear_epochs,
            "weight_decay": choice["weight_decay"],
            "val_top1": val,
            **m,
        }
    ]


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
) -> list[dict]:
    """Run ``protocols`` on each dataset for one backbone; ``splits`` caches loaded data."""
    check_protocols(protocols)
    splits = {} if splits is None else splits
    records = []
    for name in datasets:
        if name not in splits:
            splits[name] = load_eval_splits(
                name, cfg, root=root, download=download, image_size=image_size, seed=seed
            )
        train, test = splits[name]
        feats = features_for(
            backbone, train, test, size=size, batch_size=cfg.batch_size, device=device
        )
        for protocol in protocols:
            for rec in PROTOCOLS.get(protocol)(feats, cfg, seed):
                records.append(
                    {
                        "protocol": rec.pop("protocol"),
                        "dataset": name,
                        "init": init,
                        **rec,
                        "n_train": len(train),
                        "n_test": len(test),
                        "seed": seed,
                    }
                )
    return records
