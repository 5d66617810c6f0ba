"""Pretrain-then-evaluate, and evaluate a finished run: what ``selfsup pretrain`` / ``eval`` do."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from selfsup.analysis.plots import save_run_plots
from selfsup.atomic import write_atomic, write_json_atomic
from selfsup.backbones import BACKBONES, build_backbone
from selfsup.backbones.config import is_vit
from selfsup.backbones.pixels import Pixels
from selfsup.checkpoint import load_checkpoint
from selfsup.config import (
    Config,
    config_to_dict,
    label_fraction,
    method_label,
    save_config,
)
from selfsup.data.array import ImageArray, channel_stats, seeded_subset
from selfsup.data.classes import select_classes
from selfsup.data.sampling import class_balanced_indices
from selfsup.data.sources import load_dataset
from selfsup.data.views import eval_center_crop
from selfsup.distributed import barrier, rank, shutdown
from selfsup.errors import DataError
from selfsup.evaluate.baseline_cache import baseline_key, cached_records
from selfsup.evaluate.harness import check_protocols, evaluate_backbone, load_eval_splits
from selfsup.evaluate.metrics import classification_metrics
from selfsup.evaluate.table import settings_id
from selfsup.features import run_logits
from selfsup.layout import RunDir
from selfsup.methods import METHODS, Method
from selfsup.precision import resolve_device
from selfsup.run.callbacks import embedding_saver, epoch_hook
from selfsup.run.start import check_run_dir, remove_run_files, removed_if_failed
from selfsup.rundir import (
    environment,
    eval_backbone,
    load_run,
    load_teacher_run,
    make_method,
    merge_records,
    read_results,
)
from selfsup.train.compute import compute_record
from selfsup.train.heldout import carve_validation_split
from selfsup.train.loop import fit
from selfsup.train.state import check_compatible

PIXEL_PROTOCOLS = ("knn", "linear")  # the protocols a parameter-free baseline can take
# protocols on frozen features of the training split: a run trained on a label fraction gets
# them on the images whose labels it saw (its bank), the others on the whole split
FROZEN_PROTOCOLS = ("knn", "linear", "linear-aug")


def check_names(cfg: Config) -> None:
    """Fail at once, before any data is read, on an unknown method / backbone / protocol."""
    METHODS.get(cfg.method.name)
    BACKBONES.get(cfg.backbone.name)
    check_protocols(cfg.eval.protocols)


def load_pretrain_data(cfg: Config) -> ImageArray:
    d = cfg.data
    data = load_dataset(
        d.dataset,
        d.split,
        root=d.root,
        download=d.download,
        image_size=d.image_size,
        on_bad_image=d.on_bad_image,
    )
    return seeded_subset(select_classes(data, d.classes, "data.classes"), d.limit, cfg.seed)


def resolve(cfg: Config, data: ImageArray) -> Config:
    """Fill what the data decides: normalisation statistics and the view size; and, for a run
    made small with ``data.limit``, the evaluation's training images (``eval.train_limit``, left
    unset) to the same number: a 3,000-image run once spent 22 silent minutes evaluating on all
    60,000 (its probe, random init and pixels). A larger ``eval.train_limit`` uses more."""
    if cfg.data.limit is not None and cfg.eval.train_limit is None:
        cfg.eval.train_limit = cfg.data.limit
        if rank() == 0:
            tqdm.write(
                f"selfsup: evaluation uses at most {cfg.data.limit} training images, as "
                "data.limit (set eval.train_limit to use more)",
                file=sys.stderr,
            )
    if cfg.data.mean is None or cfg.data.std is None:
        cfg.data.mean, cfg.data.std = channel_stats(data.images)
    if cfg.views.size is None:
        cfg.views.size = data.image_size[0]
    return cfg


def training_labels(cfg: Config, data: ImageArray) -> tuple[ImageArray, torch.Tensor | None]:
    """The images and per-image labels (-1 = unlabeled) the method trains on: none for SSL; a
    class-balanced labelled fraction for the supervised baseline (trained on it alone) and for
    joint training (the rest stays in, unlabeled). Sets the class count in ``cfg``."""
    fraction = label_fraction(cfg)
    if fraction is None:
        return data, None
    if not data.has_labels:
        raise DataError(
            f"{cfg.data.dataset} split {cfg.data.split!r} has no labels; supervised and joint "
            "training need a labelled split (e.g. data.split=train)"
        )
    num_classes = max(len(data.classes), int(data.labels.max()) + 1)
    idx = class_balanced_indices(data.labels, fraction, cfg.seed)
    if cfg.method.name == "supervised":
        cfg.method.num_classes = num_classes
        return data.subset(idx), data.labels[idx]
    cfg.joint.num_classes = num_classes
    labels = torch.full_like(data.labels, -1)
    labels[idx] = data.labels[idx]
    return data, labels


def train_run(method: Method, images: torch.Tensor, cfg: Config, run_dir: Path, **kw) -> Method:
    """:func:`~selfsup.train.loop.fit` for a run: its train settings, seed, view compilation,
    its whole config as the checkpoints' identity, and what it trains as the progress label
    (``pretrain vicreg``, ``pretrain vicreg+joint``, ``train supervised``)."""
    name = method_label(cfg)
    label = "train supervised" if cfg.method.name == "supervised" else f"pretrain {name}"
    identity = config_to_dict(cfg)
    return fit(
        method,
        images,
        cfg.train,
        run_dir,
        seed=cfg.seed,
        identity=identity,
        compile_views=cfg.views.compile,
        on_device=cfg.data.on_device,
        label=label,
        **kw,
    )


def embed_final(run_dir: str | Path) -> int:
    """Save the embeddings ``selfsup viz tsne`` draws for a finished run that saved none while
    training: the evaluated backbone (DINO: the teacher) of its last checkpoint on the same
    ``viz.embed_limit`` training images an ``viz.embed_epochs`` run would use. Returns the
    checkpoint's epoch."""
    run_dir = Path(run_dir)
    cfg, method = load_run(run_dir)
    epoch = int(load_checkpoint(RunDir(run_dir).checkpoint)["epoch"])
    cfg.viz.embed_epochs = [epoch]  # (the loaded config is this call's own)
    device = resolve_device(cfg.train.device)
    save = embedding_saver(cfg, load_pretrain_data(cfg), device, run_dir)
    save(eval_backbone(method, cfg.eval.backbone)[1].to(device).eval(), epoch)
    return epoch


