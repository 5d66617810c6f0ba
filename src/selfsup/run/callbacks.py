"""The training callbacks of a run, behind one protocol, in one place.

A :data:`Callback` runs on the backbone after an epoch (``epoch``: the epochs done) and returns
the numbers to log beside it (a saver returns ``{}``). :func:`epoch_hook` builds the run's
callbacks from its config and joins them into the one monitor the trainer calls:

- :func:`knn_monitor`: online kNN-20 and collapse statistics, every ``eval.monitor_every``
  epochs and at the ``eval.monitor_minutes`` training-time marks (mid-epoch);
- :func:`embedding_saver`: features of a fixed sample at ``viz.embed_epochs`` (t-SNE);
- :func:`correlation_saver`: the projector's correlation matrix at ``viz.corr_epochs``;
- :func:`heldout_curves`: with ``eval.val_images``, the per-epoch held-out curves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from selfsup.analysis.collapse import collapse_stats, collapse_warning
from selfsup.analysis.correlation import corr_kind, corr_matrix, embedder
from selfsup.atomic import write_atomic, write_json_atomic
from selfsup.config import Config
from selfsup.data.array import ImageArray, labelled, seeded_subset
from selfsup.data.sampling import class_balanced_indices
from selfsup.data.views import make_views
from selfsup.distributed import is_distributed, rank
from selfsup.errors import ConfigError
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.metrics import classification_metrics
from selfsup.features import extract_features, run_feature_kw, run_logits
from selfsup.layout import RunDir
from selfsup.methods import Method
from selfsup.methods.supervised import Classifier
from selfsup.precision import amp_dtype, autocast_for
from selfsup.tensorboard import add_embedding
from selfsup.train import heldout
from selfsup.train.guards import ADVICE, TrainingDiverged

Callback = Callable[[nn.Module, float], dict[str, Any]]
"""(backbone, epochs done) -> the numbers to log (a saver: ``{}``)."""


def knn_monitor(
    cfg: Config, data: ImageArray, device: torch.device, labels: torch.Tensor | None = None
) -> Callback:
    """The online monitor: collapse statistics of the backbone features
    (:mod:`selfsup.analysis.collapse`, with a warning when they fall) of ``eval.monitor_limit``
    training images and, when they are labelled, kNN (k=20): a held-out fifth of them
    classified from the other four fifths. The test split is never read. ``labels`` (-1 =
    hidden) are the labels the run trains with: a joint run's monitor sees only its labelled
    fraction, not every label of the split."""
    if labels is not None:
        data = ImageArray(data.images, labels.cpu(), list(data.classes), data.name, data.split)
    labelled_pool = data.has_labels
    pool = labelled(data) if labelled_pool else data
    pool = seeded_subset(pool, cfg.eval.monitor_limit, cfg.seed + 2)
    n_query = max(1, len(pool) // 5)
    bank, query = pool.subset(slice(n_query, None)), pool.subset(slice(0, n_query))
    num_classes = max(len(pool.classes), int(pool.labels.max()) + 1)
    kw = run_feature_kw(cfg, device)

    def monitor(backbone: nn.Module, epoch: float) -> dict[str, Any]:
        fb = extract_features(backbone, bank.images, **kw)
        if not bool(torch.isfinite(fb).all()):
            raise TrainingDiverged(
                f"epoch {epoch}: the backbone's features are NaN / inf (the loss may still "
                f"have been finite, e.g. ~1e19): training diverged, and this epoch's end was not "
                f"checkpointed. {ADVICE}"
            )
        stats = collapse_stats(fb)
        warning = collapse_warning(stats, fb.shape[1])
        if warning:
            tqdm.write(f"selfsup: epoch {epoch}: {warning}")
        out: dict[str, Any] = {f"monitor_{k}": v for k, v in stats.items()}
        out["monitor_collapse_warning"] = warning is not None
        if labelled_pool:
            fq = extract_features(backbone, query.images, **kw)
            scores = knn_predict(fb, bank.labels, fq, k=20, num_classes=num_classes)
            metrics = classification_metrics(scores, query.labels, num_classes)
            out["monitor_knn_top1"] = metrics["top1"]
        return out

    return monitor


def embedding_saver(cfg: Config, data: ImageArray, device: torch.device, run_dir: Path) -> Callback:
    """After each epoch of ``viz.embed_epochs``: the backbone features of a fixed,
    class-balanced sample of ``viz.embed_limit`` labelled training images (the same images
    every time; the test split is never read) into ``RUN_DIR/embeddings/epoch-NNNN.npy``, with
    their labels and the class names once (``selfsup viz tsne`` draws them)."""
    pool = labelled(data) if data.has_labels else data
    share = min(1.0, cfg.viz.embed_limit / len(pool))
    if data.has_labels:
        sample = pool.subset(class_balanced_indices(pool.labels, share, cfg.seed + 3))
    else:
        sample = seeded_subset(pool, cfg.viz.embed_limit, cfg.seed + 3)
    rd = RunDir(run_dir)
    if rank() == 0:
        rd.embeddings.mkdir(parents=True, exist_ok=True)
        write_atomic(rd.embedding_labels, lambda f: np.save(f, sample.labels.numpy()))
        write_json_atomic(rd.embedding_classes, list(sample.classes))
    kw = run_feature_kw(cfg, device)

    def save(backbone: nn.Module, epoch: float) -> dict[str, Any]:
        if epoch in cfg.viz.embed_epochs:
            feats = extract_features(backbone, sample.images, **kw).numpy()
            write_atomic(rd.embedding(epoch), lambda f: np.save(f, feats))
            if cfg.train.tensorboard:  # TensorBoard's projector shows them too
                names = [
                    sample.classes[i] if 0 <= i < len(sample.classes) else "unlabeled"
                    for i in sample.labels.tolist()
                ]
                add_embedding(run_dir, feats, names, epoch)
        return {}

    return save


def correlation_saver(
    cfg: Config, data: ImageArray, method: nn.Module, device: torch.device | str, run_dir: Path
) -> Callback:
    """After each epoch of ``viz.corr_epochs``: the matrix of
    :func:`~selfsup.analysis.correlation.corr_kind` of a fixed sample of ``viz.corr_limit``
    training images' first two views (one view drawn twice for a one-view method) into
    ``RUN_DIR/correlation/epoch-NNNN.json``."""
    device = torch.device(device)
    sample = seeded_subset(data, cfg.viz.corr_limit, cfg.seed + 4).images
    specs = (list(method.view_specs) * 2)[:2]
    kind, (source, net) = corr_kind(method), embedder(method)
    autocast = autocast_for(device, amp_dtype(cfg.train.precision, device))

    @torch.no_grad()
    def save(_backbone: nn.Module, epoch: float) -> dict[str, Any]:
        if epoch not in cfg.viz.corr_epochs:
            return {}
        gen = torch.Generator(device=device).manual_seed(cfg.seed + 4)
        was_training = net.training
        net.eval()
        views = make_views(sample.to(device), specs, gen)
        with autocast:
            z_a, z_b = (net(v).float() for v in views)
        net.train(was_training)
        out = corr_matrix(z_a, z_b, kind)
        record = {
            "epoch": epoch,
            "kind": kind,
            "source": source,
            "dim": z_a.shape[1],
            "images": len(sample),
            **out,
            "matrix": out["matrix"].cpu().tolist(),
        }
        write_json_atomic(RunDir(run_dir).correlation / f"epoch-{epoch:04d}.json", record)
        return {}

    return save


def heldout_curves(
    cfg: Config,
    method: Method,
    train: ImageArray,
    labels: torch.Tensor | None,
    val: ImageArray,
    device: torch.device,
) -> Callback:
    """The run's per-epoch held-out evaluation (:mod:`selfsup.train.heldout`): the
    classification curves when ``method`` has a linear head, ``val_ssl_loss`` when it has an
    SSL loss. ``train`` / ``labels`` are what it trains on (-1 = hidden label)."""
    parts: list[Callable[[], dict[str, float]]] = []
    if isinstance(getattr(method, "head", None), nn.Linear):
        if labels is not None:
            train = ImageArray(train.images, labels.cpu(), list(train.classes), train.name)
        train_s, val_s = heldout.curve_samples(train, val, len(val), cfg.seed)

        def logits(data: ImageArray) -> torch.Tensor:
            batch = cfg.eval.batch_size
            return run_logits(method, cfg, data.images, batch_size=batch, device=device)

        def classifier() -> dict[str, float]:
            curves = heldout.classification_curves(logits, train_s, val_s)
            warning = heldout.loss_warning(curves["val_loss"], len(train.classes))
            if warning:
                tqdm.write(f"selfsup: {warning}")
            return curves

        parts.append(classifier)
    if not isinstance(method, Classifier):
        parts += _heldout_ssl(cfg, method, val, device)

    def curves(_backbone: nn.Module, _epoch: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in parts:
            out.update(part())
        return out

    return curves


def _heldout_ssl(
    cfg: Config, method: Method, val: ImageArray, device: torch.device
) -> list[Callable[[], dict[str, float]]]:
    """``val_ssl_loss`` (none under torchrun: its gathers would wait for the other ranks)."""
    if len(val) < 2:
        raise ConfigError(
            "eval.val_images=1: the held-out SSL loss needs a batch of at least 2 images "
            "(batch statistics); hold out more, e.g. eval.val_images=512"
        )
    if is_distributed():  # the loss's gathers and SyncBatchNorm would wait for the others
        tqdm.write("selfsup: val_ssl_loss is not computed under torchrun (rank 0 alone)")
        return []
    kw: dict[str, Any] = {
        "batch_size": cfg.train.batch_size,
        "seed": cfg.seed + heldout.VIEW_SEED,
        "device": device,
        "precision": cfg.train.precision,
        "channels_last": cfg.train.channels_last,
    }
    return [lambda: {"val_ssl_loss": heldout.heldout_ssl_loss(method, val.images, **kw)}]


def epoch_hook(
    cfg: Config,
    data: ImageArray,
    device: torch.device,
    labels: torch.Tensor | None,
    run_dir: Path,
    *,
    method: Method | None = None,
    val: ImageArray | None = None,
) -> tuple[Any, int]:
    """(hook, every): the run's callbacks joined into what the trainer runs on the backbone
    after every ``every``-th epoch: the kNN monitor every ``eval.monitor_every`` epochs (and,
    called with ``mid_epoch=True``, alone at the ``eval.monitor_minutes`` marks), the embedding
    saver at ``viz.embed_epochs``, ``method``'s correlation saver at ``viz.corr_epochs`` and,
    with held-out images ``val``, ``method``'s per-epoch held-out curves; (None, 0) when none
    is on."""
    wanted = cfg.eval.monitor_every or cfg.eval.monitor_minutes
    knn = knn_monitor(cfg, data, device, labels) if wanted else None
    every_epoch: list[Callback] = []
    if cfg.viz.embed_epochs:
        every_epoch.append(embedding_saver(cfg, data, device, run_dir))
    if cfg.viz.corr_epochs and method is not None:
        every_epoch.append(correlation_saver(cfg, data, method, device, run_dir))
    if val is not None and method is not None:
        every_epoch.append(heldout_curves(cfg, method, data, labels, val, device))
    if knn is None and not every_epoch:
        return None, 0

    def hook(backbone: nn.Module, epoch: float, *, mid_epoch: bool = False) -> dict[str, Any]:
        if mid_epoch:  # eval.monitor_minutes: the kNN monitor alone
            return knn(backbone, epoch) if knn is not None else {}
        scores: dict[str, Any] = {}
        every = cfg.eval.monitor_every
        if knn is not None and every and epoch % every == 0:
            scores = knn(backbone, epoch)
        for callback in every_epoch:
            scores.update(callback(backbone, epoch))
        return scores

    return hook, 1 if every_epoch else cfg.eval.monitor_every  # 0: mid-epoch marks only