def pretrain(
    cfg: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False
) -> dict[str, Any] | None:
    """Pretrain ``cfg`` into ``run_dir`` (or continue it), evaluate, return ``results.json``.
    ``overwrite`` replaces an earlier run there, once the new run's names are valid and its
    data has loaded. A new run that fails before its first checkpoint leaves no file
    (:func:`selfsup.run.start.removed_if_failed`).

    Under torchrun every process trains its shard of each global batch (DDP); rank 0 alone
    writes the run's files and checkpoints, and once training ends it leaves the process
    group and evaluates alone; the other ranks return None."""
    run_dir = Path(run_dir)
    check_names(cfg)
    replace = check_run_dir(run_dir, resume, overwrite)
    if resume:  # before config.yaml is rewritten: a refused resume leaves the run as it was
        saved = RunDir(run_dir).config
        saved_dict = yaml.safe_load(saved.read_text())
        check_compatible({"config": saved_dict}, config_to_dict(cfg), saved)
        done = finished_results(run_dir, saved_dict, config_to_dict(cfg))
        if done is not None:
            return done
    main = rank() == 0
    with removed_if_failed(run_dir, enabled=main and not resume):
        cfg, method, data, labels = _train(cfg, run_dir, resume=resume, replace=replace)
    shutdown()  # evaluation is rank 0's alone, in a single process
    if not main:
        return None
    return evaluate_run(
        run_dir, cfg=cfg, method=method, compute=run_compute(cfg, method, data, labels, run_dir)
    )


def finished_results(run_dir: Path, saved: dict, asked: dict) -> dict[str, Any] | None:
    """``results.json`` of a run that is complete as asked: trained to its last epoch,
    evaluated, and resumed with nothing changed. Resuming it again would only redo the
    evaluation and rewrite its files, so the run is left as it is (None: there is work)."""
    results = read_results(run_dir)
    ckpt_path = RunDir(run_dir).checkpoint
    if results is None or saved != asked or not ckpt_path.is_file():
        return None
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["epoch"] < asked["train"]["epochs"] or ckpt.get("epoch_step", 0):
        return None
    if rank() == 0:
        print(
            f"selfsup: {run_dir} is already complete ({ckpt['epoch']} epochs, evaluated); "
            "nothing to resume, its files are unchanged. To train longer, resume with a larger "
            f"train.epochs; to evaluate again: selfsup eval {run_dir}",
            flush=True,
        )
    return results


def _train(
    cfg: Config, run_dir: Path, *, resume: bool, replace: bool
) -> tuple[Config, Method, ImageArray, torch.Tensor | None]:
    """Load the data, write the run's first files (replacing the run files there when
    ``replace``), and train: the resolved config, the trained method, its images and labels."""
    data = load_pretrain_data(cfg)
    data, val = carve_validation_split(data, cfg.eval.val_images, cfg.seed)  # eval.val_images
    cfg = resolve(cfg, data)
    data, labels = training_labels(cfg, data)
    barrier()  # every rank has checked the run directory before rank 0 writes into it
    if rank() == 0:
        if replace:
            remove_run_files(run_dir)
        _write_start(cfg, run_dir, data, labels, resume=resume)
    barrier()
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":  # fixed input shapes: let cuDNN pick its fastest kernels, as
        torch.backends.cudnn.benchmark = True  # official VICReg, Barlow Twins and DINO do
    method = make_method(cfg, data.channels)
    monitor, every = epoch_hook(cfg, data, device, labels, run_dir, method=method, val=val)
    seconds = [60 * m for m in cfg.eval.monitor_minutes]
    hooks = {"monitor": monitor, "monitor_every": every, "monitor_seconds": seconds}
    train_run(method, data.images, cfg, run_dir, resume=resume, labels=labels, **hooks)
    return cfg, method, data, labels


def _write_start(
    cfg: Config, run_dir: Path, data: ImageArray, labels: torch.Tensor | None, *, resume: bool
) -> None:
    """The files a run writes once its data has loaded: config.yaml, the fingerprints of the
    images whose labels it sees (supervised / joint; pseudo-label teachers: no pool), env.json.
    A resume keeps env.json's first command and environment and appends its own to
    ``resumes`` (the provenance of every process that trained the run)."""
    rd = RunDir(run_dir)
    rd.checkpoints.mkdir(parents=True, exist_ok=True)
    save_config(cfg, rd.config)
    if labels is not None:
        seen = data.subset((labels >= 0).nonzero().squeeze(1)).fingerprints()
        write_atomic(rd.labelled_images, lambda f: np.save(f, seen))
    env_path = rd.env
    env = environment()
    if resume and env_path.is_file():
        first = json.loads(env_path.read_text())
        env = {**first, "resumes": [*first.get("resumes", []), env]}
    write_json_atomic(env_path, env)


def run_compute(
    cfg: Config, method: Method, data: ImageArray, labels: torch.Tensor | None, run_dir: Path
) -> dict[str, Any]:
    """``results.json["compute"]``: parameters, counted FLOPs, wall time and throughput of the
    pretraining (see :mod:`selfsup.train.compute`); steps and seconds from the last checkpoint,
    so a resumed run counts every session."""
    ckpt = load_checkpoint(RunDir(run_dir).checkpoint)
    return compute_record(
        method,
        data.images[:2],
        None if labels is None else labels[:2],
        size=cfg.views.size,
        steps=int(ckpt.get("step", 0)),
        batch_size=cfg.train.batch_size,
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
    )


def head_records(
    method: Method, cfg: Config, device: torch.device, steps: int | None = None
) -> list[dict]:
    """The test metrics of the run's own classifier (supervised baseline, joint training), on
    the test split of the pretraining dataset, with the pretraining normalisation, on the
    classes it was trained on (``data.classes``); ``steps`` is the optimizer steps it trained
    for (the budget, shown in tables)."""
    _, test = load_eval_splits(
        cfg.data.dataset,
        dataclasses.replace(cfg.eval, classes=cfg.data.classes),
        root=cfg.data.root,
        download=cfg.data.download,
        image_size=cfg.data.image_size,
    )
    scores = run_logits(method, cfg, test.images, batch_size=cfg.eval.batch_size, device=device)
    num_classes = method.head.out_features
    t = cfg.train
    settings = {
        "test_limit": cfg.eval.test_limit,
        **{k: getattr(t, k) for k in ("epochs", "batch_size", "optimizer", "lr", "weight_decay")},
        "crop_scale": cfg.views.crop_scale,
    }
    if eval_center_crop(cfg.views.size) != 1.0:  # scored on the centre-cropped evaluation view
        settings["eval_center_crop"] = eval_center_crop(cfg.views.size)
    return [
        {
            "protocol": "supervised" if cfg.method.name == "supervised" else "joint",
            "settings": settings,
            "settings_id": settings_id(settings),
            "dataset": cfg.data.dataset,
            "init": "trained",
            "fraction": label_fraction(cfg),
            "epochs": cfg.train.epochs,
            "steps": steps,
            **classification_metrics(scores, test.labels, num_classes),
            "n_test": len(test),
            "test_id": test.content_id(),
            "seed": cfg.seed,
        }
    ]


Splits = dict[str, tuple[ImageArray, ImageArray]]


def _label_fraction_bank(cfg: Config, run_dir: Path, splits: Splits) -> Splits:
    """A run trained on a labelled fraction (supervised, joint): its kNN bank / probe get the
    images whose labels it saw (the returned splits); finetune and pseudo-label keep the whole
    split (into ``splits``), whose fractions and images are every run's (issue #24.4:
    "finetune 10%" of a 10%-label run trained on 1%). Empty for any other run."""
    path = RunDir(run_dir).labelled_images
    if label_fraction(cfg) is None or not path.is_file():
        return {}
    seen = np.load(path, allow_pickle=False)
    d = cfg.data
    train, test = load_eval_splits(
        d.dataset, cfg.eval, root=d.root, download=d.download, image_size=d.image_size
    )
    splits[d.dataset] = (train, test)
    keep = torch.from_numpy(np.isin(train.fingerprints(), seen)).nonzero().squeeze(1)
    return {d.dataset: (train.subset(keep), test)}


def _evaluate(
    net: nn.Module,
    init: str,
    norm: Any,
    protos: Sequence[str],
    cfg: Config,
    common: dict[str, Any],
    bank: Splits,
) -> list[dict]:
    """``protos`` on ``net``: the frozen-feature ones on the ``bank`` splits when there are
    any (:func:`_label_fraction_bank`), the others on the whole splits."""
    frozen = [p for p in protos if p in FROZEN_PROTOCOLS] if bank else []
    rest = [p for p in protos if p not in frozen]
    out = []
    if frozen:
        splits = {**common["splits"], **bank}
        kw = {**common, "protocols": frozen, "splits": splits}
        out += evaluate_backbone(net, cfg.eval, init=init, norm=norm, **kw)
    if rest:
        kw = {**common, "protocols": rest}
        out += evaluate_backbone(net, cfg.eval, init=init, norm=norm, **kw)
    return out


def eval_inputs(
    cfg: Config, datasets: Sequence[str], protocols: Sequence[str], device: torch.device
) -> dict[str, Any]:
    """The keyword arguments of ``evaluate_backbone`` that a run's config decides (its view
    size, data, seed, device; a pseudo-label teacher run read through the run layer), with
    an empty split cache: ``evaluate_run``'s and ``selfsup.api``'s."""
    d = cfg.data
    return dict(
        datasets=list(datasets),
        protocols=list(protocols),
        size=cfg.views.size,
        root=d.root,
        download=d.download,
        image_size=d.image_size,
        seed=cfg.seed,
        device=device,
        splits={},
        run_cfg=cfg,
        load_run=load_teacher_run,
    )


def random_twin(cfg: Config) -> nn.Module:
    """The backbone of ``cfg`` randomly initialised, seeded by the run's seed: the baseline
    every evaluation of the run is compared with."""
    torch.manual_seed(cfg.seed)
    return build_backbone(cfg.backbone, in_channels=len(cfg.data.mean), image_size=cfg.views.size)


def _random_init_records(
    cfg: Config, protocols: Sequence[str], common: dict[str, Any], bank: Splits
) -> list[dict[str, Any]]:
    """``eval.compare_random``: the same evaluations of a random-init twin of the backbone,
    with the run's input statistics (as the trained backbone, issue #24.2)."""
    if not cfg.eval.compare_random:
        return []
    own = (cfg.data.mean, cfg.data.std)
    return _evaluate(random_twin(cfg), "random", own, protocols, cfg, common, bank)


def _pixel_records(
    cfg: Config, protocols: Sequence[str], common: dict[str, Any], bank: Splits
) -> list[dict[str, Any]]:
    """``eval.compare_pixels``: kNN and linear on the raw pixels, cached by the splits'
    contents and the settings (:mod:`selfsup.evaluate.baseline_cache`)."""
    pixel_protocols = [p for p in protocols if p in PIXEL_PROTOCOLS]
    if not (cfg.eval.compare_pixels and pixel_protocols):
        return []
    pixels = Pixels(len(cfg.data.mean), cfg.views.size)
    d = cfg.data
    for name in common["datasets"]:  # (loaded by the pretrained backbone's evaluation)
        if name not in common["splits"]:
            common["splits"][name] = load_eval_splits(
                name, cfg.eval, root=d.root, download=d.download, image_size=d.image_size
            )
    inputs = dict(seed=cfg.seed, size=cfg.views.size, channels=len(d.mean))
    inputs.update(image_size=d.image_size, precision=cfg.train.precision)
    inputs.update(vit=is_vit(cfg.backbone.name))  # a ViT run's records carry its probe feature
    key = baseline_key(cfg.eval, {**common["splits"], **bank}, pixel_protocols, **inputs)
    return cached_records(
        key, lambda: _evaluate(pixels, "pixels", None, pixel_protocols, cfg, common, bank)
    )


def _merged_results(
    cfg: Config,
    run_dir: Path,
    splits: Splits,
    records: list[dict[str, Any]],
    compute: dict[str, Any] | None,
) -> dict[str, Any]:
    """``results.json``'s content: the new records merged into the saved ones (a record of the
    same measurement and seed replaced), the class names, the compute record kept."""
    old = read_results(run_dir) or {}
    classes = {name: train.classes for name, (train, _) in splits.items()}
    results = {
        "method": method_label(cfg),
        "backbone": cfg.backbone.name,
        "pretrain_dataset": cfg.data.dataset,
        "classes": {**old.get("classes", {}), **classes},
        "evals": merge_records(old.get("evals", []), records),
    }
    if compute or old.get("compute"):
        results["compute"] = compute or old["compute"]
    return results


def evaluate_run(
    run_dir: str | Path,
    *,
    protocols: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    cfg: Config | None = None,
    method: Method | None = None,
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a run's backbone (and, if configured, a random-init twin); merge the records
    into ``results.json`` and return it. ``compute`` (pretraining's cost) replaces the one
    already there; re-evaluating a run keeps it."""
    run_dir = Path(run_dir)
    if cfg is None or method is None:
        cfg, method = load_run(run_dir, overrides)
    protocols = list(protocols or cfg.eval.protocols)
    check_protocols(protocols)
    datasets = list(datasets or [cfg.data.dataset, *cfg.eval.datasets])
    device = resolve_device(cfg.train.device)
    common = {**eval_inputs(cfg, datasets, protocols, device), "work_dir": RunDir(run_dir).evals}
    which, backbone = eval_backbone(method, cfg.eval.backbone)
    bank = _label_fraction_bank(cfg, run_dir, common["splits"])
    own = (cfg.data.mean, cfg.data.std)  # what the backbone was trained with (issue #24.2)
    records = _evaluate(backbone, "pretrained", own, protocols, cfg, common, bank)
    for rec in records:
        rec["backbone"] = which
    if isinstance(getattr(method, "head", None), nn.Linear):
        steps = load_checkpoint(RunDir(run_dir).checkpoint).get("step")
        records += head_records(method, cfg, device, steps)
    records += _random_init_records(cfg, protocols, common, bank)
    records += _pixel_records(cfg, protocols, common, bank)
    results = _merged_results(cfg, run_dir, common["splits"], records, compute)
    save_run_plots(run_dir, results)  # a confusion-matrix PNG per record, in RUN_DIR/plots/
    # the run's last file, so that a run with results.json is complete: one killed or failed
    # before it (the plots, a record) is resumed by a study's rerun, not counted finished
    write_json_atomic(RunDir(run_dir).results, results)
    return results
